"""V*Bench: visual search QA on large, cluttered images (attribute recognition, spatial relations).

Multiple choice; the answer is an option's text (a letter is also accepted). The target objects'
boxes (V* gives ``[x, y, w, h]``) are converted to original-pixel xyxy at load and kept as annotations
(the sim teacher's regions, reports). V*'s annotation lists the correct option first, so the loader
presents options in a fixed per-item shuffled order. Reported per ``category`` and overall (micro).

Layout (``load_vstar``): ``<category>/<name>.jpg`` + ``<name>.json`` (``target_object``, ``bbox`` as
``[[x, y, w, h], ...]``, ``question``, ``options`` with the correct one first), and/or ``test_questions.jsonl``
(``image``, ``text`` with "(A) …" options, ``category``, ``question_id``, ``label``).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..config import InputConfig
from ..evaluation.scoring import EvalSpec
from ..samples import Sample, SampleError, iter_json_rows, question_stem, split_options, to_xyxy
from ..samples.bounds import DEFAULT_INPUTS, confine
from ..samples.jsonl import safe_json
from ..samples.probe import InputProbe
from . import register
from .base import STEP_RULES
from .sat2 import SAT2, answer_to_option


@register
class VStar(SAT2):
    name = "vstar"
    teacher_prompt = (
        "You are a careful visual searcher answering a question about small details in a large image. "
        + STEP_RULES
        + " Search the image region by region until you find the objects the question is about. "
        "The final answer must be the exact text of one of the options."
    )
    student_prompt = (
        "You answer questions about small details in large images. First search step by step inside "
        "<think> </think>, grounding every step in the image with integer pixel coordinates (x, y). Then give "
        "the exact text of the chosen option inside <answer> </answer>."
    )
    eval_spec = EvalSpec(groups=("category",), notes="V*Bench: overall is the mean over all questions.")


# --------------------------------------------------------------------------------------------
# Loader: V*Bench (``craigwu/vstar_bench``)
# --------------------------------------------------------------------------------------------


_VSTAR_INSTRUCTION = re.compile(r"\n?\s*Answer with the option'?s letter.*$", re.S | re.I)


VSTAR_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".webp")


def _shuffled_options(options: list[str], key: str) -> tuple[list[str], list[int]]:
    """V*'s annotation lists the correct option first: present them in a fixed per-item shuffled order."""
    order = list(range(len(options)))
    random.Random(hashlib.sha256(key.encode()).hexdigest()).shuffle(order)
    return [options[i] for i in order], order


def _vstar_boxes(ann: dict[str, Any], where: str) -> list[dict[str, Any]]:
    boxes = ann.get("bbox") or []
    names = ann.get("target_object") or []
    if boxes and not isinstance(boxes[0], (list, tuple)):
        boxes = [boxes]
    out = []
    for i, bb in enumerate(boxes):
        try:
            xyxy = to_xyxy(bb, fmt="xywh")
        except ValueError as exc:
            raise ValueError(f"{where}: field 'bbox[{i}]': {exc}") from None
        label = str(names[i]) if i < len(names) else f"target{i}"
        out.append({"label": label, "bbox": xyxy, "source_bbox": list(bb)})
    return out


