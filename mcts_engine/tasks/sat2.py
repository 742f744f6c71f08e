"""SAT-2: spatial reasoning multiple choice (ego/object movement, relative position, perspective).

Answer format: the option's text (a letter is also accepted by the verifier). Verifier: strict
multiple choice (case/punctuation insensitive, never a substring match).

Two-image questions (SAT's ego/object-movement items show two frames): the loader composes them side
by side into ONE image (``loaders.compose_sample``, layout in ``metadata["composite"]``), so a grounded
step's point lives in one frame; the question then says which panel is which (``composite_note``).
"""

from __future__ import annotations

from typing import Any

from ..eval import EvalSpec
from ..frame import Frame
from ..samples import Sample, split_options
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
