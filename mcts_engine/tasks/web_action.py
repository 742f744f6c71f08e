"""Web interaction (VisualWebArena-style): choose the next action on a set-of-marks screenshot.

The screenshot has numbered marks on its interactive elements; the question gives the objective, the
URL, the previous actions and (when the data has it) the list of marked elements. The final answer is
ONE action: ``click [id]``, ``type [id] [text]``, ``hover [id]``, ``scroll [up|down]``, ``go_back``,
``stop [answer]`` (and VisualWebArena's ``press``/``goto``/tab actions). Verifier
(``verifiers.match_web_action``): partial credit for the action type and the element id, typed text
compared after normalization — exact, never a substring, spaces allowed. Reported by gold action type,
with the mean (partial-credit) score next to accuracy.

Layout (``load_web_actions``, JSONL): ``id``, ``image``, ``intent``, ``action`` (gold, e.g. ``type [12] [blue sofa]
[1]``), optional ``url``, ``previous_actions``, ``elements`` = ``[{"id", "bbox", "role", "text"}]``
(``bbox_format``/``normalized`` per row if not absolute xyxy).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..config import InputConfig
from ..evaluation.scoring import EvalSpec
from ..frame import Frame
from ..samples import Sample, SampleError, iter_json_rows, to_xyxy
from ..samples.bounds import DEFAULT_INPUTS
from ..samples.images import row_image_size
from ..samples.jsonl import json_safe
from ..samples.probe import InputProbe
from ..verifiers import Verdict, match_web_action, parse_web_action
from . import register
from .base import STEP_RULES, Task

ACTION_SPACE = (
    "Actions: click [id] · type [id] [text] · hover [id] · scroll [up] / scroll [down] · go_back · "
    "stop [answer] (when the objective is done; the answer if it asks for one, else N/A)."
)


@register
class WebActionTask(Task):
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


# --------------------------------------------------------------------------------------------
# Loader: web actions (VisualWebArena-style JSONL)
# --------------------------------------------------------------------------------------------


def _is_web_row(row: dict[str, Any]) -> bool:
    return "intent" in row and ("action" in row or "answer" in row) and ("image" in row or "images" in row)


def load_web_actions(path: Path, image_root: str | None = None, inputs: InputConfig | None = None) -> Iterator[Sample | SampleError]:
    """VisualWebArena-style JSONL rows → samples; the gold action's element box becomes the target box."""
    inputs = inputs or DEFAULT_INPUTS
    root = image_root if image_root is not None else str(path.parent)
    for lineno, where, row in iter_json_rows(path, inputs.max_row_bytes):
        if isinstance(row, SampleError):
            yield row
            continue
        sid = str(row.get("id", row.get("task_id", f"{path.stem}-{lineno}")))
        try:
            image = row.get("image") or ((row.get("images") or [None])[0])
            if not image:
                raise ValueError(f"{where}: field 'image' is missing")
            intent = str(row.get("intent") or "").strip()
            if not intent:
                raise ValueError(f"{where}: field 'intent' is missing")
            action_text = str(row.get("action", row.get("answer")) or "").strip()
            gold = parse_web_action(action_text)
            if gold is None:
                raise ValueError(f"{where}: field 'action' {action_text!r} is not a web action")
            fmt = str(row.get("bbox_format") or "xyxy")
            normalized = bool(row.get("normalized", False))
            size = row_image_size(str(image), root, inputs, where, "image") if normalized else None
            elements = []
            for k, el in enumerate(row.get("elements") or []):
                if not isinstance(el, dict) or el.get("id") is None:
                    raise ValueError(f"{where}: field 'elements[{k}]' needs an 'id'")
                entry: dict[str, Any] = {"id": str(int(el["id"])), "role": str(el.get("role") or ""), "text": str(el.get("text") or "")}
                if el.get("bbox") is not None:
                    try:
                        entry["bbox"] = to_xyxy(el["bbox"], fmt=fmt, normalized=normalized, size=size)
                    except ValueError as exc:
                        raise ValueError(f"{where}: field 'elements[{k}].bbox': {exc}") from None
                elements.append(entry)
            ids = {e["id"] for e in elements}
            if gold.element is not None and elements and gold.element not in ids:
                raise ValueError(f"{where}: field 'action' names element {gold.element}, which is not in 'elements'")
            boxes = [{"label": f"element [{e['id']}] {e['text']}".strip(), "bbox": e["bbox"], "element": e["id"]}
                     for e in elements if e["id"] == gold.element and "bbox" in e]
            prev = row.get("previous_actions") or []
            if not isinstance(prev, list):
                raise ValueError(f"{where}: field 'previous_actions' must be a list")
            meta = {"benchmark": "web_action", "url": str(row.get("url") or ""), "previous_actions": [str(a) for a in prev],
                    "elements": elements, "action_type": gold.kind}
            meta.update({k: v for k, v in row.items() if k in {"site", "task_id", "split"} and json_safe(v)})
            yield Sample(id=sid, images=[str(image)], question=intent, answer=action_text,
                         boxes=boxes, task="web_action", metadata=meta, image_root=root, where=where)
        except ValueError as exc:
            yield SampleError(sid, str(exc))


LAYOUT_PRIORITY = 50  # JSONL rows by their fields (after V*'s ``test_questions`` rows)


def detect(probe: InputProbe) -> bool:
    """A ``.jsonl`` file, or a directory of them (no table), whose first row has ``intent``, ``action`` and an image."""
    if probe.is_dir and probe.columns is not None:
        return False
    return probe.first_row is not None and _is_web_row(probe.first_row)


def load(probe: InputProbe, image_root: str | None = None, task: str = "", inputs: InputConfig | None = None
         ) -> Iterator[Sample | SampleError]:
    return (s for f in probe.jsonls for s in load_web_actions(f, image_root, inputs=inputs))
