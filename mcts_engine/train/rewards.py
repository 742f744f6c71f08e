"""GRPO rewards: the search's own verifiers plus a format and a grounding term (and, multi-turn, a distinct-point
bonus). Pure functions.

Single-turn (:func:`score_completion`):

reward = w_acc · task.verify(answer, ground_truth).score      (the SAME verifier that scored search leaves)
       + w_fmt · [completion matches <think> … </think><answer> … </answer>]   (grounding.check_chain)
       + w_gnd · [the thought names at least one (x, y) inside the frame]       (grounding.Frame.contains)

Multi-turn (:func:`score_turns`, on the turns as ``mcts_engine.zoom.episode.take_turn`` classified them):

reward = w_acc · task.verify(final answer, ground_truth).score   (0 when the episode ended without an answer)
       + w_fmt · [every zoom turn is a thought naming (x, y) + a valid in-frame tool call on a point the thought
                  names, and the episode ends with a closed <answer> … </answer> turn]
       + w_gnd · [at least one valid in-frame zoom]
       + w_dst · distinct in-frame zoom points / zoom turns    (repeating a point, or a failed call, lowers it;
                                                                0 without any zoom; "distinct" = a different (x, y),
                                                                the search's and eval's rule for a repeat)

Choices:
- The answer is read by ``check_chain``: the ``<answer>`` block of a well-formed chain, else the ``<answer>``
  block there is (so accuracy and format are separate signals; the weights decide how they mix). Exactly one
  answer block ends a chain: a completion with anything after its first ``</answer>`` (e.g. a second answer
  block) scores 0 format AND 0 accuracy. Rollouts stop at the first ``</answer>`` (``grounding.CHAIN_STOPS``,
  the eval's one-shot stop), so only a completion scored from elsewhere can carry on past it.
  Multi-turn: the answer turn's ``<answer>`` (``parse_step``); a truncated or missing answer scores 0.
- Points are in the frame the model saw (``frame_width`` × ``frame_height`` of the export row); a point on the
  right/bottom edge is outside (pixels are 0-based). Without a frame, any point counts.
- A row whose ground truth cannot be verified scores 0 accuracy with the verdict's reason kept for logs.
- Defaults (``train.grpo.rewards``): accuracy 1.0, format 0.5, grounding 0.5, distinct 0.25 (distinct is unused
  single-turn). The bonus is a fraction, not a count, so it never pays for extra turns — only for not repeating.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..frame import Frame
from ..grounding import ANSWER_CLOSE, check_chain, parse_step
from ..tasks import Task, get_task
from .config import RewardWeights


@dataclass(frozen=True)
class RewardBreakdown:
    total: float
    accuracy: float  # verifier score in [0, 1]
    format: float  # 0 or 1
    grounding: float  # 0 or 1
    correct: bool  # verifier says fully correct
    answer: str | None
    reason: str = ""
    distinct: float = 0.0  # multi-turn: distinct zoom points / zoom turns (0 single-turn)
    end: str = ""  # multi-turn: how the episode ended (mcts_engine.zoom.episode.END_REASONS)

    def components(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "format": self.format, "grounding": self.grounding, "distinct": self.distinct}


def frame_of(width: Any, height: Any) -> Frame | None:
    """The row's frame (``frame_width``/``frame_height``), or None when absent/invalid."""
    try:
        w, h = int(width), int(height)
    except (TypeError, ValueError):
        return None
    if w <= 0 or h <= 0:
        return None
    return Frame(width=w, height=h, orig_width=w, orig_height=h)


def score_completion(
    text: str,
    task: Task,
    truth: dict[str, Any],
    frame: Frame | None,
    weights: RewardWeights,
) -> RewardBreakdown:
    """Score one full completion (single-turn; for multi-turn, the assistant turns joined)."""
    chain = check_chain(text)
    if after_first_answer(text):  # a second answer block (or anything) after the first: no format, no accuracy
        verdict = task.verify(None, truth)
        acc, fmt = 0.0, 0.0
        reason = "text after the first </answer>"
    else:
        verdict = task.verify(chain.answer, truth)
        acc, fmt = float(verdict.score), (1.0 if chain.well_formed else 0.0)
        reason = verdict.reason
    if frame is None:
        gnd = 1.0 if chain.points else 0.0
    else:
        gnd = 1.0 if any(frame.contains(p) for p in chain.points) else 0.0
    total = weights.accuracy * acc + weights.format * fmt + weights.grounding * gnd
    return RewardBreakdown(total, acc, fmt, gnd, bool(verdict.correct and acc > 0), chain.answer, reason)


def after_first_answer(text: str) -> bool:
    """Whether anything but whitespace follows the first ``</answer>``: a chain ends with exactly one answer
    block (the rollout stops there, as the eval does; a completion that carries on is rejected whole)."""
    _, closed, tail = text.partition(ANSWER_CLOSE)
    return bool(closed) and bool(tail.strip())


def well_formed_turn(turn: Any) -> bool:
    """One classified turn (``mcts_engine.zoom.episode.EpisodeTurn``) follows the multi-turn grammar: an answer turn
    with a closed ``<answer> … </answer>`` and no tool call, or a thought naming (x, y) with a valid in-frame
    tool call on one of the points it names."""
    if turn.error is not None:
        return False
    step = parse_step(turn.text)
    if turn.kind == "answer":
        return ANSWER_CLOSE in turn.text and step.tool_call is None and step.tool_error is None
    return turn.point is not None and turn.point in step.points


def score_turns(record: Any, task: Task, truth: dict[str, Any], weights: RewardWeights) -> RewardBreakdown:
    """Score one multi-turn episode (an ``mcts_engine.zoom.episode.ZoomEpisode`` built by ``take_turn``)."""
    verdict = task.verify(record.answer, truth)
    answered = record.end == "answer"
    fmt = 1.0 if answered and record.turns and all(well_formed_turn(t) for t in record.turns) else 0.0
    points = list(record.points)
    zoom_turns = sum(1 for t in record.turns if t.kind != "answer")
    gnd = 1.0 if points else 0.0
    distinct = len(set(points)) / zoom_turns if (points and zoom_turns) else 0.0
    acc = float(verdict.score) if answered else 0.0
    total = weights.accuracy * acc + weights.format * fmt + weights.grounding * gnd + weights.distinct * distinct
    return RewardBreakdown(total, acc, fmt, gnd, bool(verdict.correct and answered), record.answer, verdict.reason,
                           distinct, record.end)


@lru_cache(maxsize=64)
def _task(name: str, options_json: str) -> Task:
    return get_task(name, json.loads(options_json) or None)


def task_for(name: str, options: dict[str, Any] | None = None) -> Task:
    """``get_task`` with instances cached per (name, options)."""
    return _task(name, json.dumps(options or {}, sort_keys=True))


def parse_ground_truth(raw: Any, where: str) -> dict[str, Any]:
    """The export's ``ground_truth`` column (a JSON string; a dict is accepted) → dict, or ValueError naming ``where``."""
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str):
        raise ValueError(f"{where}: field 'ground_truth' must be a JSON string, got {type(raw).__name__}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: field 'ground_truth' is not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{where}: field 'ground_truth' must decode to an object")
    return value
