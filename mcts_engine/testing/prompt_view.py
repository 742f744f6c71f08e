"""What the stand-in server's scripted replier reads from a chat request: the image frame (from the PNG or
JPEG header of the ``data:`` URL, without decoding), the ``(A) …`` options, the steps so far, and whether
the reply must be the final answer or continues an assistant message. Pure functions."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any

_OPTION_RE = re.compile(r"^\(([A-Z])\)\s*(.+?)\s*$", re.M)


def image_size(data_url: str) -> tuple[int, int] | None:
    """(width, height) of a PNG or JPEG ``data:`` URL, read from its header only; None if unknown."""
    head, _, b64 = data_url.partition(",")
    try:
        if "png" in head:
            raw = base64.b64decode(b64[:44])
            if raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR":
                return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
            return None
        if "jpeg" in head or "jpg" in head:
            raw = base64.b64decode(b64[: min(len(b64), 1 << 16) // 4 * 4])
            i = 2
            while i + 9 < len(raw):
                if raw[i] != 0xFF:
                    return None
                marker = raw[i + 1]
                if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                    return int.from_bytes(raw[i + 7 : i + 9], "big"), int.from_bytes(raw[i + 5 : i + 7], "big")
                i += 2 + int.from_bytes(raw[i + 2 : i + 4], "big")
    except (ValueError, IndexError):
        return None
    return None


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [p for p in content or [] if isinstance(p, dict)]


@dataclass(frozen=True)
class PromptView:
    """What the scripted replier reads from a request."""

    frame: tuple[int, int]
    options: tuple[str, ...]
    steps: int  # grounded steps already on the path
    forced: bool  # the reply must be the final answer
    continuing: bool  # continue_final_message: the reply continues the last assistant message
    prompt_tokens: int


def read_prompt(body: dict[str, Any]) -> PromptView:
    msgs = body.get("messages") or []
    frame: tuple[int, int] | None = None
    options: tuple[str, ...] = ()
    steps = 0
    tokens = 0
    for m in msgs:
        role = m.get("role")
        for p in _parts(m.get("content")):
            if p.get("type") == "image_url":
                size = image_size(str((p.get("image_url") or {}).get("url", "")))
                if size:
                    frame = frame or size
                    tokens += max(1, size[0] * size[1] // 784)
            elif p.get("type") == "text":
                text = str(p.get("text", ""))
                tokens += len(text) // 4 + 1
                if role == "user" and not options:
                    options = tuple(o for _, o in _OPTION_RE.findall(text))
                if role == "assistant":
                    steps += text.count("</think>")
    continuing = bool(body.get("continue_final_message")) and bool(msgs) and msgs[-1].get("role") == "assistant"
    last = msgs[-1] if msgs else {}
    last_text = last.get("content") if isinstance(last.get("content"), str) else ""
    if continuing:
        forced = last_text.rstrip().endswith("<answer>")
    else:
        forced = last.get("role") == "user" and "<answer>" in last_text
    return PromptView(frame or (56, 56), options, steps, forced, continuing, tokens)
