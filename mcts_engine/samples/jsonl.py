"""Generic JSONL rows → :class:`~mcts_engine.samples.types.Sample` (an I/O edge).

Two row shapes, told apart per row by the presence of ``conversations``:

- ViGoRL JSONL: ``id``, ``image`` (relative to ``--image-root``), ``conversations[0].value`` (question),
  ``conversations[1].value`` (answer).
- Plain JSONL: ``id``, ``image`` or ``images``, ``question``, ``answer``, ``choices``, ``bbox``/``boxes``.

Never raises on a bad row: each line is read and decoded on its own (``bounds``), and a row that cannot become a
sample is a :class:`~mcts_engine.samples.types.SampleError` naming the file, line and field. The small JSON
readers the benchmark loaders share (:func:`safe_json`, :func:`first_jsonl_row`) live here too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..config import InputConfig
from .bounds import DEFAULT_INPUTS, decode_json_line, iter_lines
from .options import split_options
from .types import Sample, SampleError

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S)


def _clean_question(text: str) -> str:
    return text.replace("<image>", "").strip()


def _clean_answer(text: str) -> str:
    m = _ANSWER_TAG.search(text)
    return (m.group(1) if m else text).strip()


def _as_boxes(row: dict[str, Any], where: str) -> list[dict[str, Any]]:
    boxes = row.get("boxes")
    if boxes is None and row.get("bbox") is not None:
        boxes = [{"label": "target", "bbox": row["bbox"]}]
    out = []
    for i, b in enumerate(boxes or []):
        bb = b.get("bbox") if isinstance(b, dict) else b
        if not (isinstance(bb, (list, tuple)) and len(bb) == 4 and all(isinstance(v, (int, float)) for v in bb)):
            raise ValueError(f"{where}: field 'boxes[{i}]' must be [x1, y1, x2, y2]")
        label = b.get("label", f"box{i}") if isinstance(b, dict) else f"box{i}"
        out.append({"label": str(label), "bbox": [float(v) for v in bb]})
    return out


def _row_from_vigorl(row: dict[str, Any], where: str) -> dict[str, Any]:
    conv = row.get("conversations")
    if not isinstance(conv, list) or len(conv) < 2 or not all(isinstance(t, dict) for t in conv[:2]):
        raise ValueError(f"{where}: field 'conversations' needs a question and an answer turn")
    question = _clean_question(str(conv[0].get("value", "")))
    answer = _clean_answer(str(conv[1].get("value", "")))
    return {"question": question, "answer": answer, "choices": split_options(question), "images": [row.get("image")]}


def _row_from_plain(row: dict[str, Any], where: str) -> dict[str, Any]:
    images = row.get("images")
    if isinstance(images, str):  # one path given as a string, not a list
        images = [images]
    if images is not None and not isinstance(images, list):
        raise ValueError(f"{where}: field 'images' must be a list of paths")
    if images is None:
        images = [row.get("image")] if row.get("image") is not None else None
    choices = row.get("choices") or row.get("options") or []
    if not isinstance(choices, list):
        raise ValueError(f"{where}: field 'choices' must be a list")
    return {
        "question": str(row.get("question", "")),
        "answer": row.get("answer"),
        "choices": [str(c) for c in choices],
        "images": images,
    }


def finish_sample(row: dict[str, Any], fields: dict[str, Any], sid: str, where: str, task: str, image_root: str | None) -> Sample:
    images = fields["images"]
    if not images or any(i is None or i == "" for i in images):
        raise ValueError(f"{where}: field 'image' is missing")
    if not fields["question"]:
        raise ValueError(f"{where}: field 'question' is missing")
    ans = fields["answer"]
    if ans is None or str(ans).strip() == "":
        raise ValueError(f"{where}: field 'answer' is missing")
    known = {"id", "image", "images", "question", "answer", "choices", "options", "bbox", "boxes", "conversations"}
    meta = {k: v for k, v in row.items() if k not in known and json_safe(v)}
    return Sample(
        id=sid,
        images=list(images),
        question=fields["question"],
        answer=str(ans).strip(),
        choices=fields["choices"],
        boxes=_as_boxes(row, where),
        task=task,
        metadata=meta,
        image_root=image_root,
        where=where,
    )


def json_safe(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def iter_json_rows(
    path: Path, max_row_bytes: int = DEFAULT_INPUTS.max_row_bytes
) -> Iterator[tuple[int, str, dict[str, Any] | SampleError]]:
    """``(line number, "file:line", row)`` for each non-empty line. Each line is read as bytes and
    decoded on its own: a line that is not UTF-8, not a JSON object or longer than ``max_row_bytes``
    comes as a :class:`SampleError` naming the file and line, and the lines after it are read as usual."""
    with path.open("rb") as fh:
        for lineno, raw in iter_lines(fh, max_row_bytes):
            where = f"{path.name}:{lineno}"
            if raw is None:
                yield lineno, where, SampleError(f"{path.name}#{lineno}", f"{where}: line is longer than inputs.max_row_bytes {max_row_bytes:,}")
                continue
            row = decode_json_line(raw, where)
            if row is None:
                continue
            if isinstance(row, str):
                yield lineno, where, SampleError(f"{path.name}#{lineno}", row)
                continue
            yield lineno, where, row


def load_jsonl(
    path: str | Path, image_root: str | None = None, task: str = "", inputs: InputConfig | None = None
) -> Iterator[Sample | SampleError]:
    """ViGoRL or plain JSONL (detected per row by the presence of ``conversations``)."""
    path = Path(path)
    root = image_root if image_root is not None else str(path.parent)
    for lineno, where, row in iter_json_rows(path, (inputs or DEFAULT_INPUTS).max_row_bytes):
        if isinstance(row, SampleError):
            yield row
            continue
        sid = str(row.get("id", f"{path.stem}-{lineno}"))
        try:
            fields = _row_from_vigorl(row, where) if "conversations" in row else _row_from_plain(row, where)
            yield finish_sample(row, fields, sid, where, task, root)
        except ValueError as exc:
            yield SampleError(sid, str(exc))


def first_jsonl_row(path: Path) -> dict[str, Any] | None:
    """The first readable JSON object among the first lines (a bad line does not hide the layout)."""
    try:
        with path.open("rb") as fh:
            for lineno, raw in iter_lines(fh, DEFAULT_INPUTS.max_row_bytes):
                row = decode_json_line(raw, "") if raw is not None else ""
                if isinstance(row, dict):
                    return row
                if lineno >= 32:
                    return None
    except OSError:
        return None
    return None


def load_json(path: Path) -> Any:
    with path.open("r", encoding="utf-8") as fh:
        return json.load(fh)


def safe_json(path: Path) -> Any:
    try:
        return load_json(path)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
