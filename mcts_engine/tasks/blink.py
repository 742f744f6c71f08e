"""BLINK: 14 perception sub-tasks (depth, correspondence, counting, jigsaw, …) as multiple choice.

Items have one to four images; the loader composes several side by side into one picture (layout in
``metadata["composite"]``, named in the question) so every grounded point lives in one frame. The
answer is an option's text (a letter, "(B)", is also accepted); BLINK's own "(A)" answers are turned
into option text at load. Reported as BLINK does: accuracy per ``sub_task`` and the mean over sub-tasks.

Layout (``load_blink``): ``BLINK-Benchmark/BLINK`` parquet or ``save_to_disk``: ``idx``, ``question``, ``sub_task``,
``image_1``..``image_4``, ``choices``, ``answer`` ("(A)"), ``prompt``, ``explanation``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..config import InputConfig
from ..evaluation.scoring import EvalSpec
from ..samples import Sample, SampleError, compose_sample, to_xyxy
from ..samples.jsonl import json_safe
from ..samples.parquet import image_cell, iter_table
from ..samples.probe import InputProbe
from . import register
from .base import STEP_RULES
from .sat2 import SAT2, answer_to_option


@register
class Blink(SAT2):
    name = "blink"
    teacher_prompt = (
        "You are a careful visual reasoner answering a perception question about one or more images "
        "(several images are shown side by side in one picture). "
        + STEP_RULES
        + " The final answer must be the exact text of one of the options."
    )
    student_prompt = (
        "You answer perception questions about images (several images are shown side by side in one picture). "
        "First think step by step inside <think> </think>, grounding every step in the picture with integer pixel "
        "coordinates (x, y). Then give the exact text of the chosen option inside <answer> </answer>."
    )
    eval_spec = EvalSpec(groups=("sub_task",), headline="macro:sub_task",
                         notes="BLINK: the headline is the mean of the per-sub-task accuracies.")


# --------------------------------------------------------------------------------------------
# Loader: BLINK (``BLINK-Benchmark/BLINK`` parquet or ``save_to_disk``)
# --------------------------------------------------------------------------------------------


def _extra_boxes(row: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """Optional ``boxes`` column (an extension used by the bundled samples): ``[{"label", "bbox", "image"}]``
    with original-pixel xyxy boxes in image ``image`` (0-based)."""
    out = []
    for i, b in enumerate(row.get("boxes") or []):
        if not isinstance(b, dict):
            raise ValueError(f"{where}: field 'boxes[{i}]' must be an object")
        try:
            bb = to_xyxy(b.get("bbox"))
        except ValueError as exc:
            raise ValueError(f"{where}: field 'boxes[{i}]': {exc}") from None
        out.append({"label": str(b.get("label", f"box{i}")), "bbox": bb, "image": int(b.get("image") or 0)})
    return out


def load_blink(path: Path, image_root: str | None = None, inputs: InputConfig | None = None) -> Iterator[Sample | SampleError]:
    """BLINK rows → samples (answer letter → option text; several images composed side by side)."""
    image_cols = ("image_1", "image_2", "image_3", "image_4")
    for label, rows, root in iter_table(path, image_cols):
        for i, row in enumerate(rows):
            if isinstance(row, tuple):  # a row the parquet reader could not read
                yield SampleError(f"{Path(label).stem}-{row[0]}", row[1])
                continue
            where = f"{label} row {i}"
            sid = str(row.get("idx") if row.get("idx") not in (None, "") else f"{Path(label).stem}-{i}")
            try:
                images = []
                for col in image_cols:
                    cell = row.get(col)
                    if cell is None or (isinstance(cell, dict) and not cell.get("bytes") and not cell.get("path")):
                        continue
                    try:
                        images.append(image_cell(cell))
                    except ValueError as exc:
                        raise ValueError(f"{where}: field '{col}': {exc}") from None
                if not images:
                    raise ValueError(f"{where}: field 'image_1' is missing")
                choices = row.get("choices")
                if not isinstance(choices, list) or len(choices) < 2:
                    raise ValueError(f"{where}: field 'choices' needs at least two options")
                choices = [str(c) for c in choices]
                raw_answer = row.get("answer")
                if str(raw_answer).strip().lower() in {"", "hidden", "none"}:
                    raise ValueError(f"{where}: field 'answer' is hidden (BLINK's test split has no answers; use val)")
                answer = answer_to_option(raw_answer, choices, where)
                question = str(row.get("question") or "").strip()
                if not question:
                    raise ValueError(f"{where}: field 'question' is missing")
                meta = {k: row[k] for k in ("sub_task", "prompt", "explanation") if row.get(k) is not None and json_safe(row[k])}
                meta["benchmark"] = "blink"
                meta["source_answer"] = str(raw_answer)
                sample = Sample(
                    id=sid, images=images, question=question, answer=answer, choices=choices,
                    boxes=_extra_boxes(row, where), task="blink", metadata=meta, image_root=image_root or root,
                    where=where,
                )
                yield compose_sample(sample, inputs)
            except ValueError as exc:
                yield SampleError(sid, str(exc))


LAYOUT_PRIORITY = 30  # a table, asked before SAT's columns


def detect(probe: InputProbe) -> bool:
    """BLINK's columns: ``sub_task`` and ``image_1``."""
    names = probe.columns or set()
    return "sub_task" in names and "image_1" in names


def load(probe: InputProbe, image_root: str | None = None, task: str = "", inputs: InputConfig | None = None
         ) -> Iterator[Sample | SampleError]:
    return load_blink(probe.path, image_root, inputs=inputs)
