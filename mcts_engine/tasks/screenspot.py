"""Grounding to a point (ScreenSpot v2 / Pro; the base of ``osatlas``).

The question is an instruction ("close this window"); the final answer is one point ``(x, y)`` in the
frame the model saw. Verifier: the point lies in the target box (edges inclusive) mapped into that same
frame — never a distance to the center, never in original pixels. The box comes from the loader in
original-pixel xyxy (ScreenSpot v2's ``[x, y, w, h]`` and normalized boxes are converted there); a
ViGoRL-style row whose answer is ``"(x1, y1, x2, y2)"`` is read as that box (original pixels).

Reported as the benchmarks do: ScreenSpot v2 by platform (mobile/desktop/web) × text/icon, ScreenSpot-Pro
by application group (Dev, Creative, CAD, Scientific, Office, OS) × text/icon; overall over all items.

Layouts (``load_screenspot``): ScreenSpot v1/v2 ``screenspot_{desktop,mobile,web}[_v2].json`` (``img_filename``,
``bbox`` ``[x, y, w, h]``, ``instruction``, ``data_type``, ``data_source``; images in ``screenspotv2_image/``) and
ScreenSpot-Pro ``annotations/*.json`` (``img_filename``, ``bbox`` xyxy, ``instruction``, ``id``, ``application``,
``platform``, ``img_size``, ``ui_type``, ``group``; images in ``images/``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..config import InputConfig
from ..evaluation.scoring import EvalSpec
from ..frame import Frame
from ..samples import Sample, SampleError, box_center, point_text, to_xyxy
from ..samples.images import row_image_size
from ..samples.jsonl import safe_json
from ..samples.probe import InputProbe
from ..verifiers import Verdict, parse_point_answer, point_in_box
from . import register
from .base import STEP_RULES, Task
from .vstar import is_vstar_dir

_BOX_ANSWER = re.compile(r"^\s*[\(\[]?\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*[\)\]]?\s*$")


def _fmt_point(x: float, y: float) -> str:
    return f"({round(x)}, {round(y)})"


class PointTask(Task):
    """A task whose answer is one point inside a target box (not registered itself)."""

    teacher_prompt = (
        "You are a careful GUI agent locating an element on a screenshot from its description. "
        + STEP_RULES
        + " Look at candidate elements one at a time. The final answer must be only the point: "
        "<answer> (x, y) </answer>, in pixels of the image you see."
    )
    student_prompt = (
        "You locate elements on screenshots. First think step by step inside <think> </think>, grounding every "
        "step in the screenshot with integer pixel coordinates (x, y). Then give one point inside the described "
        "element inside <answer> (x, y) </answer>."
    )
    def user_text(self, sample: Sample) -> str:
        return f"Find the element described below and give one point inside it.\nDescription: {sample.question}"

    def target_box(self, sample: Sample) -> list[float]:
        """The target box in ORIGINAL pixels: the first annotation labelled "target" (else the first one),
        or a ViGoRL-style ``"(x1, y1, x2, y2)"`` answer."""
        for b in sample.boxes:
            if b.get("label") == "target":
                return [float(v) for v in b["bbox"]]
        if sample.boxes:
            return [float(v) for v in sample.boxes[0]["bbox"]]
        m = _BOX_ANSWER.match(sample.answer or "")
        if m:
            x1, y1, x2, y2 = (float(g) for g in m.groups())
            return [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]
        raise ValueError("no target box: the sample needs 'boxes'/'bbox' or an answer '(x1, y1, x2, y2)'")

    def check_sample(self, sample: Sample) -> None:
        x1, y1, x2, y2 = self.target_box(sample)
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"field 'bbox' {[x1, y1, x2, y2]} is empty")

    def reference(self, sample: Sample) -> str:
        """The box center in ORIGINAL pixels (the frame-true answer is ``ground_truth(...)["answer"]``)."""
        x1, y1, x2, y2 = self.target_box(sample)
        return _fmt_point((x1 + x2) / 2, (y1 + y2) / 2)

    def ground_truth(self, sample: Sample, frame: Frame | None) -> dict[str, Any]:
        box = self.target_box(sample)
        fb = list(frame.box_from_original(tuple(box))) if frame is not None else box  # type: ignore[arg-type]
        truth: dict[str, Any] = {"bbox": [round(v, 2) for v in fb], "answer": _fmt_point((fb[0] + fb[2]) / 2, (fb[1] + fb[3]) / 2)}
        if frame is not None:
            truth["frame"] = frame.to_dict()
        return truth

    def verify(self, answer: str | None, truth: dict[str, Any]) -> Verdict:
        point = parse_point_answer(answer)
        if point is None:
            return Verdict(0.0, "no point in the answer")
        return point_in_box(point, tuple(truth["bbox"]))  # type: ignore[arg-type]

    def hint_boxes(self, sample: Sample, frame: Frame) -> list[dict[str, Any]]:
        x1, y1, x2, y2 = frame.box_from_original(tuple(self.target_box(sample)))  # type: ignore[arg-type]
        return [{"label": "target element", "bbox": [x1, y1, x2, y2]}]

    def sim_answer(self, truth: dict[str, Any], correct: bool, rng: random.Random) -> str:
        """A point inside the target box (inset so rounding stays inside), or, when wrong, outside it
        but inside the frame when the frame leaves room."""
        x1, y1, x2, y2 = truth["bbox"]
        if correct:
            ix1, ix2 = x1 + 0.25 * (x2 - x1), x2 - 0.25 * (x2 - x1)
            iy1, iy2 = y1 + 0.25 * (y2 - y1), y2 - 0.25 * (y2 - y1)
            return _fmt_point(rng.uniform(ix1, ix2), rng.uniform(iy1, iy2))
        fr = truth.get("frame") or {}
        w, h = float(fr.get("width", x2 * 2 + 10)), float(fr.get("height", y2 * 2 + 10))
        for _ in range(100):
            x, y = rng.uniform(0, w - 1), rng.uniform(0, h - 1)
            if not (x1 - 1 <= x <= x2 + 1 and y1 - 1 <= y <= y2 + 1):
                return _fmt_point(x, y)
        return _fmt_point(x2 + 5, y2 + 5)


@register
class ScreenSpot(PointTask):
    name = "screenspot"
    eval_spec = EvalSpec(
        groups=("platform+ui_type", "platform", "ui_type", "group+ui_type", "group"),
        notes="ScreenSpot: a hit is a point inside the target box (in the frame the model saw); overall over all items.",
    )


# --------------------------------------------------------------------------------------------
# Loader: ScreenSpot v1/v2 and Pro; the grounding-JSON helpers OS-ATLAS shares
# --------------------------------------------------------------------------------------------


_PLATFORM_OF_SOURCE = {"ios": "mobile", "android": "mobile", "windows": "desktop", "macos": "desktop", "linux": "desktop"}


def _screenspot_image_root(json_path: Path, image_root: str | None) -> str:
    if image_root:
        return image_root
    for cand in (json_path.parent / "screenspotv2_image", json_path.parent / "screenspot_imgs",
                 json_path.parent / "images", json_path.parent.parent / "images"):
        if cand.is_dir():
            return str(cand)
    return str(json_path.parent)


def grounding_sample(
    sid: str, image: str, instruction: str, bbox: Any, fmt: str, normalized: bool, root: str,
    meta: dict[str, Any], task: str, where: str, size: tuple[int, int] | None = None, inputs: InputConfig | None = None,
) -> Sample:
    if not image:
        raise ValueError(f"{where}: field 'img_filename' is missing")
    if not instruction or not str(instruction).strip():
        raise ValueError(f"{where}: field 'instruction' is missing")
    if normalized and size is None:
        size = row_image_size(image, root, inputs, where, "img_filename")
    try:
        box = to_xyxy(bbox, fmt=fmt, normalized=normalized, size=size)
    except ValueError as exc:
        raise ValueError(f"{where}: field 'bbox': {exc}") from None
    return Sample(
        id=sid, images=[image], question=str(instruction).strip(), answer=point_text(box_center(box)),
        boxes=[{"label": "target", "bbox": box}], task=task, image_root=root, where=where,
        metadata={**meta, "source_bbox": list(bbox), "source_bbox_format": f"{fmt}{'/normalized' if normalized else ''}"},
    )


def _auto_normalized(bbox: Any) -> bool:
    try:
        return all(0.0 <= float(v) <= 1.0 for v in bbox)
    except (TypeError, ValueError):
        return False


def load_screenspot(files: list[Path], image_root: str | None = None,
                    preloaded: dict[Path, Any] | None = None, inputs: InputConfig | None = None) -> Iterator[Sample | SampleError]:
    """ScreenSpot v1/v2 (``[x, y, w, h]`` pixels; platform from the file name) and ScreenSpot-Pro (xyxy pixels)."""
    for f in files:
        data = (preloaded or {}).pop(f, None) if f in (preloaded or {}) else safe_json(f)
        if not isinstance(data, list):
            yield SampleError(f.name, f"{f.name}: not a JSON list of annotations")
            continue
        root = _screenspot_image_root(f, image_root)
        m = SCREENSPOT_FILE.search(f.name)
        for i, row in enumerate(data):
            where = f"{f.name} row {i}"
            if not isinstance(row, dict):
                yield SampleError(f"{f.stem}-{i}", f"{where}: row is not a JSON object")
                continue
            pro = "ui_type" in row or "group" in row or "img_size" in row
            sid = str(row.get("id") or f"{f.stem}-{i:04d}")
            try:
                bbox = row.get("bbox")
                fmt = str(row.get("bbox_format") or ("xyxy" if pro else "xywh"))
                normalized = bool(row.get("normalized", _auto_normalized(bbox) if not pro else False))
                source = str(row.get("data_source") or "")
                if pro:
                    meta = {"benchmark": "screenspot_pro", "group": str(row.get("group") or ""),
                            "platform": str(row.get("platform") or ""), "application": str(row.get("application") or ""),
                            "ui_type": str(row.get("ui_type") or "")}
                    size = tuple(row["img_size"]) if isinstance(row.get("img_size"), list) and len(row["img_size"]) == 2 else None
                else:
                    platform = m.group(1) if m else _PLATFORM_OF_SOURCE.get(source.lower(), "web")
                    meta = {"benchmark": "screenspot_v2" if (m and "_v2" in f.name) else "screenspot",
                            "platform": platform, "ui_type": str(row.get("data_type") or ""), "data_source": source}
                    size = None
                meta["file"] = f.name
                yield grounding_sample(sid, str(row.get("img_filename") or ""), row.get("instruction") or "", bbox, fmt,
                                        normalized, root, meta, "screenspot", where, size=size, inputs=inputs)  # type: ignore[arg-type]
            except ValueError as exc:
                yield SampleError(sid, str(exc))


def json_kind(data: Any) -> str | None:
    """Which grounding layout a parsed ``.json`` holds: screenspot, screenspot_pro, osatlas or None."""
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        return None
    row = data[0]
    if "img_filename" not in row:
        return None
    if "elements" in row:
        return "osatlas"
    if "ui_type" in row or "img_size" in row or "group" in row:
        return "screenspot_pro"
    if "data_type" in row or "data_source" in row:
        return "screenspot"
    if "instruction" in row and "bbox" in row:
        return "osatlas"
    return None


SCREENSPOT_FILE = re.compile(r"screenspot_(desktop|mobile|web)(?:_v2)?\.json$")


LAYOUT_PRIORITY = 10  # file names first (``screenspot_*.json``, ``annotations/``)


def grounding_kind(probe: InputProbe) -> str | None:
    """The grounding layout (:func:`json_kind`) of a ``.json`` file, or of a directory of ``.json`` files (no
    ``.jsonl``) that is neither a V*Bench directory nor a table — its first file decides."""
    if probe.is_dir:
        if not probe.jsons or probe.jsonls or is_vstar_dir(probe.path) or probe.columns is not None:
            return None
    elif probe.suffix != ".json":
        return None
    return json_kind(probe.first_json)


def _annotations(path: Path) -> Path | None:
    ann = path / "annotations"
    return ann if ann.is_dir() and any(ann.glob("*.json")) else None


def detect(probe: InputProbe) -> bool:
    """``screenspot_{desktop,mobile,web}[_v2].json`` files, a ScreenSpot-Pro ``annotations/`` folder, or grounding
    JSON whose first row is ScreenSpot's (:func:`grounding_kind`)."""
    if probe.is_dir and (any(SCREENSPOT_FILE.search(f.name) for f in probe.jsons) or _annotations(probe.path)):
        return True
    return grounding_kind(probe) in {"screenspot", "screenspot_pro"}


def load(probe: InputProbe, image_root: str | None = None, task: str = "", inputs: InputConfig | None = None
         ) -> Iterator[Sample | SampleError]:
    p = probe.path
    if probe.is_dir:
        named = [f for f in probe.jsons if SCREENSPOT_FILE.search(f.name)]
        if named:
            return load_screenspot(named, image_root, inputs=inputs)
        ann = _annotations(p)
        if ann is not None:
            return load_screenspot(sorted(ann.glob("*.json")), image_root or str(p / "images"), inputs=inputs)
        first = probe.jsons[0]  # the first file decided; the loader reads the others lazily
        return load_screenspot(probe.jsons, image_root, preloaded={first: probe.first_json}, inputs=inputs)
    return load_screenspot([p], image_root, preloaded={p: probe.first_json}, inputs=inputs)
