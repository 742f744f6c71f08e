"""The ``datasets.Features`` of every output file, per kind (sft, grpo, dpo, prm), flavor (trl, verl,
easyr1, llamafactory) and mode (single-turn, multi-turn). ``datasets`` is imported when called.
"""

from __future__ import annotations

from typing import Any

from .protocol_rows import row_multiturn_keys


def features_for(kind: str, flavor: str, multiturn: bool = False) -> Any:
    """The ``datasets.Features`` of one output file (``multiturn``: the multi-turn sft/grpo layout)."""
    from datasets import Features, List, Value
    from datasets import Image as HFImage

    if multiturn:
        return _mt_features(kind, flavor)

    parts = List({"type": Value("string"), "text": Value("string")})
    msgs = List({"role": Value("string"), "content": parts})
    str_msgs = List({"role": Value("string"), "content": Value("string")})
    images = List(HFImage())
    frame = {
        "frame_width": Value("int32"),
        "frame_height": Value("int32"),
        "orig_width": Value("int32"),
        "orig_height": Value("int32"),
        "coord_space": Value("string"),
        "image_hash": Value("string"),
    }
    ident = {"id": Value("string"), "row_id": Value("string"), "task": Value("string")}
    if kind == "sft":
        chain = {
            "strategy": Value("string"),
            "answer": Value("string"),
            "value": Value("float64"),
            "n_steps": Value("int32"),
            "points": List(List(Value("int32"))),
        }
        if flavor == "llamafactory":
            return Features({"messages": str_msgs, "images": images, **ident, **chain, **frame})
        return Features({"messages": msgs, "images": images, **ident, **chain, **frame})
    if kind == "grpo":
        difficulty = {"root_value": Value("float64"), "solved": Value("bool"), "pass_rate": Value("float64")}
        if flavor == "easyr1":
            return Features(
                {
                    "prompt": Value("string"),
                    "answer": Value("string"),
                    "images": images,
                    "reference": Value("string"),
                    **ident,
                    **difficulty,
                    **frame,
                }
            )
        verl = {
            "data_source": Value("string"),
            "ability": Value("string"),
            "reward_model": {"style": Value("string"), "ground_truth": Value("string")},
            "extra_info": {
                "split": Value("string"),
                "index": Value("int64"),
                "id": Value("string"),
                "task": Value("string"),
                "task_options": Value("string"),
            },
        }
        return Features(
            {
                "prompt": str_msgs if flavor == "verl" else msgs,
                "images": images,
                "answer": Value("string"),
                "ground_truth": Value("string"),
                **ident,
                **difficulty,
                **frame,
                **verl,
            }
        )
    if kind == "dpo":
        pair = {
            "answer": Value("string"),
            "rejected_answer": Value("string"),
            "chosen_value": Value("float64"),
            "rejected_value": Value("float64"),
            "prefix_steps": Value("int32"),
        }
        if flavor == "llamafactory":
            one = {"role": Value("string"), "content": Value("string")}
            return Features({"messages": str_msgs, "chosen": one, "rejected": one, "images": images, **ident, **pair, **frame})
        return Features({"prompt": msgs, "chosen": msgs, "rejected": msgs, "images": images, **ident, **pair, **frame})
    if kind == "prm":
        return Features(
            {
                "prompt": msgs,
                "completions": List(Value("string")),
                "labels": List(Value("bool")),
                "values": List(Value("float64")),
                "visits": List(Value("int32")),
                "answer": Value("string"),
                "correct": Value("bool"),
                "images": images,
                **ident,
                **frame,
            }
        )
    raise ValueError(f"unknown kind {kind!r}")


def _mt_features(kind: str, flavor: str) -> Any:
    """Multi-turn sft/grpo: the single-turn layout plus ``multiturn`` (the environment's settings);
    sft adds ``n_turns`` (assistant turns) and ``crop_boxes`` (xyxy region of each crop, frame px)."""
    from datasets import Features, List, Value

    if kind not in ("sft", "grpo"):
        raise ValueError(f"kind {kind!r} has no multi-turn layout (sft and grpo only)")
    base = dict(features_for(kind, flavor))
    env = {
        "max_turns": Value("int32"),
        "crop_offset": Value("int32"),
        "crop_size": Value("int32"),
        "draw_dot": Value("bool"),
        "dot_radius": Value("int32"),
        **row_multiturn_keys(),
    }
    extra: dict[str, Any] = {"multiturn": env}
    if kind == "sft":
        extra.update(n_turns=Value("int32"), crop_boxes=List(List(Value("int32"))))
    return Features({**base, **extra})
