"""The multi-turn observer: the zoom environment bound to one sample (point → crop the teacher sees next).

Search (``generate``), ``eval --multiturn`` and the demo build one observer per sample; each crop is cut by
``zoom.environment.zoom``, encoded once (reused by every descendant's prompt) and, with an image directory, saved
content-addressed beside the run's frames (``store.save_image``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import MultiTurnConfig
from ..grounding import Point
from ..protocol import observation_template
from ..samples import encode_image
from ..store import save_image
from ..teachers.base import PromptContext, StepObservation
from .environment import observation_text, zoom


def make_observer(ctx: PromptContext, cfg: MultiTurnConfig, image_dir: Path | None, fmt: str, quality: int = 90):
    """The multi-turn environment for one sample: point → (observation for the teacher, node record).
    Each crop is encoded once and reused by every descendant's prompt; with ``fmt="auto"`` in the
    frame's own encoding (a JPEG frame gives JPEG crops)."""
    source_format = "JPEG" if ctx.images and ctx.images[0].mime == "image/jpeg" else None

    def observe(point: Point) -> tuple[StepObservation, dict[str, Any]]:
        crop, box = zoom(ctx.frame_images[0], point, cfg)
        enc, _ = encode_image(crop, max_pixels=crop.width * crop.height, min_pixels=0, fmt=fmt, quality=quality,
                              source_format=source_format)
        text = observation_text(point, observation_template(cfg))
        record = {"point": list(point), "box": list(box), "text": text, "image": save_image(enc, image_dir)}
        return StepObservation(text=text, images=(enc,)), record

    return observe


__all__ = ["make_observer"]
