"""How large a frame a model is shown: the evaluation cap on the longer side, and the downscale warning.

Two facts of a benchmark protocol live here (``docs/protocols.md``):

- ``eval.max_long_side`` — some evaluations shrink every image so its longer side is at most N pixels before the
  model's processor applies its own resize (ViGoRL's spatial evaluation uses N = 1260). :func:`capped_frame`
  computes the frame that results: the source scaled by ``s = N / max(w, h)`` (sides truncated to integers, as a
  ``resize((int(w*s), int(h*s)))`` does), then Qwen's rule (multiples of 28, ``<= max_pixels``). The frame keeps
  the ORIGINAL size as ``orig_*``, so boxes and points map between the source and the frame exactly as they do
  without a cap; the image is resized from the source to the frame in one step.
- ``teacher.warn_downscale`` — a teacher frame capped at ``teacher.max_pixels`` can hold a small fraction of a
  large source's pixels (a 3840x2160 ScreenSpot-Pro screenshot at ~1 MP keeps an eighth). :class:`DownscaleWatch`
  (a :class:`~mcts_engine.samples.FrameCache`) warns ONCE per run, on stderr, when a source is shrunk by more
  than that factor along its longer side.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import replace
from typing import Any, TextIO

from PIL import Image

from .grounding import Frame, frame_for
from .samples import EncodedImage, FrameCache, ImageSource, encode_image, open_image_with_format


def capped_size(width: int, height: int, max_long_side: int) -> tuple[int, int]:
    """``(width, height)`` scaled so the longer side is at most ``max_long_side`` (0 = no cap); sides truncated."""
    long_side = max(width, height)
    if max_long_side <= 0 or long_side <= max_long_side:
        return width, height
    s = max_long_side / long_side
    return max(1, int(width * s)), max(1, int(height * s))


def capped_frame(width: int, height: int, max_long_side: int, max_pixels: int, min_pixels: int) -> Frame:
    """The frame of a ``width`` x ``height`` source under a longer-side cap, then Qwen's resize rule; ``orig_*``
    stay the source's size."""
    cw, ch = capped_size(width, height, max_long_side)
    f = frame_for(cw, ch, max_pixels=max_pixels, min_pixels=min_pixels)
    return Frame(width=f.width, height=f.height, orig_width=width, orig_height=height)


def load_capped_frame(src: ImageSource, image_root: str | None, max_long_side: int, max_pixels: int, min_pixels: int,
                      fmt: str, quality: int = 90) -> tuple[EncodedImage, Image.Image]:
    """Read ``src`` and prepare its frame under ``max_long_side`` (see :func:`capped_frame`): the encoding and the
    resized image, as ``samples.load_frame`` returns them. ``ValueError`` (one line) on a bad image."""
    img, source_format = open_image_with_format(src, image_root)
    frame = capped_frame(img.width, img.height, max_long_side, max_pixels, min_pixels)
    resized = img if (frame.width, frame.height) == img.size else img.resize((frame.width, frame.height), Image.BICUBIC)
    # already on the 28-pixel grid: encode_image keeps the size; the frame then gets the source's size back
    enc, resized = encode_image(resized, max_pixels=frame.width * frame.height, min_pixels=0, fmt=fmt, quality=quality,
                                source_format=source_format)
    return replace(enc, frame=frame), resized


class CappedFrameCache(FrameCache):
    """A :class:`FrameCache` whose frames are computed under ``max_long_side`` (0 = a plain FrameCache)."""

    def __init__(self, max_long_side: int, capacity: int = 16) -> None:
        super().__init__(capacity)
        self.max_long_side = int(max_long_side)
        self._cap_lock = threading.Lock()
        self._capped: dict[tuple, tuple[EncodedImage, Image.Image]] = {}

    def get(self, src: ImageSource, image_root: str | None, max_pixels: int, min_pixels: int, fmt: str,
            quality: int = 90) -> tuple[EncodedImage, Image.Image]:
        if self.max_long_side <= 0:
            return super().get(src, image_root, max_pixels, min_pixels, fmt, quality)
        key = (self.source_key(src, image_root), self.max_long_side, max_pixels, min_pixels, fmt, quality)
        with self._cap_lock:
            hit = self._capped.get(key)
        if hit is not None:
            self.hits += 1
            return hit
        self.misses += 1
        out = load_capped_frame(src, image_root, self.max_long_side, max_pixels, min_pixels, fmt, quality)
        with self._cap_lock:
            self._capped[key] = out
            while len(self._capped) > max(1, self.capacity):
                self._capped.pop(next(iter(self._capped)))
        return out


def downscale_factor(frame: Frame) -> float:
    """How much a frame shrank its source along the longer side (1.0 = not at all)."""
    return max(frame.orig_width, frame.orig_height) / max(1, max(frame.width, frame.height))


class DownscaleWatch(FrameCache):
    """A :class:`FrameCache` that warns once (per instance: one per run) when a frame shrinks its source by more
    than ``factor`` along the longer side (0 = never). ``stream`` defaults to stderr."""

    def __init__(self, factor: float, max_pixels: int, capacity: int = 16, stream: TextIO | None = None) -> None:
        super().__init__(capacity)
        self.factor = float(factor)
        self.max_pixels = int(max_pixels)
        self.stream = stream
        self.warned: str | None = None
        self._warn_lock = threading.Lock()

    def get(self, *args: Any, **kwargs: Any) -> tuple[EncodedImage, Image.Image]:
        out = super().get(*args, **kwargs)
        if self.factor > 0 and self.warned is None:
            self.check(out[0].frame, str(args[0]) if args and isinstance(args[0], str) else "an image")
        return out

    def check(self, frame: Frame, where: str) -> None:
        ratio = downscale_factor(frame)
        if ratio <= self.factor:
            return
        with self._warn_lock:
            if self.warned is not None:
                return
            self.warned = (
                f"warning: {where} ({frame.orig_width}x{frame.orig_height}) is shown to the teacher at "
                f"{frame.width}x{frame.height}, {ratio:.1f}x smaller than the source (teacher.warn_downscale="
                f"{self.factor:g}; teacher.max_pixels={self.max_pixels}): raise teacher.max_pixels (and the server's "
                f"cap) for more detail, at more image tokens per request. Shown once per run."
            )
            print(self.warned, file=self.stream or sys.stderr, flush=True)


def watch_downscale(teacher_cfg: Any, capacity: int = 16) -> FrameCache:
    """The frame cache of a generate run: a :class:`DownscaleWatch` when ``teacher.warn_downscale`` > 0."""
    factor = float(getattr(teacher_cfg, "warn_downscale", 0.0) or 0.0)
    if factor <= 0:
        return FrameCache(capacity)
    return DownscaleWatch(factor, int(teacher_cfg.max_pixels), capacity)


__all__ = ["capped_size", "capped_frame", "load_capped_frame", "CappedFrameCache", "downscale_factor",
           "DownscaleWatch", "watch_downscale"]
