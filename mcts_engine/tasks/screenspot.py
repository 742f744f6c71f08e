"""Grounding to a point (ScreenSpot v2 / Pro; the base of ``osatlas``).

The question is an instruction ("close this window"); the final answer is one point ``(x, y)`` in the
frame the model saw. Verifier: the point lies in the target box (edges inclusive) mapped into that same
frame — never a distance to the center, never in original pixels. The box comes from the loader in
original-pixel xyxy (ScreenSpot v2's ``[x, y, w, h]`` and normalized boxes are converted there); a
ViGoRL-style row whose answer is ``"(x1, y1, x2, y2)"`` is read as that box (original pixels).

Reported as the benchmarks do: ScreenSpot v2 by platform (mobile/desktop/web) × text/icon, ScreenSpot-Pro
by application group (Dev, Creative, CAD, Scientific, Office, OS) × text/icon; overall over all items.
"""

from __future__ import annotations

import random
import re
from typing import Any

from ..eval import EvalSpec
from ..frame import Frame
from ..samples import Sample
from ..verifiers import Verdict, parse_point_answer, point_in_box
from . import register
from .base import STEP_RULES, Task

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
