"""GRPO's prompts: the kept rows of the GRPO export, encoded on demand, and the order they are drawn in."""

from __future__ import annotations

import json
from typing import Any

import torch

from .data import RowSource, decode_images, encode_prompt, normalize_messages
from .errors import TrainSetupError
from .multiturn import ZoomSettings, ZoomTask
from .rewards import frame_of, parse_ground_truth


class PromptSet:
    """The GRPO rows kept after the scan; encodes a prompt (chat template + images) on demand.
    ``zoom``: row index → multi-turn settings (rows absent from it roll out single-turn)."""

    def __init__(self, source: RowSource, kept: list[int], processor: Any,
                 zoom: dict[int, ZoomSettings] | None = None) -> None:
        self.source, self.kept, self.processor = source, kept, processor
        self.zoom = dict(zoom or {})

    @property
    def multiturn(self) -> bool:
        return bool(self.zoom)

    def get(self, i: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        row = self.source.row(
            i, ("prompt", "images", "task", "ground_truth", "frame_width", "frame_height", "id", "extra_info"))
        where = self.source.where(i)
        messages = normalize_messages(row["prompt"], f"{where}: field 'prompt'")
        images = decode_images(row.get("images") or [], f"{where}: field 'images'")
        frame = frame_of(row.get("frame_width"), row.get("frame_height"))
        zoom = None
        if i in self.zoom:
            image = images[0]
            zoom = ZoomTask(self.zoom[i], image, frame or frame_of(image.width, image.height))
        meta = {
            "task": row["task"],
            "task_options": row_task_options(row.get("extra_info"), f"{where}: field 'extra_info'"),
            "truth": parse_ground_truth(row["ground_truth"], where),
            "frame": frame,
            "id": row.get("id", str(i)),
            "zoom": zoom,
            "images": images,  # PIL, placeholder order (backends that take raw images)
        }
        return encode_prompt(messages, images, self.processor), meta


def row_task_options(extra_info: Any, where: str) -> dict[str, Any]:
    """The task options the row was generated with (verl ``extra_info.task_options``, a JSON string), or {}."""
    raw = extra_info.get("task_options") if isinstance(extra_info, dict) else None
    if not raw:
        return {}
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        raise TrainSetupError(f"{where}: task_options is not valid JSON") from None
    if not isinstance(value, dict):
        raise TrainSetupError(f"{where}: task_options must be an object")
    return value


def prompt_stream(kept: list[int], seed: int, shuffle: bool, start: int, count: int) -> list[int]:
    from .sft import row_stream

    return row_stream(kept, seed, shuffle, start, count)


__all__ = ["PromptSet", "prompt_stream", "row_task_options"]
