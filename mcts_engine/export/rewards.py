"""Reward functions for outside trainers (verl, EasyR1, TRL): the task's own verifier on a response,
the same check the search used. Generated ``reward.py`` files import from here
(``from mcts_engine.export.rewards import verl_compute_score as compute_score``); those written by
earlier versions import ``mcts_engine.export.formats``, which re-exports these functions. Import-light:
a trainer's reward worker loads no image, parquet or dataset library through this module.
"""

from __future__ import annotations

import json
from typing import Any

from ..grounding import check_chain, extract_answer
from .config import DATA_SOURCE_PREFIX


def score_response(task_name: str, task_options: dict[str, Any] | None, response: str, truth: dict[str, Any]) -> dict[str, float]:
    """``accuracy``: the task's verifier on the response's final answer; ``format``: the response is
    ``<think> … </think><answer> … </answer>``; ``overall``: accuracy when well formed, else 0."""
    from ..tasks import get_task

    task = get_task(task_name, task_options or {})
    chk = check_chain(response)
    answer = chk.answer if chk.well_formed else extract_answer(response)
    acc = float(task.verify(answer, truth).score)
    fmt = 1.0 if chk.well_formed else 0.0
    return {"overall": acc if chk.well_formed else 0.0, "format": fmt, "accuracy": acc}


def verl_compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None, **_: Any) -> dict[str, float]:
    """verl ``custom_reward_function``: returns ``{"score", "format", "accuracy"}``."""
    info = extra_info or {}
    task = str(info.get("task") or str(data_source).removeprefix(DATA_SOURCE_PREFIX))
    options = json.loads(info["task_options"]) if info.get("task_options") else {}
    s = score_response(task, options, solution_str, json.loads(ground_truth))
    return {"score": s["overall"], "format": s["format"], "accuracy": s["accuracy"]}


def easyr1_compute_score(reward_input: Any, **_: Any) -> Any:
    """EasyR1 reward function (``reward_type`` sequential: one dict; batch: a list of dicts). The
    ``answer`` column holds ``{"task", "task_options", "truth"}`` as JSON (it arrives as ground_truth)."""

    def one(r: dict[str, Any]) -> dict[str, float]:
        gt = json.loads(r["ground_truth"])
        return score_response(gt["task"], gt.get("task_options"), r["response"], gt["truth"])

    if isinstance(reward_input, list):
        return [one(r) for r in reward_input]
    return one(reward_input)


def trl_accuracy_reward(completions: list[Any], ground_truth: list[str], task: list[str], **_: Any) -> list[float]:
    """TRL ``GRPOTrainer`` reward function for the GRPO files (``reward_funcs=trl_accuracy_reward``):
    TRL passes the ``ground_truth`` and ``task`` columns as keyword arguments; conversational
    completions arrive as ``[{"role": "assistant", "content": …}]``."""
    out = []
    for c, gt, name in zip(completions, ground_truth, task):
        text = c[-1]["content"] if isinstance(c, list) else str(c)
        if isinstance(text, list):  # content parts
            text = "".join(p.get("text") or "" for p in text)
        out.append(score_response(name, None, text, json.loads(gt))["overall"])
    return out
