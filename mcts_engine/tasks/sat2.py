"""SAT-2: spatial reasoning multiple choice (ego/object movement, relative position, perspective).

Answer format: the option's text (a letter is also accepted by the verifier). Verifier: strict
multiple choice (case/punctuation insensitive, never a substring match).

Two-image questions (SAT's ego/object-movement items show two frames): the loader composes them side
by side into ONE image (``samples.composite.compose_sample``, layout in ``metadata["composite"]``), so a grounded
step's point lives in one frame; the question then says which panel is which (``composite_note``).

Layout (``load_sat``): SAT's parquet (``array/SAT``) or ``save_to_disk`` dataset: ``image_bytes`` (list) or
``images``, ``question``, ``answers`` (list, or its string form "[a, b]"), ``correct_answer``, ``question_type``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..config import InputConfig
from ..evaluation.scoring import EvalSpec
from ..frame import Frame
from ..samples import Sample, SampleError, split_options
from ..samples.composite import composed
from ..samples.parquet import iter_table, table_rows
from ..samples.probe import InputProbe
from ..verifiers import Verdict, match_choice, option_letter, resolve_choice
from . import register
from .base import STEP_RULES, Task


@register
class SAT2(Task):
    name = "sat2"
    teacher_prompt = (
        "You are a careful visual reasoner answering a spatial question about an image. "
        + STEP_RULES
        + " The final answer must be the exact text of one of the options."
    )
    student_prompt = (
        "You answer spatial questions about images. First think step by step inside <think> </think>, "
        "grounding every step in the image with integer pixel coordinates (x, y). Then give the exact text "
        "of the chosen option inside <answer> </answer>."
    )

    # Scoring for ``mcts-engine eval``: circular evaluation over rotated option orders, as SAT's card
    # recommends; accuracy also reported per question type.
    eval_spec = EvalSpec(groups=("question_type",), circular=True,
                         notes="SAT: circular evaluation — an item counts only if answered right under every rotation of its options.")

    def user_text(self, sample: Sample) -> str:
        question = composite_note(sample) + sample.question
        if not sample.choices or split_options(sample.question):
            return question  # ViGoRL-style questions already list their options
        opts = "\n".join(f"({option_letter(i)}) {c}" for i, c in enumerate(sample.choices))
        return f"{question}\nOptions:\n{opts}"

    def check_sample(self, sample: Sample) -> None:
        if sample.choices and resolve_choice(sample.answer, sample.choices) is None:
            raise ValueError(f"field 'answer' {sample.answer!r} is not one of the options {sample.choices}")

    def reference(self, sample: Sample) -> str:
        if sample.choices:
            idx = resolve_choice(sample.answer, sample.choices)
            if idx is not None:
                return sample.choices[idx]
        return sample.answer

    def ground_truth(self, sample: Sample, frame: Frame | None) -> dict[str, Any]:
        return {"answer": self.reference(sample), "choices": list(sample.choices)}

    def verify(self, answer: str | None, truth: dict[str, Any]) -> Verdict:
        return match_choice(answer, truth["answer"], truth.get("choices") or ())


def composite_note(sample: Sample) -> str:
    """The sentence that tells the model how a composed multi-image item is laid out ("" for one image)."""
    comp = sample.metadata.get("composite") if isinstance(sample.metadata, dict) else None
    if not isinstance(comp, dict) or int(comp.get("n", 0)) < 2:
        return ""
    n = int(comp["n"])
    names = ", ".join(f"Image {i + 1}" for i in range(n))
    return f"The picture shows {n} images side by side, separated by gray bars, left to right: {names}. "


# --------------------------------------------------------------------------------------------
# Loader: SAT (``array/SAT`` parquet or ``save_to_disk``)
# --------------------------------------------------------------------------------------------


_LETTER_ANSWER = re.compile(r"^\(?\s*([A-Za-z])\s*\)?$")


def answer_to_option(answer: Any, choices: list[str], where: str) -> str:
    """A letter ("(B)", "B") or option text → the option's text. ``ValueError`` if it names none."""
    text = str(answer if answer is not None else "").strip()
    if not text:
        raise ValueError(f"{where}: field 'answer' is missing")
    m = _LETTER_ANSWER.match(text)
    if m and choices:
        idx = ord(m.group(1).upper()) - ord("A")
        if 0 <= idx < len(choices):
            return choices[idx]
    idx2 = resolve_choice(text, choices) if choices else None
    if idx2 is None:
        raise ValueError(f"{where}: field 'answer' {text!r} names none of the {len(choices)} choices")
    return choices[idx2]


def _parse_answers(value: Any) -> list[str]:
    """SAT's ``answers``: a list, or its string form ``"['left', 'right']"`` / ``"[left, right]"``."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if isinstance(value, str):
        s = value.strip()
        try:
            parsed = json.loads(s)
            if isinstance(parsed, list):
                return [str(v) for v in parsed]
        except json.JSONDecodeError:
            pass
        body = s[1:-1] if s.startswith("[") and s.endswith("]") else s
        return [p.strip().strip("'\"").strip() for p in body.split(",") if p.strip().strip("'\"").strip()]
    return []


def load_sat(
    path: Path, image_root: str | None = None, task: str = "", inputs: InputConfig | None = None
) -> Iterator[Sample | SampleError]:
    """SAT rows (``image_bytes`` or ``images``; ``answers`` list or string) through the generic SAT row
    reader, then two-frame items composed side by side (recorded in ``metadata["composite"]``)."""
    for label, rows, root in iter_table(path, ("images", "image")):
        def mapped(rows: Iterator[dict[str, Any]] = rows) -> Iterator[dict[str, Any]]:
            for row in rows:
                if isinstance(row, tuple):  # unreadable: table_rows reports it
                    yield row
                    continue
                row = dict(row)
                if "images" not in row and "image_bytes" in row:
                    cells = row.pop("image_bytes")
                    row["images"] = list(cells) if isinstance(cells, (list, tuple)) else [cells]
                if "answers" in row:
                    row["answers"] = _parse_answers(row["answers"])
                yield row

        yield from composed(table_rows(label, mapped(), image_root or root, task), inputs)


LAYOUT_PRIORITY = 31  # a table: after BLINK's columns (30)


def detect(probe: InputProbe) -> bool:
    """SAT's columns: ``correct_answer`` with ``image_bytes`` or ``images``."""
    names = probe.columns or set()
    return "correct_answer" in names and ("image_bytes" in names or "images" in names)


def load(probe: InputProbe, image_root: str | None = None, task: str = "", inputs: InputConfig | None = None
         ) -> Iterator[Sample | SampleError]:
    return load_sat(probe.path, image_root, task, inputs)
