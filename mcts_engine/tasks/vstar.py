"""V*Bench: visual search QA on large, cluttered images (attribute recognition, spatial relations).

Multiple choice; the answer is an option's text (a letter is also accepted). The target objects'
boxes (V* gives ``[x, y, w, h]``) are converted to original-pixel xyxy at load and kept as annotations
(the sim teacher's regions, reports). V*'s annotation lists the correct option first, so the loader
presents options in a fixed per-item shuffled order. Reported per ``category`` and overall (micro).
"""

from __future__ import annotations

from ..evaluation.scoring import EvalSpec
from . import register
from .base import STEP_RULES
from .sat2 import SAT2


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
