"""Box and point helpers (pure): any box convention → original-pixel xyxy, a box's center, a point's text.

The loaders call :func:`to_xyxy` once per box, so ``Sample.boxes`` always hold ORIGINAL-pixel ``[x1, y1, x2, y2]``
whatever the source wrote (absolute or normalized to [0, 1]; ``[x1, y1, x2, y2]`` or ``[x, y, w, h]``).
"""

from __future__ import annotations

from typing import Any


def to_xyxy(
    bbox: Any, fmt: str = "xyxy", normalized: bool = False, size: tuple[int, int] | None = None
) -> list[float]:
    """One box in any convention → original-pixel ``[x1, y1, x2, y2]``.

    ``fmt``: ``xyxy`` or ``xywh``; ``normalized``: coordinates are fractions of the image size (``size``
    = ``(width, height)`` is then required). Raises ``ValueError`` (one line) for a malformed or
    empty box. Corners are ordered; nothing is clipped (a box may touch the image border).
    """
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4):
        raise ValueError(f"bbox must have 4 numbers, got {bbox!r}")
    try:
        a, b, c, d = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise ValueError(f"bbox must have 4 numbers, got {bbox!r}") from None
    if fmt == "xywh":
        if c < 0 or d < 0:
            raise ValueError(f"bbox width/height must be >= 0, got {bbox!r}")
        c, d = a + c, b + d
    elif fmt != "xyxy":
        raise ValueError(f"unknown bbox format {fmt!r} (xyxy or xywh)")
    if normalized:
        if size is None:
            raise ValueError("normalized bbox needs the image size")
        w, h = size
        a, b, c, d = a * w, b * h, c * w, d * h
    x1, x2 = sorted((a, c))
    y1, y2 = sorted((b, d))
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        raise ValueError(f"bbox {bbox!r} is empty")
    return [x1, y1, x2, y2]


def box_center(box: list[float]) -> tuple[int, int]:
    return round((box[0] + box[2]) / 2), round((box[1] + box[3]) / 2)


def point_text(pt: tuple[int, int]) -> str:
    return f"({pt[0]}, {pt[1]})"
