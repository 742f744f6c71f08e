"""Multi-image items → one side-by-side image (BLINK, SAT's two-frame questions).

The frames are pasted left to right, separated by a gray bar, at their original scale (so a box only shifts by its
panel's offset); a grounded step's point then lives in one frame. The layout is recorded in
``metadata["composite"]`` = ``{"layout": "side_by_side", "panels": [[x1, y1, x2, y2], ...], "sources": [...]}``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import replace

from PIL import Image

from ..config import InputConfig
from .images import open_image
from .png import encode_png
from .types import ImageSource, Sample, SampleError

GAP = 16  # gray bar between side-by-side panels, pixels


GAP_COLOR = (128, 128, 128)


def compose_side_by_side(images: list[Image.Image], gap: int = GAP) -> tuple[Image.Image, list[list[int]]]:
    """Paste frames left to right at their original scale, vertically centered, ``gap`` px of gray between.

    Returns the canvas and each panel's ``[x1, y1, x2, y2]`` in it (exclusive right/bottom edge)."""
    if not images:
        raise ValueError("no images to compose")
    height = max(im.height for im in images)
    width = sum(im.width for im in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, height), GAP_COLOR)
    panels = []
    x = 0
    for im in images:
        y = (height - im.height) // 2
        canvas.paste(im.convert("RGB"), (x, y))
        panels.append([x, y, x + im.width, y + im.height])
        x += im.width + gap
    return canvas, panels


def _source_name(src: ImageSource) -> str:
    return src if isinstance(src, str) else f"bytes:{hashlib.sha1(src).hexdigest()}"


def compose_sample(sample: Sample, inputs: InputConfig | None = None) -> Sample:
    """A sample with several images → the same sample with one side-by-side image (PNG bytes).

    Boxes may name their image with ``"image": k`` (0-based, default 0); they are shifted into the
    composite. Raises ``ValueError`` if an image cannot be read. Single-image samples pass unchanged."""
    if len(sample.images) <= 1:
        return sample
    frames = [open_image(src, sample.image_root, inputs) for src in sample.images]
    canvas, panels = compose_side_by_side(frames)
    png = encode_png(canvas)
    boxes = []
    for b in sample.boxes:
        k = int(b.get("image", 0))
        if not 0 <= k < len(panels):
            raise ValueError(f"box {b.get('label', '')!r} names image {k}, but the item has {len(panels)}")
        dx, dy = panels[k][0], panels[k][1]
        x1, y1, x2, y2 = b["bbox"]
        boxes.append({**{k2: v for k2, v in b.items() if k2 != "image"}, "bbox": [x1 + dx, y1 + dy, x2 + dx, y2 + dy], "image": k})
    meta = {
        **sample.metadata,
        "composite": {"layout": "side_by_side", "n": len(panels), "panels": panels, "gap": GAP,
                      "sources": [_source_name(s) for s in sample.images]},
    }
    return replace(sample, images=[png], boxes=boxes, metadata=meta)


def composed(items: Iterable[Sample | SampleError], inputs: InputConfig | None = None) -> Iterator[Sample | SampleError]:
    for item in items:
        if isinstance(item, Sample) and len(item.images) > 1:
            try:
                item = compose_sample(item, inputs)
            except ValueError as exc:
                yield SampleError(item.id, f"{item.id}: {exc}")
                continue
        yield item
