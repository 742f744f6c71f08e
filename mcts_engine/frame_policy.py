"""How large a frame a model is shown: the evaluation cap on the longer side, and the downscale warning.

Two facts of a benchmark protocol live here (``docs/protocols.md``):

- ``eval.max_long_side`` — some evaluations shrink every image so its longer side is at most N pixels before the
  model's processor applies its own resize (ViGoRL's spatial evaluation uses N = 1260).
  :func:`~mcts_engine.grounding.capped_frame` computes the frame that results: the source scaled by
  ``s = N / max(w, h)`` (sides truncated to integers, as a ``resize((int(w*s), int(h*s)))`` does), then Qwen's rule (multiples of 28, ``<= max_pixels``). The frame keeps
  the ORIGINAL size as ``orig_*``, so boxes and points map between the source and the frame exactly as they do
  without a cap; ``samples.load_frame`` (and a ``FrameCache(max_long_side=N)``) resizes the source to it in one step.
- ``teacher.warn_downscale`` — a teacher frame capped at ``teacher.max_pixels`` can hold a small fraction of a
  large source's pixels (a 3840x2160 ScreenSpot-Pro screenshot at ~1 MP keeps an eighth). :class:`DownscaleWatch`
  (a :class:`~mcts_engine.samples.FrameCache`) warns ONCE per run, on stderr, when a source is shrunk by more
  than that factor along its longer side.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO

from PIL import Image

from .frame import Frame, capped_frame
from .grounding import capped_size  # noqa: F401 - the cap's frame math, re-exported
from .samples import EncodedImage, FrameCache


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


__all__ = ["capped_size", "capped_frame", "downscale_factor", "DownscaleWatch", "watch_downscale"]
