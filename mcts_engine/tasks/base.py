"""The task base: what a task must say (prompts, answer format, ground truth, verifier).

A task is a small class. The search, the exporter, eval and the trainer's rewards only talk to a task
through this interface, so adding a task is one module plus one recipe.

The ground truth travels as a plain JSON dict (``Task.ground_truth``) so that a training row can be
verified later without the original sample: ``task.verify(answer, truth)`` is the single verifier.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

from ..frame import Frame
from ..samples import Sample
from ..verifiers import Verdict

# Asked of every step (search yield: a repeated or nearly identical point is rejected or merged by the
# search, so a teacher that follows this wastes fewer samples; the checks stay as the safety net).
DIVERSITY_RULE = (
    "Each step must examine a region that no earlier step examined: never repeat a coordinate and never give "
    "one close to an earlier step's coordinate; prefer a different part of the image that bears on the question."
)

# The step protocol, told to every grounded teacher. Tasks add their own answer instructions.
STEP_RULES = (
    "Reason step by step, one step per reply. Each step looks at ONE region of the image and names its "
    "location as integer pixel coordinates (x, y) in the image you see, written as: "
    "<think> {what you observe in that region and why it matters} (x, y). </think> "
    "Write exactly one step per reply and stop. " + DIVERSITY_RULE + " When you are certain, reply instead "
    "with only the final answer: <answer> {answer} </answer>"
)

# The multi-turn variant: every step ends in a zoom tool call; the environment answers with a crop.
MULTITURN_RULES = (
    "Reason step by step, one step per reply. Each step looks at ONE region of the image, names its "
    "location as integer pixel coordinates (x, y) in the full image you were first shown, and asks to zoom "
    "in there: <think> {what you expect or observe there and why} (x, y). </think> then "
    '<tool_call> {"name": "search_coordinate", "arguments": {"coordinate": [x, y]}} </tool_call> '
    "The next message shows the zoomed region inside <observation> </observation>. " + DIVERSITY_RULE + " When "
    "you are certain, reply instead with only the final answer: <answer> {answer} </answer>"
)
MULTITURN_STUDENT_RULES = (
    " Work in turns: each turn is one grounded thought with its (x, y) inside <think> </think>, followed by a "
    '<tool_call> {"name": "search_coordinate", "arguments": {"coordinate": [x, y]}} </tool_call> that zooms '
    "there; the zoomed view comes back inside <observation> </observation>. Finish with <answer> </answer>."
)

CONTINUE_PROMPT = "Continue with the next step, or give the final answer."
FORCE_ANSWER_PROMPT = "You have used all your steps. Reply now with only the final answer: <answer> {answer} </answer>"


class Task:
    """Base class. Subclasses set ``name``, ``teacher_prompt``, ``student_prompt`` and implement
    ``user_text``, ``reference``, ``ground_truth`` and ``verify``."""

    name: ClassVar[str] = ""
    teacher_prompt: ClassVar[str] = ""
    student_prompt: ClassVar[str] = ""
    # The sentence a "wrong → backtrack → right" SFT chain uses between its two paths.
    backtrack_sentence: ClassVar[str] = "Wait, this does not look right. Let me re-examine the image."

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = dict(options or {})
        for key in ("teacher_prompt", "student_prompt", "backtrack_sentence"):
            if key in self.options:
                setattr(self, key, str(self.options[key]))

    # --- prompts -------------------------------------------------------------------------
    def teacher_system(self, multiturn: bool = False) -> str:
        """The teacher's system prompt; the multi-turn variant swaps the step rules for the zoom rules."""
        if not multiturn:
            return self.teacher_prompt
        if STEP_RULES in self.teacher_prompt:
            return self.teacher_prompt.replace(STEP_RULES, MULTITURN_RULES)
        return f"{self.teacher_prompt} {MULTITURN_RULES}"

    def student_system(self, multiturn: bool = False) -> str:
        return self.student_prompt + (MULTITURN_STUDENT_RULES if multiturn else "")

    def user_text(self, sample: Sample) -> str:
        """The question as shown to the teacher and the student (options included)."""
        raise NotImplementedError

    # --- answers -------------------------------------------------------------------------
    def reference(self, sample: Sample) -> str:
        """The canonical answer text a correct chain ends with (e.g. the option text)."""
        return sample.answer

    def check_sample(self, sample: Sample) -> None:
        """Raise ``ValueError`` (one line naming the field) if the sample cannot be verified."""

    def ground_truth(self, sample: Sample, frame: Frame | None) -> dict[str, Any]:
        """Everything ``verify`` needs, JSON-safe, coordinates in ``frame`` (the teacher's)."""
        raise NotImplementedError

    def verify(self, answer: str | None, truth: dict[str, Any]) -> Verdict:
        """Score a final answer against ``ground_truth(...)``. The same function scores search
        leaves, exported rows, eval outputs and GRPO rewards."""
        raise NotImplementedError

    def hint_boxes(self, sample: Sample, frame: Frame) -> list[dict[str, Any]]:
        """Annotated regions in frame coordinates (the sim teacher's script; reports)."""
        out = []
        for b in sample.boxes:
            x1, y1, x2, y2 = frame.box_from_original(tuple(b["bbox"]))  # type: ignore[arg-type]
            out.append({"label": b.get("label", ""), "bbox": [x1, y1, x2, y2]})
        return out

    def sim_answer(self, truth: dict[str, Any], correct: bool, rng: random.Random) -> str:
        """What the scripted sim teacher answers: the reference when ``correct``, else a wrong option.

        Multiple-choice default; point- or action-answer tasks override it."""
        answer = str(truth.get("answer", ""))
        if correct:
            return answer
        wrong = [c for c in truth.get("choices") or () if self.verify(c, truth).score < 1.0]
        return rng.choice(wrong) if wrong else f"not {answer}"
