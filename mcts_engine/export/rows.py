"""Rows of every kind and flavor, pure given a :class:`SampleContext` (what every row of one sample
shares: ids, prompt texts, stored images, frame, ground truth, split). No I/O: images arrive as
:class:`~.images.ImageBlob` values, and sinks decide how they are stored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..frame import Frame
from ..grounding import IMAGE_MARKER
from .config import ABILITY, DATA_SOURCE_PREFIX
from .images import ImageBlob
from .items import Chain, MultiTurnChain, Pair, PrmRow
from .linearize import Linearizer


@dataclass
class SampleContext:
    """What every row of one sample shares."""

    id: str
    task: str
    system: str | None  # None = no system message (system_prompt: model)
    user_text: str
    images: list[ImageBlob]
    frame: Frame
    coord_space: str  # frame | original
    image_hash: str
    reference: str
    truth: dict[str, Any]
    task_options: dict[str, Any]
    split: str = "train"
    multiturn: dict[str, Any] | None = None  # multi-turn: the environment's settings (see multiturn_settings)

    def frame_cols(self) -> dict[str, Any]:
        return {
            "frame_width": self.frame.width,
            "frame_height": self.frame.height,
            "orig_width": self.frame.orig_width,
            "orig_height": self.frame.orig_height,
            "coord_space": self.coord_space,
            "image_hash": self.image_hash,
        }

    def ident(self, row_id: str) -> dict[str, Any]:
        return {"id": self.id, "row_id": row_id, "task": self.task}

    # message shapes
    def parts_prompt(self) -> list[dict[str, Any]]:
        user = [{"type": "image", "text": None} for _ in self.images] + [{"type": "text", "text": self.user_text}]
        system = [] if self.system is None else [{"role": "system", "content": [{"type": "text", "text": self.system}]}]
        return [*system, {"role": "user", "content": user}]

    def marker_user(self) -> str:
        return "<image>" * len(self.images) + self.user_text

    def str_prompt(self) -> list[dict[str, Any]]:
        system = [] if self.system is None else [{"role": "system", "content": self.system}]
        return [*system, {"role": "user", "content": self.marker_user()}]


def _assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def sft_row(ctx: SampleContext, chain: Chain, k: int, flavor: str) -> dict[str, Any]:
    text = chain.text
    if flavor == "llamafactory":
        messages = ctx.str_prompt() + [{"role": "assistant", "content": text}]
    else:
        messages = ctx.parts_prompt() + [_assistant(text)]
    return {
        "messages": messages,
        "images": list(ctx.images),
        **ctx.ident(f"{ctx.id}/{chain.strategy}/{k}"),
        "strategy": chain.strategy,
        "answer": chain.answer,
        "value": float(chain.value),
        "n_steps": len(chain.points),
        "points": [list(p) for p in chain.points],
        **ctx.frame_cols(),
    }


def observation_parts(text: str) -> list[dict[str, Any]]:
    """An observation's user-turn content: the text before the ``<image>`` marker, an image part, the
    text after (empty pieces dropped; a text without a marker gets its image first, as the teacher saw it)."""
    pieces = text.split(IMAGE_MARKER) if IMAGE_MARKER in text else ["", text]
    parts: list[dict[str, Any]] = []
    for i, piece in enumerate(pieces):
        if i:
            parts.append({"type": "image", "text": None})
        if piece:
            parts.append({"type": "text", "text": piece})
    return parts


def observation_marker_text(text: str) -> str:
    """The observation as one string with its ``<image>`` marker (sharegpt)."""
    return text if IMAGE_MARKER in text else IMAGE_MARKER + text


def mt_sft_row(ctx: SampleContext, chain: MultiTurnChain, k: int, flavor: str, crops: dict[str, ImageBlob]) -> dict[str, Any]:
    """A multi-turn SFT row: system, user (images + question), then per zoom turn an assistant message
    and an observation user message, then the answer turn. ``images`` = sample images + one crop per
    observation, in placeholder order. ``crops``: crop file (relative to the run dir) → stored image."""
    parts = flavor != "llamafactory"
    messages = ctx.parts_prompt() if parts else ctx.str_prompt()
    images = list(ctx.images)
    boxes = []
    for turn in chain.turns:
        messages.append(_assistant(turn.text) if parts else {"role": "assistant", "content": turn.text})
        obs = turn.observation
        if obs is None:
            continue
        text = str(obs.get("text", ""))
        if parts:
            messages.append({"role": "user", "content": observation_parts(text)})
        else:
            messages.append({"role": "user", "content": observation_marker_text(text)})
        images.append(crops[str(obs["image"]["file"])])
        boxes.append([int(v) for v in obs.get("box") or []])
    return {
        "messages": messages,
        "images": images,
        **ctx.ident(f"{ctx.id}/{chain.strategy}/{k}"),
        "strategy": chain.strategy,
        "answer": chain.answer,
        "value": float(chain.value),
        "n_steps": len(chain.points),
        "points": [list(p) for p in chain.points],
        **ctx.frame_cols(),
        "multiturn": dict(ctx.multiturn or {}),
        "n_turns": len(chain.turns),
        "crop_boxes": boxes,
    }


def grpo_row(ctx: SampleContext, lin: Linearizer, index: int, flavor: str) -> dict[str, Any]:
    d = lin.difficulty()
    truth_json = json.dumps(ctx.truth, ensure_ascii=False, sort_keys=True)
    options_json = json.dumps(ctx.task_options, ensure_ascii=False, sort_keys=True)
    common = {
        **ctx.ident(f"{ctx.id}/grpo"),
        "root_value": float(d.root_value),
        "solved": bool(d.solved),
        "pass_rate": float(d.pass_rate),
        **ctx.frame_cols(),
    }
    if flavor == "easyr1":
        return {
            "prompt": ctx.marker_user() if ctx.system is None else f"{ctx.marker_user()}\n\n{ctx.system}",
            "answer": json.dumps({"task": ctx.task, "task_options": ctx.task_options, "truth": ctx.truth},
                                 ensure_ascii=False, sort_keys=True),
            "images": list(ctx.images),
            "reference": ctx.reference,
            **common,
        }
    row = {
        "prompt": ctx.str_prompt() if flavor == "verl" else ctx.parts_prompt(),
        "images": list(ctx.images),
        "answer": ctx.reference,
        "ground_truth": truth_json,
        **common,
        "data_source": DATA_SOURCE_PREFIX + ctx.task,
        "ability": ABILITY,
        "reward_model": {"style": "rule", "ground_truth": truth_json},
        "extra_info": {"split": ctx.split, "index": index, "id": ctx.id, "task": ctx.task, "task_options": options_json},
    }
    if ctx.multiturn is not None:
        row["multiturn"] = dict(ctx.multiturn)
    return row


def dpo_row(ctx: SampleContext, pair: Pair, k: int, flavor: str) -> dict[str, Any]:
    extra = {
        **ctx.ident(f"{ctx.id}/dpo/{k}"),
        "answer": pair.chosen.answer,
        "rejected_answer": pair.rejected.answer,
        "chosen_value": float(pair.chosen_q),
        "rejected_value": float(pair.rejected_q),
        "prefix_steps": pair.prefix_steps,
        **ctx.frame_cols(),
    }
    if flavor == "llamafactory":
        return {
            "messages": ctx.str_prompt(),
            "chosen": {"role": "assistant", "content": pair.chosen.text},
            "rejected": {"role": "assistant", "content": pair.rejected.text},
            "images": list(ctx.images),
            **extra,
        }
    return {
        "prompt": ctx.parts_prompt(),
        "chosen": [_assistant(pair.chosen.text)],
        "rejected": [_assistant(pair.rejected.text)],
        "images": list(ctx.images),
        **extra,
    }


def prm_row(ctx: SampleContext, row: PrmRow, k: int) -> dict[str, Any]:
    return {
        "prompt": ctx.parts_prompt(),
        "completions": list(row.steps),
        "labels": list(row.labels),
        "values": [float(v) for v in row.values],
        "visits": list(row.visits),
        "answer": row.answer,
        "correct": row.correct,
        "images": list(ctx.images),
        **ctx.ident(f"{ctx.id}/prm/{k}"),
        **ctx.frame_cols(),
    }
