"""The sample type: one question about one or more images, and the two ways reading one can fail.

A :class:`Sample` is plain data (no I/O): paths or bytes for its images, the question, the answer, the options and
the annotated boxes in ORIGINAL image pixels. A row that cannot become a sample is a :class:`SampleError` (the run
records its reason and goes on); input that cannot be read at all raises :class:`SampleLoadError`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

ImageSource = str | bytes


@dataclass
class Sample:
    """One item to search on. ``images`` are paths (absolute or relative to ``image_root``) or bytes.

    ``boxes``: annotations ``{"label": str, "bbox": [x1, y1, x2, y2]}`` in ORIGINAL image pixels
    (the first image's frame). ``choices`` empty means a free-form answer.
    """

    id: str
    images: list[ImageSource]
    question: str
    answer: str
    choices: list[str] = field(default_factory=list)
    boxes: list[dict[str, Any]] = field(default_factory=list)
    task: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    image_root: str | None = None
    where: str = ""  # the row it came from ("file:line", "file row N"): failure reasons name it

    def to_record(self) -> dict[str, Any]:
        """A JSON-safe description (image bytes replaced by their hash) for run records."""
        return {
            "id": self.id,
            "images": [img if isinstance(img, str) else f"bytes:{hashlib.sha1(img).hexdigest()}" for img in self.images],
            "question": self.question,
            "answer": self.answer,
            "choices": list(self.choices),
            "boxes": self.boxes,
            "task": self.task,
            "metadata": self.metadata,
        }


@dataclass(frozen=True)
class SampleError:
    """A row that could not become a sample (or a sample whose image cannot be read)."""

    id: str
    reason: str

    def __str__(self) -> str:
        return f"{self.id}: {self.reason}"


class SampleLoadError(Exception):
    """Raised for input that cannot be read at all (missing file, unknown format)."""