def load_vstar(root: Path, image_root: str | None = None, inputs: InputConfig | None = None) -> Iterator[Sample | SampleError]:
    """V*Bench directory: ``test_questions.jsonl`` if present (boxes from the per-image JSON), else every
    ``<category>/<image>`` with its ``<image>.json`` annotation (files this loader lists itself: their
    image root is the dataset directory unless ``image_root`` holds them)."""
    if (root / "test_questions.jsonl").exists():
        yield from load_vstar_questions(root / "test_questions.jsonl", image_root or str(root), inputs)
        return
    base = Path(image_root) if image_root else root
    for category in ("direct_attributes", "relative_position"):
        folder = root / category
        if not folder.is_dir():
            continue
        for img in sorted(f for f in folder.iterdir() if f.suffix.lower() in VSTAR_IMAGE_EXT):
            sid = f"{category}/{img.stem}"
            ann_path = img.with_suffix(".json")
            where = f"{category}/{ann_path.name}"
            try:
                if not ann_path.exists():
                    raise ValueError(f"{where}: annotation file is missing")
                ann = safe_json(ann_path)
                if not isinstance(ann, dict):
                    raise ValueError(f"{where}: not a JSON object")
                options = [str(o) for o in ann.get("options") or []]
                if len(options) < 2:
                    raise ValueError(f"{where}: field 'options' needs at least two options")
                question = str(ann.get("question") or "").strip()
                if not question:
                    raise ValueError(f"{where}: field 'question' is missing")
                choices, order = _shuffled_options(options, sid)
                own = base if img.is_relative_to(base) else root
                yield Sample(
                    id=sid, images=[str(img.relative_to(own))], where=where,
                    question=question, answer=options[0], choices=choices, boxes=_vstar_boxes(ann, where),
                    task="vstar", image_root=str(own),
                    metadata={"benchmark": "vstar", "category": category, "option_order": order,
                              "target_object": [str(t) for t in ann.get("target_object") or []]},
                )
            except ValueError as exc:
                yield SampleError(sid, str(exc))


def load_vstar_questions(
    path: Path, image_root: str | None = None, inputs: InputConfig | None = None
) -> Iterator[Sample | SampleError]:
    """``test_questions.jsonl``: options parsed from ``text``, ``label`` letter → option text, boxes from the
    image's sibling ``.json`` annotation when it exists."""
    inputs = inputs or DEFAULT_INPUTS
    root = image_root if image_root is not None else str(path.parent)
    for lineno, where, row in iter_json_rows(path, inputs.max_row_bytes):
        if isinstance(row, SampleError):
            yield row
            continue
        sid = str(row.get("question_id", f"{path.stem}-{lineno}"))
        try:
            text = str(row.get("text") or "")
            choices = split_options(text)
            if len(choices) < 2:
                raise ValueError(f"{where}: field 'text' has no '(A) …' options")
            question = question_stem(_VSTAR_INSTRUCTION.sub("", text))
            answer = answer_to_option(row.get("label"), choices, where)
            image = row.get("image")
            if not image:
                raise ValueError(f"{where}: field 'image' is missing")
            boxes: list[dict[str, Any]] = []
            try:
                ann_path = confine(str(Path(image).with_suffix(".json")), root, inputs.allow_outside_root)
            except ValueError as exc:
                raise ValueError(f"{where}: field 'image': {exc}") from None
            if ann_path.exists():
                ann = safe_json(ann_path)
                if isinstance(ann, dict):
                    boxes = _vstar_boxes(ann, f"{where} ({ann_path.name})")
            meta = {"benchmark": "vstar", "category": str(row.get("category") or Path(image).parent.name)}
            yield Sample(id=sid, images=[str(image)], question=question, answer=answer, choices=choices,
                         boxes=boxes, task="vstar", metadata=meta, image_root=root, where=where)
        except ValueError as exc:
            yield SampleError(sid, str(exc))


def _is_vstar_row(row: dict[str, Any]) -> bool:
    return "text" in row and "label" in row and "image" in row


LAYOUT_PRIORITY = 20  # after ScreenSpot's file names, before tables and grounding JSON


def is_vstar_dir(path: Path) -> bool:
    """A V*Bench directory: its category folders or its ``test_questions.jsonl``."""
    return (path / "direct_attributes").is_dir() or (path / "relative_position").is_dir() or (path / "test_questions.jsonl").exists()


def detect(probe: InputProbe) -> bool:
    """A V*Bench directory, or a ``.jsonl`` file of ``test_questions`` rows (``text``, ``label``, ``image``)."""
    if probe.is_dir:
        return is_vstar_dir(probe.path)
    return probe.suffix == ".jsonl" and probe.first_row is not None and _is_vstar_row(probe.first_row)


def load(probe: InputProbe, image_root: str | None = None, task: str = "", inputs: InputConfig | None = None
         ) -> Iterator[Sample | SampleError]:
    if probe.is_dir:
        return load_vstar(probe.path, image_root, inputs=inputs)
    return load_vstar_questions(probe.path, image_root, inputs=inputs)
