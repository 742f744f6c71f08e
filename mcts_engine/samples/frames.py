"""Frames prepared for the teacher, shared between samples, and the downscale warning.

- :class:`FrameCache` — an image decoded, resized to the teacher's frame and encoded once per source and settings
  (:func:`~mcts_engine.samples.images.load_frame`), shared by the samples that ask about the same image. With
  ``max_long_side`` = N (``eval.max_long_side``: some evaluations shrink every image so its longer side is at most N
  before the model's processor resizes it; ViGoRL's spatial evaluation uses N = 1260) the source is resized to
  :func:`~mcts_engine.frame.capped_frame` in one step; the frame keeps the ORIGINAL size as ``orig_*``.
- ``teacher.warn_downscale`` — a teacher frame capped at ``teacher.max_pixels`` can hold a small fraction of a
  large source's pixels (a 3840x2160 ScreenSpot-Pro screenshot at ~1 MP keeps an eighth). :class:`DownscaleWatch`
  (a :class:`FrameCache`) warns ONCE per run, on stderr, when a source is shrunk by more than that factor along its
  longer side (``docs/protocols.md``).
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections import OrderedDict
from typing import Any, TextIO

from PIL import Image

from ..config import InputConfig
from ..frame import Frame
from .images import EncodedImage, load_frame, resolve_image_path
from .types import ImageSource


class FrameCache:
    """Images prepared for the teacher's frame (decoded, resized, encoded), shared by the samples that
    use the same source image.

    Grounding benchmarks ask many questions about one screenshot (ScreenSpot, OS-ATLAS, web actions):
    without this each question would decode, resize and encode it again (tens of ms for a large
    screenshot). Keyed by the source — a file's resolved path, size and modification time, or the hash
    of in-memory bytes — and the frame settings; the ``capacity`` most recently used are kept.
    Thread-safe: samples prepared at the same time that need one image compute it once (the others
    wait for that result); a failure is not kept (each sample reports its own error).
    """

    def __init__(self, capacity: int = 16, max_long_side: int = 0) -> None:
        self.capacity = capacity
        self.max_long_side = int(max_long_side)  # an evaluation's longer-side cap (load_frame); 0 = none
        self._done: OrderedDict[tuple, tuple[EncodedImage, Image.Image]] = OrderedDict()
        self._pending: dict[tuple, threading.Event] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def source_key(src: ImageSource, image_root: str | None) -> tuple:
        if isinstance(src, (bytes, bytearray)):
            return ("bytes", len(src), hashlib.sha1(src).digest())
        path = resolve_image_path(src, image_root)
        try:
            st = path.stat()
        except OSError:
            return ("path", str(path))  # missing: open_image raises the one-line error
        return ("path", str(path.resolve()), st.st_size, st.st_mtime_ns)

    def get(
        self, src: ImageSource, image_root: str | None, max_pixels: int, min_pixels: int, fmt: str, quality: int = 90,
        inputs: InputConfig | None = None,
    ) -> tuple[EncodedImage, Image.Image]:
        """:func:`load_frame` of ``src``, computed once per source and settings (``inputs``: the input rules)."""
        key = (self.source_key(src, image_root), max_pixels, min_pixels, fmt, quality)
        while True:
            with self._lock:
                hit = self._done.get(key)
                if hit is not None:
                    self._done.move_to_end(key)
                    self.hits += 1
                    return hit
                waiting = self._pending.get(key)
                if waiting is None:
                    self._pending[key] = threading.Event()
                    self.misses += 1
                    break
            waiting.wait()  # another thread prepares it; then look again (it may have failed)
        try:
            out = load_frame(src, image_root, max_pixels, min_pixels, fmt, quality, inputs, self.max_long_side)
            with self._lock:
                self._done[key] = out
                while len(self._done) > self.capacity:
                    self._done.popitem(last=False)
            return out
        finally:
            with self._lock:
                self._pending.pop(key).set()


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


__all__ = ["FrameCache", "downscale_factor", "DownscaleWatch", "watch_downscale"]
