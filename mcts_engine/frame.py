"""Frames: the resized image a model sees, and the scale back to the original.

A :class:`Frame` is the pixel frame a model saw (the source resized by Qwen2-VL's rule, :func:`smart_resize`);
points and boxes map between the frame and the ORIGINAL image through it. :func:`capped_frame` adds an
evaluation's longer-side cap (``eval.max_long_side``) before that rule, keeping ``orig_*`` the source's size.

Everything here is pure: integers in, frames out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Point = tuple[int, int]


@dataclass(frozen=True)
class Frame:
    """The pixel frame a model saw. ``width``/``height`` are the resized size; ``orig_*`` the source."""

    width: int
    height: int
    orig_width: int
    orig_height: int

    @property
    def scale_x(self) -> float:
        """Multiply a frame x by this to get an original-image x."""
        return self.orig_width / self.width

    @property
    def scale_y(self) -> float:
        return self.orig_height / self.height

    def contains(self, point: Point) -> bool:
        x, y = point
        return 0 <= x < self.width and 0 <= y < self.height

    def to_original(self, point: Point) -> Point:
        return (round(point[0] * self.scale_x), round(point[1] * self.scale_y))

    def from_original(self, point: tuple[float, float]) -> Point:
        return (round(point[0] / self.scale_x), round(point[1] / self.scale_y))

    def box_from_original(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        x1, y1, x2, y2 = box
        return (x1 / self.scale_x, y1 / self.scale_y, x2 / self.scale_x, y2 / self.scale_y)

    def to_dict(self) -> dict[str, int]:
        return {"width": self.width, "height": self.height, "orig_width": self.orig_width, "orig_height": self.orig_height}

    @classmethod
    def from_dict(cls, d: dict[str, int]) -> Frame:
        return cls(int(d["width"]), int(d["height"]), int(d["orig_width"]), int(d["orig_height"]))


def smart_resize(
    height: int,
    width: int,
    factor: int = 28,
    min_pixels: int = 56 * 56,
    max_pixels: int = 1280 * 28 * 28,
) -> tuple[int, int]:
    """Qwen2-VL's resize rule: both sides multiples of ``factor``, pixel count within bounds,
    aspect ratio kept as closely as rounding allows. Returns ``(height, width)``."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio over 200 is not supported: {width}x{height}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def frame_for(width: int, height: int, max_pixels: int, min_pixels: int = 56 * 56, factor: int = 28) -> Frame:
    """The frame the model sees a ``width`` x ``height`` image in (:func:`smart_resize`).

    The image is sent at this size and the model's processor applies the same rule to it again, which
    refuses an aspect ratio over 200: rounding a short side (e.g. 41 px) down to one ``factor`` can push a
    frame past that from inputs with a ratio above ~105, so such an image is refused here, in one line."""
    h, w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    if max(h, w) / min(h, w) > 200:
        raise ValueError(
            f"image {width}x{height} would become a {w}x{h} frame, an aspect ratio over 200 that the model's processor refuses"
        )
    return Frame(width=w, height=h, orig_width=width, orig_height=height)


def capped_size(width: int, height: int, max_long_side: int) -> tuple[int, int]:
    """``(width, height)`` scaled so the longer side is at most ``max_long_side`` (0 = no cap); sides truncated,
    as ``resize((int(w*s), int(h*s)))`` does (an evaluation's longer-side cap, ``eval.max_long_side``)."""
    long_side = max(width, height)
    if max_long_side <= 0 or long_side <= max_long_side:
        return width, height
    s = max_long_side / long_side
    return max(1, int(width * s)), max(1, int(height * s))


def capped_frame(width: int, height: int, max_long_side: int, max_pixels: int, min_pixels: int) -> Frame:
    """The frame of a ``width`` x ``height`` source under a longer-side cap, then Qwen's resize rule; ``orig_*``
    stay the source's size, so points and boxes map between source and frame exactly as without a cap."""
    cw, ch = capped_size(width, height, max_long_side)
    f = frame_for(cw, ch, max_pixels=max_pixels, min_pixels=min_pixels)
    return Frame(width=f.width, height=f.height, orig_width=width, orig_height=height)


__all__ = ["Point", "Frame", "smart_resize", "frame_for", "capped_size", "capped_frame"]
