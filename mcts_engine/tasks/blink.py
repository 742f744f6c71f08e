"""BLINK: 14 perception sub-tasks (depth, correspondence, counting, jigsaw, …) as multiple choice.

Items have one to four images; the loader composes several side by side into one picture (layout in
``metadata["composite"]``, named in the question) so every grounded point lives in one frame. The
answer is an option's text (a letter, "(B)", is also accepted); BLINK's own "(A)" answers are turned
into option text at load. Reported as BLINK does: accuracy per ``sub_task`` and the mean over sub-tasks.
"""

from __future__ import annotations

from ..evaluation.scoring import EvalSpec
from . import register
from .base import STEP_RULES
from .sat2 import SAT2


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
