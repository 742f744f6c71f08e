"""OS-ATLAS grounding data (the web-grounding training set; ScreenSpot is its benchmark).

Same contract as ``screenspot`` (answer = one point in the frame; verifier = point in the target box);
OS-ATLAS boxes are normalized to [0, 1] and converted to original pixels at load from each image's size.

Layout (``load_osatlas``): ``[{"img_filename", "elements": [{"instruction", "bbox"}]}]``, boxes normalized to
[0, 1] xyxy; a flat ``{"img_filename", "instruction", "bbox"}`` row works too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..config import InputConfig
from ..evaluation.scoring import EvalSpec
from ..samples import Sample, SampleError
from ..samples.images import row_image_size
from ..samples.jsonl import safe_json
from ..samples.probe import InputProbe
from . import register
from .screenspot import PointTask, grounding_kind, grounding_sample


@register
class OSAtlas(PointTask):
    name = "osatlas"
    eval_spec = EvalSpec(groups=("platform",))


# --------------------------------------------------------------------------------------------
# Loader: OS-ATLAS grounding JSON
# --------------------------------------------------------------------------------------------


def load_osatlas(files: list[Path], image_root: str | None = None,
                 preloaded: dict[Path, Any] | None = None, inputs: InputConfig | None = None) -> Iterator[Sample | SampleError]:
    """OS-ATLAS grounding JSON: one sample per element; boxes normalized to [0, 1] xyxy (a row may say
    ``"normalized": false`` for pixels). Needs each image's size (read from its header)."""
    for f in files:
        data = (preloaded or {}).pop(f, None) if f in (preloaded or {}) else safe_json(f)
        if not isinstance(data, list):
            yield SampleError(f.name, f"{f.name}: not a JSON list")
            continue
        root = image_root or (str(f.parent / "images") if (f.parent / "images").is_dir() else str(f.parent))
        for i, row in enumerate(data):
            where = f"{f.name} row {i}"
            if not isinstance(row, dict):
                yield SampleError(f"{f.stem}-{i}", f"{where}: row is not a JSON object")
                continue
            image = str(row.get("img_filename") or "")
            elements = row.get("elements")
            flat = elements is None
            elements = [row] if flat else elements
            if not isinstance(elements, list):
                yield SampleError(f"{f.stem}-{i}", f"{where}: field 'elements' must be a list")
                continue
            size: tuple[int, int] | None = None
            for j, el in enumerate(elements):
                sid = str(el.get("id") if isinstance(el, dict) and el.get("id") else (f"{f.stem}-{i:05d}" if flat else f"{f.stem}-{i:05d}-{j:02d}"))
                w = where if flat else f"{where} element {j}"
                try:
                    if not isinstance(el, dict):
                        raise ValueError(f"{w}: element is not a JSON object")
                    normalized = bool(el.get("normalized", row.get("normalized", True)))
                    if normalized and size is None:
                        size = row_image_size(image, root, inputs, w, "img_filename") if image else None
                    meta = {"benchmark": "osatlas", "file": f.name, "platform": str(row.get("platform") or f.stem)}
                    yield grounding_sample(sid, image, el.get("instruction") or "", el.get("bbox"), "xyxy", normalized,
                                            root, meta, "osatlas", w, size=size, inputs=inputs)
                except ValueError as exc:
                    yield SampleError(sid, str(exc))


LAYOUT_PRIORITY = 40  # grounding JSON by its first row (after file names, V*Bench and tables)


def detect(probe: InputProbe) -> bool:
    return grounding_kind(probe) == "osatlas"


def load(probe: InputProbe, image_root: str | None = None, task: str = "", inputs: InputConfig | None = None
         ) -> Iterator[Sample | SampleError]:
    files = probe.jsons if probe.is_dir else [probe.path]
    return load_osatlas(files, image_root, preloaded={files[0]: probe.first_json}, inputs=inputs)
