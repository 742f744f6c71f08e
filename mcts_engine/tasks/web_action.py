"""Web interaction (VisualWebArena-style): choose the next action on a set-of-marks screenshot.

The screenshot has numbered marks on its interactive elements; the question gives the objective, the
URL, the previous actions and (when the data has it) the list of marked elements. The final answer is
ONE action: ``click [id]``, ``type [id] [text]``, ``hover [id]``, ``scroll [up|down]``, ``go_back``,
``stop [answer]`` (and VisualWebArena's ``press``/``goto``/tab actions). Verifier
(``verifiers.match_web_action``): partial credit for the action type and the element id, typed text
compared after normalization — exact, never a substring, spaces allowed. Reported by gold action type,
with the mean (partial-credit) score next to accuracy.
"""

from __future__ import annotations

import random
from typing import Any

from ..eval import EvalSpec
from ..frame import Frame
from ..samples import Sample
from ..verifiers import Verdict, match_web_action, parse_web_action
from . import register
from .base import STEP_RULES, Task

ACTION_SPACE = (
    "Actions: click [id] · type [id] [text] · hover [id] · scroll [up] / scroll [down] · go_back · "
    "stop [answer] (when the objective is done; the answer if it asks for one, else N/A)."
)


@register
class WebAction(Task):
    name = "web_action"
    teacher_prompt = (
        "You are a web agent. The screenshot marks interactive elements with numeric ids. "
        + STEP_RULES
        + " Ground each step on the element or region you are considering. The final answer must be exactly "
        "one action, e.g. <answer> click [12] </answer>. "
        + ACTION_SPACE
    )
    student_prompt = (
        "You are a web agent acting on a screenshot whose interactive elements carry numeric ids. First think "
        "step by step inside <think> </think>, grounding every step in the screenshot with integer pixel "
        "coordinates (x, y). Then give exactly one next action inside <answer> </answer>, e.g. "
        "<answer> type [7] [red shoes] </answer>. " + ACTION_SPACE
    )
    eval_spec = EvalSpec(groups=("action_type",), partial_credit=True,
                         notes="web_action: accuracy = exact action; mean score gives partial credit for type and element id.")

    def user_text(self, sample: Sample) -> str:
        meta = sample.metadata or {}
        lines = [f"Objective: {sample.question}"]
        if meta.get("url"):
            lines.append(f"URL: {meta['url']}")
        prev = meta.get("previous_actions") or []
        lines.append("Previous actions: " + ("; ".join(prev) if prev else "none"))
        elements = meta.get("elements") or []
        if elements:
            lines.append("Marked elements:")
            for e in elements:
                lines.append(f"[{e['id']}] [{e.get('role') or 'element'}] [{e.get('text', '')}]")
        lines.append("What is the next action?")
        return "\n".join(lines)

    def check_sample(self, sample: Sample) -> None:
        if parse_web_action(sample.answer) is None:
            raise ValueError(f"field 'answer' {sample.answer!r} is not a web action")

    def reference(self, sample: Sample) -> str:
        gold = parse_web_action(sample.answer)
        return gold.format() if gold is not None else sample.answer

    def ground_truth(self, sample: Sample, frame: Frame | None) -> dict[str, Any]:
        gold = parse_web_action(sample.answer)
        ids = [str(e["id"]) for e in (sample.metadata or {}).get("elements") or []]
        return {"answer": self.reference(sample), "action_type": gold.kind if gold else None, "element_ids": ids}

    def verify(self, answer: str | None, truth: dict[str, Any]) -> Verdict:
        return match_web_action(answer, truth["answer"])

    def sim_answer(self, truth: dict[str, Any], correct: bool, rng: random.Random) -> str:
        """The gold action, or a plausible mistake: another element, other typed text, another action."""
        answer = str(truth["answer"])
        if correct:
            return answer
        gold = parse_web_action(answer)
        if gold is None:
            return "go_back"
        others = [i for i in truth.get("element_ids") or [] if i != gold.element]
        if gold.element is not None and rng.random() < 0.6:
            other = rng.choice(others) if others else str(int(gold.element) + 1)
            text = f" [{gold.text}]" if gold.kind == "type" else ""
            return f"{gold.kind} [{other}]{text}"
        if gold.kind == "type" and rng.random() < 0.5:
            return f"type [{gold.element}] [{(gold.text or '') + ' please'}]"
        return "scroll [down]" if gold.kind != "scroll" or gold.text == "up" else "scroll [up]"
