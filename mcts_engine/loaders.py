"""Benchmark loaders: each benchmark's own file layout → :class:`~mcts_engine.samples.Sample` (an I/O edge).

``samples.load_samples`` asks :func:`load_benchmark` first; it returns ``None`` for inputs it does not
recognise, and the generic loaders (ViGoRL / plain JSONL, SAT-style parquet) take over. Like them, these
loaders never raise on a bad row: they yield a :class:`SampleError` naming the file, row and field.

Invariants (the one place coordinates are converted):
- Every box, whatever its source convention (absolute or normalized to [0, 1]; ``[x1, y1, x2, y2]`` or
  ``[x, y, w, h]``), becomes ORIGINAL-pixel xyxy in ``Sample.boxes`` here, once. Tasks map it into the
  teacher's frame (``Task.ground_truth``); the source box is kept in ``metadata["source_bbox"]``.
- A multi-image item (BLINK, SAT's two-frame questions) becomes ONE image: the frames side by side,
  left to right, separated by a gray bar, at their original scale (so a box only shifts by its panel's
  offset). The layout is recorded in ``metadata["composite"]`` = ``{"layout": "side_by_side", "panels":
  [[x1, y1, x2, y2], ...], "sources": [...]}``; a grounded step's point then lives in one frame.

Recognised layouts (detected from file names / columns / the first row, never from image content):
- BLINK (``BLINK-Benchmark/BLINK`` parquet or ``save_to_disk``): ``idx``, ``question``, ``sub_task``,
  ``image_1``..``image_4``, ``choices``, ``answer`` ("(A)"), ``prompt``, ``explanation``.
- SAT (``array/SAT`` parquet): ``image_bytes`` (list) or ``images``, ``question``, ``answers`` (list, or its
  string form "[a, b]"), ``correct_answer``, ``question_type``.
- V*Bench (``craigwu/vstar_bench``): ``<category>/<name>.jpg`` + ``<name>.json`` (``target_object``,
  ``bbox`` as ``[[x, y, w, h], ...]``, ``question``, ``options`` with the correct one first), and/or
  ``test_questions.jsonl`` (``image``, ``text`` with "(A) …" options, ``category``, ``question_id``, ``label``).
- ScreenSpot v1/v2 (``screenspot_{desktop,mobile,web}[_v2].json``: ``img_filename``, ``bbox`` ``[x, y, w, h]``,
  ``instruction``, ``data_type``, ``data_source``; images in ``screenspotv2_image/``) and ScreenSpot-Pro
  (``annotations/*.json``: ``img_filename``, ``bbox`` xyxy, ``instruction``, ``id``, ``application``,
  ``platform``, ``img_size``, ``ui_type``, ``group``; images in ``images/``).
- OS-ATLAS grounding (``[{"img_filename", "elements": [{"instruction", "bbox"}]}]``, boxes normalized to
  [0, 1] xyxy; a flat ``{"img_filename", "instruction", "bbox"}`` row works too).
- Web actions (VisualWebArena-style, set-of-marks screenshots; JSONL): ``id``, ``image``, ``intent``,
  ``action`` (gold, e.g. ``type [12] [blue sofa] [1]``), optional ``url``, ``previous_actions``,
  ``elements`` = ``[{"id", "bbox", "role", "text"}]`` (``bbox_format``/``normalized`` per row if not
  absolute xyxy).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from PIL import Image

from .config import InputConfig
from .input_checks import DEFAULT_INPUTS, confine, decode_json_line, iter_lines, iter_parquet_rows, open_bounded
from .options import question_stem, split_options
from .png_writer import encode_png
from .samples import (
    ImageSource,
    Sample,
    SampleError,
    _image_cell,
    _json_safe,
    _table_rows,
    _undecoded,
    iter_json_rows,
    open_image,
)
from .verifiers import resolve_choice
from .vigorl_layouts import is_vigorl_row, load_vigorl

GAP = 16  # gray bar between side-by-side panels, pixels
GAP_COLOR = (128, 128, 128)


# --------------------------------------------------------------------------------------------
# Coordinates
# --------------------------------------------------------------------------------------------


def to_xyxy(
    bbox: Any, fmt: str = "xyxy", normalized: bool = False, size: tuple[int, int] | None = None
) -> list[float]:
    """One box in any convention → original-pixel ``[x1, y1, x2, y2]``.

    ``fmt``: ``xyxy`` or ``xywh``; ``normalized``: coordinates are fractions of the image size (``size``
    = ``(width, height)`` is then required). Raises ``ValueError`` (one line) for a malformed or
    empty box. Corners are ordered; nothing is clipped (a box may touch the image border).
    """
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4):
        raise ValueError(f"bbox must have 4 numbers, got {bbox!r}")
    try:
        a, b, c, d = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise ValueError(f"bbox must have 4 numbers, got {bbox!r}") from None
    if fmt == "xywh":
        if c < 0 or d < 0:
            raise ValueError(f"bbox width/height must be >= 0, got {bbox!r}")
        c, d = a + c, b + d
    elif fmt != "xyxy":
        raise ValueError(f"unknown bbox format {fmt!r} (xyxy or xywh)")
    if normalized:
        if size is None:
            raise ValueError("normalized bbox needs the image size")
        w, h = size
        a, b, c, d = a * w, b * h, c * w, d * h
    x1, x2 = sorted((a, c))
    y1, y2 = sorted((b, d))
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        raise ValueError(f"bbox {bbox!r} is empty")
    return [x1, y1, x2, y2]


def box_center(box: list[float]) -> tuple[int, int]:
    return round((box[0] + box[2]) / 2), round((box[1] + box[3]) / 2)


def point_text(pt: tuple[int, int]) -> str:
    return f"({pt[0]}, {pt[1]})"


def image_size(src: ImageSource, image_root: str | None, inputs: InputConfig | None = None) -> tuple[int, int]:
    """(width, height) from the image header (no full decode). ``ValueError`` with a one-line reason,
    also for a path outside the image root or an image over ``inputs.max_image_pixels``."""
    inputs = inputs or DEFAULT_INPUTS
    try:
        if isinstance(src, (bytes, bytearray)):
            with open_bounded(src, inputs.max_image_pixels, "bytes") as im:
                return im.size
        path = confine(src, image_root, inputs.allow_outside_root)
        if not path.exists():
            raise ValueError(f"image not found: {path}")
        with open_bounded(path, inputs.max_image_pixels, src) as im:
            return im.size
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"cannot read image {src if isinstance(src, str) else 'bytes'}: {type(exc).__name__}") from None


def _row_image_size(src: str, root: str, inputs: InputConfig | None, where: str, field: str) -> tuple[int, int]:
    """:func:`image_size` of a row's image; its one-line error names the row and field."""
    try:
        return image_size(src, root, inputs)
    except ValueError as exc:
        raise ValueError(f"{where}: field '{field}': {exc}") from None


# --------------------------------------------------------------------------------------------
# Multi-image items → one side-by-side image
# --------------------------------------------------------------------------------------------


def compose_side_by_side(images: list[Image.Image], gap: int = GAP) -> tuple[Image.Image, list[list[int]]]:
    """Paste frames left to right at their original scale, vertically centered, ``gap`` px of gray between.

    Returns the canvas and each panel's ``[x1, y1, x2, y2]`` in it (exclusive right/bottom edge)."""
    if not images:
        raise ValueError("no images to compose")
    height = max(im.height for im in images)
    width = sum(im.width for im in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, height), GAP_COLOR)
    panels = []
    x = 0
    for im in images:
        y = (height - im.height) // 2
        canvas.paste(im.convert("RGB"), (x, y))
        panels.append([x, y, x + im.width, y + im.height])
        x += im.width + gap
    return canvas, panels


def _source_name(src: ImageSource) -> str:
    return src if isinstance(src, str) else f"bytes:{hashlib.sha1(src).hexdigest()}"


def compose_sample(sample: Sample, inputs: InputConfig | None = None) -> Sample:
    """A sample with several images → the same sample with one side-by-side image (PNG bytes).

    Boxes may name their image with ``"image": k`` (0-based, default 0); they are shifted into the
    composite. Raises ``ValueError`` if an image cannot be read. Single-image samples pass unchanged."""
    if len(sample.images) <= 1:
        return sample
    frames = [open_image(src, sample.image_root, inputs) for src in sample.images]
    canvas, panels = compose_side_by_side(frames)
    png = encode_png(canvas)
    boxes = []
    for b in sample.boxes:
        k = int(b.get("image", 0))
        if not 0 <= k < len(panels):
            raise ValueError(f"box {b.get('label', '')!r} names image {k}, but the item has {len(panels)}")
        dx, dy = panels[k][0], panels[k][1]
        x1, y1, x2, y2 = b["bbox"]
        boxes.append({**{k2: v for k2, v in b.items() if k2 != "image"}, "bbox": [x1 + dx, y1 + dy, x2 + dx, y2 + dy], "image": k})
    meta = {
        **sample.metadata,
        "composite": {"layout": "side_by_side", "n": len(panels), "panels": panels, "gap": GAP,
                      "sources": [_source_name(s) for s in sample.images]},
    }
    return replace(sample, images=[png], boxes=boxes, metadata=meta)


def _composed(items: Iterable[Sample | SampleError], inputs: InputConfig | None = None) -> Iterator[Sample | SampleError]:
    for item in items:
        if isinstance(item, Sample) and len(item.images) > 1:
            try:
                item = compose_sample(item, inputs)
            except ValueError as exc:
                yield SampleError(item.id, f"{item.id}: {exc}")
                continue
        yield item


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------


def _table_columns(path: Path) -> tuple[set[str], str] | None:
    """Column names of a parquet file / directory of parquet files / ``save_to_disk`` dataset, and its kind."""
    try:
        if path.is_dir() and any((path / n).exists() for n in ("dataset_info.json", "state.json", "dataset_dict.json")):
            from datasets import load_from_disk

            ds = load_from_disk(str(path))
            if hasattr(ds, "keys") and not hasattr(ds, "features"):
                first = ds[next(iter(ds.keys()))]
                return set(first.column_names), "dataset"
            return set(ds.column_names), "dataset"
        files = [path] if path.is_file() else sorted(path.glob("*.parquet"))
        if not files:
            return None
        import pyarrow.parquet as pq

        return set(pq.ParquetFile(files[0]).schema_arrow.names), "parquet"
    except Exception:
        return None


def _first_jsonl_row(path: Path) -> dict[str, Any] | None:
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


def _is_vstar_row(row: dict[str, Any]) -> bool:
    return "text" in row and "label" in row and "image" in row


def _is_web_row(row: dict[str, Any]) -> bool:
    return "intent" in row and ("action" in row or "answer" in row) and ("image" in row or "images" in row)


def _load_json(path: Path) -> Any:
    with path.open("r", encoding="utf-8") as fh:
        return json.load(fh)


def _json_kind(data: Any) -> str | None:
    """Which grounding layout a parsed ``.json`` holds: screenspot, screenspot_pro, osatlas or None."""
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        return None
    row = data[0]
    if "img_filename" not in row:
        return None
    if "elements" in row:
        return "osatlas"
    if "ui_type" in row or "img_size" in row or "group" in row:
        return "screenspot_pro"
    if "data_type" in row or "data_source" in row:
        return "screenspot"
    if "instruction" in row and "bbox" in row:
        return "osatlas"
    return None


_SCREENSPOT_FILE = re.compile(r"screenspot_(desktop|mobile|web)(?:_v2)?\.json$")


def load_benchmark(
    path: str | Path, image_root: str | None = None, task: str = "", inputs: InputConfig | None = None
) -> Iterator[Sample | SampleError] | None:
    """The samples of a benchmark-layout input, or None if ``path`` is not one of the layouts above.
    ``inputs``: the rules for what the loaders read while loading (image headers, composites)."""
    p = Path(path)
    if p.is_dir():
        if any(_SCREENSPOT_FILE.search(f.name) for f in p.glob("*.json")):
            return load_screenspot(sorted(f for f in p.glob("*.json") if _SCREENSPOT_FILE.search(f.name)), image_root, inputs=inputs)
        ann = p / "annotations"
        if ann.is_dir() and any(ann.glob("*.json")):
            return load_screenspot(sorted(ann.glob("*.json")), image_root or str(p / "images"), inputs=inputs)
        if (p / "direct_attributes").is_dir() or (p / "relative_position").is_dir() or (p / "test_questions.jsonl").exists():
            return load_vstar(p, image_root, inputs=inputs)
        cols = _table_columns(p)
        if cols is not None:
            return _table_loader(p, cols, image_root, task, inputs)
        jsons = sorted(p.glob("*.json"))
        if jsons and not any(p.glob("*.jsonl")):
            first = _safe_json(jsons[0])  # the first file decides; the loader reads the others lazily
            kind = _json_kind(first)
            if kind == "osatlas":
                return load_osatlas(jsons, image_root, preloaded={jsons[0]: first}, inputs=inputs)
            if kind in {"screenspot", "screenspot_pro"}:
                return load_screenspot(jsons, image_root, preloaded={jsons[0]: first}, inputs=inputs)
        jsonls = sorted(p.glob("*.jsonl"))
        if jsonls:
            row = _first_jsonl_row(jsonls[0])
            if row is not None and _is_web_row(row):
                return (s for f in jsonls for s in load_web_actions(f, image_root, inputs=inputs))
            if is_vigorl_row(row):  # ViGoRL's released layout (vigorl_layouts.py)
                return (s for f in jsonls for s in load_vigorl(f, image_root, task, inputs=inputs))
        return None
    if not p.is_file():
        return None
    if p.suffix == ".json":
        data = _safe_json(p)  # parsed once: handed to the loader
        kind = _json_kind(data)
        if kind == "osatlas":
            return load_osatlas([p], image_root, preloaded={p: data}, inputs=inputs)
        if kind in {"screenspot", "screenspot_pro"}:
            return load_screenspot([p], image_root, preloaded={p: data}, inputs=inputs)
        return None
    if p.suffix == ".jsonl":
        row = _first_jsonl_row(p)
        if row is None:
            return None
        if _is_vstar_row(row):
            return load_vstar_questions(p, image_root, inputs=inputs)
        if _is_web_row(row):
            return load_web_actions(p, image_root, inputs=inputs)
        if is_vigorl_row(row):  # ViGoRL's released layout (vigorl_layouts.py)
            return load_vigorl(p, image_root, task, inputs=inputs)
        return None
    if p.suffix == ".parquet":
        cols = _table_columns(p)
        if cols is not None:
            return _table_loader(p, cols, image_root, task, inputs)
    return None


def _safe_json(path: Path) -> Any:
    try:
        return _load_json(path)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def _table_loader(p: Path, cols: tuple[set[str], str], image_root: str | None, task: str, inputs: InputConfig | None = None) -> Iterator[Sample | SampleError] | None:
    names, _ = cols
    if "sub_task" in names and "image_1" in names:
        return load_blink(p, image_root, inputs=inputs)
    if "correct_answer" in names and ("image_bytes" in names or "images" in names):
        return load_sat(p, image_root, task, inputs)
    return None


# --------------------------------------------------------------------------------------------
# Table rows (parquet or save_to_disk)
# --------------------------------------------------------------------------------------------


def _iter_table(path: Path, image_columns: tuple[str, ...]) -> Iterator[tuple[str, Iterator[dict[str, Any]], str]]:
    """``(label, rows, default image root)`` per parquet file or dataset split; image columns undecoded."""
    if path.is_dir() and any((path / n).exists() for n in ("dataset_info.json", "state.json", "dataset_dict.json")):
        from datasets import load_from_disk

        ds = load_from_disk(str(path))
        parts = [(f"{path.name}[{s}]", ds[s]) for s in ds.keys()] if hasattr(ds, "keys") and not hasattr(ds, "features") else [(path.name, ds)]
        for label, d in parts:
            for col in image_columns:
                if col in d.column_names:
                    d = d.cast_column(col, _undecoded(d, col))
            yield label, (d[i] for i in range(len(d))), str(path)
        return
    files = [path] if path.is_file() else sorted(path.glob("*.parquet"))
    for f in files:
        yield f.name, iter_parquet_rows(f, batch_size=32), str(f.parent)


_LETTER_ANSWER = re.compile(r"^\(?\s*([A-Za-z])\s*\)?$")


def _answer_to_option(answer: Any, choices: list[str], where: str) -> str:
    """A letter ("(B)", "B") or option text → the option's text. ``ValueError`` if it names none."""
    text = str(answer if answer is not None else "").strip()
    if not text:
        raise ValueError(f"{where}: field 'answer' is missing")
    m = _LETTER_ANSWER.match(text)
    if m and choices:
        idx = ord(m.group(1).upper()) - ord("A")
        if 0 <= idx < len(choices):
            return choices[idx]
    idx2 = resolve_choice(text, choices) if choices else None
    if idx2 is None:
        raise ValueError(f"{where}: field 'answer' {text!r} names none of the {len(choices)} choices")
    return choices[idx2]


def _extra_boxes(row: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """Optional ``boxes`` column (an extension used by the bundled samples): ``[{"label", "bbox", "image"}]``
    with original-pixel xyxy boxes in image ``image`` (0-based)."""
    out = []
    for i, b in enumerate(row.get("boxes") or []):
        if not isinstance(b, dict):
            raise ValueError(f"{where}: field 'boxes[{i}]' must be an object")
        try:
            bb = to_xyxy(b.get("bbox"))
        except ValueError as exc:
            raise ValueError(f"{where}: field 'boxes[{i}]': {exc}") from None
        out.append({"label": str(b.get("label", f"box{i}")), "bbox": bb, "image": int(b.get("image") or 0)})
    return out


def load_blink(path: Path, image_root: str | None = None, inputs: InputConfig | None = None) -> Iterator[Sample | SampleError]:
    """BLINK rows → samples (answer letter → option text; several images composed side by side)."""
    image_cols = ("image_1", "image_2", "image_3", "image_4")
    for label, rows, root in _iter_table(path, image_cols):
        for i, row in enumerate(rows):
            if isinstance(row, tuple):  # a row the parquet reader could not read
                yield SampleError(f"{Path(label).stem}-{row[0]}", row[1])
                continue
            where = f"{label} row {i}"
            sid = str(row.get("idx") if row.get("idx") not in (None, "") else f"{Path(label).stem}-{i}")
            try:
                images = []
                for col in image_cols:
                    cell = row.get(col)
                    if cell is None or (isinstance(cell, dict) and not cell.get("bytes") and not cell.get("path")):
                        continue
                    try:
                        images.append(_image_cell(cell))
                    except ValueError as exc:
                        raise ValueError(f"{where}: field '{col}': {exc}") from None
                if not images:
                    raise ValueError(f"{where}: field 'image_1' is missing")
                choices = row.get("choices")
                if not isinstance(choices, list) or len(choices) < 2:
                    raise ValueError(f"{where}: field 'choices' needs at least two options")
                choices = [str(c) for c in choices]
                raw_answer = row.get("answer")
                if str(raw_answer).strip().lower() in {"", "hidden", "none"}:
                    raise ValueError(f"{where}: field 'answer' is hidden (BLINK's test split has no answers; use val)")
                answer = _answer_to_option(raw_answer, choices, where)
                question = str(row.get("question") or "").strip()
                if not question:
                    raise ValueError(f"{where}: field 'question' is missing")
                meta = {k: row[k] for k in ("sub_task", "prompt", "explanation") if row.get(k) is not None and _json_safe(row[k])}
                meta["benchmark"] = "blink"
                meta["source_answer"] = str(raw_answer)
                sample = Sample(
                    id=sid, images=images, question=question, answer=answer, choices=choices,
                    boxes=_extra_boxes(row, where), task="blink", metadata=meta, image_root=image_root or root,
                    where=where,
                )
                yield compose_sample(sample, inputs)
            except ValueError as exc:
                yield SampleError(sid, str(exc))


def _parse_answers(value: Any) -> list[str]:
    """SAT's ``answers``: a list, or its string form ``"['left', 'right']"`` / ``"[left, right]"``."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if isinstance(value, str):
        s = value.strip()
        try:
            parsed = json.loads(s)
            if isinstance(parsed, list):
                return [str(v) for v in parsed]
        except json.JSONDecodeError:
            pass
        body = s[1:-1] if s.startswith("[") and s.endswith("]") else s
        return [p.strip().strip("'\"").strip() for p in body.split(",") if p.strip().strip("'\"").strip()]
    return []


def load_sat(
    path: Path, image_root: str | None = None, task: str = "", inputs: InputConfig | None = None
) -> Iterator[Sample | SampleError]:
    """SAT rows (``image_bytes`` or ``images``; ``answers`` list or string) through the generic SAT row
    reader, then two-frame items composed side by side (recorded in ``metadata["composite"]``)."""
    for label, rows, root in _iter_table(path, ("images", "image")):
        def mapped(rows: Iterator[dict[str, Any]] = rows) -> Iterator[dict[str, Any]]:
            for row in rows:
                if isinstance(row, tuple):  # unreadable: _table_rows reports it
                    yield row
                    continue
                row = dict(row)
                if "images" not in row and "image_bytes" in row:
                    cells = row.pop("image_bytes")
                    row["images"] = list(cells) if isinstance(cells, (list, tuple)) else [cells]
                if "answers" in row:
                    row["answers"] = _parse_answers(row["answers"])
                yield row

        yield from _composed(_table_rows(label, mapped(), image_root or root, task), inputs)


# --------------------------------------------------------------------------------------------
# V*Bench
# --------------------------------------------------------------------------------------------

_VSTAR_INSTRUCTION = re.compile(r"\n?\s*Answer with the option'?s letter.*$", re.S | re.I)
VSTAR_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".webp")


def _shuffled_options(options: list[str], key: str) -> tuple[list[str], list[int]]:
    """V*'s annotation lists the correct option first: present them in a fixed per-item shuffled order."""
    order = list(range(len(options)))
    random.Random(hashlib.sha256(key.encode()).hexdigest()).shuffle(order)
    return [options[i] for i in order], order


def _vstar_boxes(ann: dict[str, Any], where: str) -> list[dict[str, Any]]:
    boxes = ann.get("bbox") or []
    names = ann.get("target_object") or []
    if boxes and not isinstance(boxes[0], (list, tuple)):
        boxes = [boxes]
    out = []
    for i, bb in enumerate(boxes):
        try:
            xyxy = to_xyxy(bb, fmt="xywh")
        except ValueError as exc:
            raise ValueError(f"{where}: field 'bbox[{i}]': {exc}") from None
        label = str(names[i]) if i < len(names) else f"target{i}"
        out.append({"label": label, "bbox": xyxy, "source_bbox": list(bb)})
    return out


def load_vstar(root: Path, image_root: str | None = None, inputs: InputConfig | None = None) -> Iterator[Sample | SampleError]:
    """V*Bench directory: ``test_questions.jsonl`` if present (boxes from the per-image JSON), else every
    ``<category>/<image>`` with its ``<image>.json`` annotation (files this loader lists itself: their
    image root is the dataset directory unless ``image_root`` holds them)."""
    if (root / "test_questions.jsonl").exists():
        yield from load_vstar_questions(root / "test_questions.jsonl", image_root or str(root), inputs)
        return
    base = Path(image_root) if image_root else root
    for category in ("direct_attributes", "relative_position"):
        folder = root / category
        if not folder.is_dir():
            continue
        for img in sorted(f for f in folder.iterdir() if f.suffix.lower() in VSTAR_IMAGE_EXT):
            sid = f"{category}/{img.stem}"
            ann_path = img.with_suffix(".json")
            where = f"{category}/{ann_path.name}"
            try:
                if not ann_path.exists():
                    raise ValueError(f"{where}: annotation file is missing")
                ann = _safe_json(ann_path)
                if not isinstance(ann, dict):
                    raise ValueError(f"{where}: not a JSON object")
                options = [str(o) for o in ann.get("options") or []]
                if len(options) < 2:
                    raise ValueError(f"{where}: field 'options' needs at least two options")
                question = str(ann.get("question") or "").strip()
                if not question:
                    raise ValueError(f"{where}: field 'question' is missing")
                choices, order = _shuffled_options(options, sid)
                own = base if img.is_relative_to(base) else root
                yield Sample(
                    id=sid, images=[str(img.relative_to(own))], where=where,
                    question=question, answer=options[0], choices=choices, boxes=_vstar_boxes(ann, where),
                    task="vstar", image_root=str(own),
                    metadata={"benchmark": "vstar", "category": category, "option_order": order,
                              "target_object": [str(t) for t in ann.get("target_object") or []]},
                )
            except ValueError as exc:
                yield SampleError(sid, str(exc))


def load_vstar_questions(
    path: Path, image_root: str | None = None, inputs: InputConfig | None = None
) -> Iterator[Sample | SampleError]:
    """``test_questions.jsonl``: options parsed from ``text``, ``label`` letter → option text, boxes from the
    image's sibling ``.json`` annotation when it exists."""
    inputs = inputs or DEFAULT_INPUTS
    root = image_root if image_root is not None else str(path.parent)
    for lineno, where, row in iter_json_rows(path, inputs.max_row_bytes):
        if isinstance(row, SampleError):
            yield row
            continue
        sid = str(row.get("question_id", f"{path.stem}-{lineno}"))
        try:
            text = str(row.get("text") or "")
            choices = split_options(text)
            if len(choices) < 2:
                raise ValueError(f"{where}: field 'text' has no '(A) …' options")
            question = question_stem(_VSTAR_INSTRUCTION.sub("", text))
            answer = _answer_to_option(row.get("label"), choices, where)
            image = row.get("image")
            if not image:
                raise ValueError(f"{where}: field 'image' is missing")
            boxes: list[dict[str, Any]] = []
            try:
                ann_path = confine(str(Path(image).with_suffix(".json")), root, inputs.allow_outside_root)
            except ValueError as exc:
                raise ValueError(f"{where}: field 'image': {exc}") from None
            if ann_path.exists():
                ann = _safe_json(ann_path)
                if isinstance(ann, dict):
                    boxes = _vstar_boxes(ann, f"{where} ({ann_path.name})")
            meta = {"benchmark": "vstar", "category": str(row.get("category") or Path(image).parent.name)}
            yield Sample(id=sid, images=[str(image)], question=question, answer=answer, choices=choices,
                         boxes=boxes, task="vstar", metadata=meta, image_root=root, where=where)
        except ValueError as exc:
            yield SampleError(sid, str(exc))


# --------------------------------------------------------------------------------------------
# ScreenSpot (v1/v2, Pro) and OS-ATLAS: grounding to a point
# --------------------------------------------------------------------------------------------

_PLATFORM_OF_SOURCE = {"ios": "mobile", "android": "mobile", "windows": "desktop", "macos": "desktop", "linux": "desktop"}


def _screenspot_image_root(json_path: Path, image_root: str | None) -> str:
    if image_root:
        return image_root
    for cand in (json_path.parent / "screenspotv2_image", json_path.parent / "screenspot_imgs",
                 json_path.parent / "images", json_path.parent.parent / "images"):
        if cand.is_dir():
            return str(cand)
    return str(json_path.parent)


def _grounding_sample(
    sid: str, image: str, instruction: str, bbox: Any, fmt: str, normalized: bool, root: str,
    meta: dict[str, Any], task: str, where: str, size: tuple[int, int] | None = None, inputs: InputConfig | None = None,
) -> Sample:
    if not image:
        raise ValueError(f"{where}: field 'img_filename' is missing")
    if not instruction or not str(instruction).strip():
        raise ValueError(f"{where}: field 'instruction' is missing")
    if normalized and size is None:
        size = _row_image_size(image, root, inputs, where, "img_filename")
    try:
        box = to_xyxy(bbox, fmt=fmt, normalized=normalized, size=size)
    except ValueError as exc:
        raise ValueError(f"{where}: field 'bbox': {exc}") from None
    return Sample(
        id=sid, images=[image], question=str(instruction).strip(), answer=point_text(box_center(box)),
        boxes=[{"label": "target", "bbox": box}], task=task, image_root=root, where=where,
        metadata={**meta, "source_bbox": list(bbox), "source_bbox_format": f"{fmt}{'/normalized' if normalized else ''}"},
    )


def _auto_normalized(bbox: Any) -> bool:
    try:
        return all(0.0 <= float(v) <= 1.0 for v in bbox)
    except (TypeError, ValueError):
        return False


def load_screenspot(files: list[Path], image_root: str | None = None,
                    preloaded: dict[Path, Any] | None = None, inputs: InputConfig | None = None) -> Iterator[Sample | SampleError]:
    """ScreenSpot v1/v2 (``[x, y, w, h]`` pixels; platform from the file name) and ScreenSpot-Pro (xyxy pixels)."""
    for f in files:
        data = (preloaded or {}).pop(f, None) if f in (preloaded or {}) else _safe_json(f)
        if not isinstance(data, list):
            yield SampleError(f.name, f"{f.name}: not a JSON list of annotations")
            continue
        root = _screenspot_image_root(f, image_root)
        m = _SCREENSPOT_FILE.search(f.name)
        for i, row in enumerate(data):
            where = f"{f.name} row {i}"
            if not isinstance(row, dict):
                yield SampleError(f"{f.stem}-{i}", f"{where}: row is not a JSON object")
                continue
            pro = "ui_type" in row or "group" in row or "img_size" in row
            sid = str(row.get("id") or f"{f.stem}-{i:04d}")
            try:
                bbox = row.get("bbox")
                fmt = str(row.get("bbox_format") or ("xyxy" if pro else "xywh"))
                normalized = bool(row.get("normalized", _auto_normalized(bbox) if not pro else False))
                source = str(row.get("data_source") or "")
                if pro:
                    meta = {"benchmark": "screenspot_pro", "group": str(row.get("group") or ""),
                            "platform": str(row.get("platform") or ""), "application": str(row.get("application") or ""),
                            "ui_type": str(row.get("ui_type") or "")}
                    size = tuple(row["img_size"]) if isinstance(row.get("img_size"), list) and len(row["img_size"]) == 2 else None
                else:
                    platform = m.group(1) if m else _PLATFORM_OF_SOURCE.get(source.lower(), "web")
                    meta = {"benchmark": "screenspot_v2" if (m and "_v2" in f.name) else "screenspot",
                            "platform": platform, "ui_type": str(row.get("data_type") or ""), "data_source": source}
                    size = None
                meta["file"] = f.name
                yield _grounding_sample(sid, str(row.get("img_filename") or ""), row.get("instruction") or "", bbox, fmt,
                                        normalized, root, meta, "screenspot", where, size=size, inputs=inputs)  # type: ignore[arg-type]
            except ValueError as exc:
                yield SampleError(sid, str(exc))


def load_osatlas(files: list[Path], image_root: str | None = None,
                 preloaded: dict[Path, Any] | None = None, inputs: InputConfig | None = None) -> Iterator[Sample | SampleError]:
    """OS-ATLAS grounding JSON: one sample per element; boxes normalized to [0, 1] xyxy (a row may say
    ``"normalized": false`` for pixels). Needs each image's size (read from its header)."""
    for f in files:
        data = (preloaded or {}).pop(f, None) if f in (preloaded or {}) else _safe_json(f)
        if not isinstance(data, list):
            yield SampleError(f.name, f"{f.name}: not a JSON list")
            continue
        root = image_root or (str(f.parent / "images") if (f.parent / "images").is_dir() else str(f.parent))
        for i, row in enumerate(data):
            where = f"{f.name} row {i}"
            if not isinstance(row, dict):
                yield SampleError(f"{f.stem}-{i}", f"{where}: row is not a JSON object")
                continue
            image = str(row.get("img_filename") or "")
            elements = row.get("elements")
            flat = elements is None
            elements = [row] if flat else elements
            if not isinstance(elements, list):
                yield SampleError(f"{f.stem}-{i}", f"{where}: field 'elements' must be a list")
                continue
            size: tuple[int, int] | None = None
            for j, el in enumerate(elements):
                sid = str(el.get("id") if isinstance(el, dict) and el.get("id") else (f"{f.stem}-{i:05d}" if flat else f"{f.stem}-{i:05d}-{j:02d}"))
                w = where if flat else f"{where} element {j}"
                try:
                    if not isinstance(el, dict):
                        raise ValueError(f"{w}: element is not a JSON object")
                    normalized = bool(el.get("normalized", row.get("normalized", True)))
                    if normalized and size is None:
                        size = _row_image_size(image, root, inputs, w, "img_filename") if image else None
                    meta = {"benchmark": "osatlas", "file": f.name, "platform": str(row.get("platform") or f.stem)}
                    yield _grounding_sample(sid, image, el.get("instruction") or "", el.get("bbox"), "xyxy", normalized,
                                            root, meta, "osatlas", w, size=size, inputs=inputs)
                except ValueError as exc:
                    yield SampleError(sid, str(exc))


# --------------------------------------------------------------------------------------------
# Web actions (set-of-marks)
# --------------------------------------------------------------------------------------------


def load_web_actions(path: Path, image_root: str | None = None, inputs: InputConfig | None = None) -> Iterator[Sample | SampleError]:
    """VisualWebArena-style JSONL rows → samples; the gold action's element box becomes the target box."""
    from .verifiers import parse_web_action

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
            size = _row_image_size(str(image), root, inputs, where, "image") if normalized else None
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
            meta.update({k: v for k, v in row.items() if k in {"site", "task_id", "split"} and _json_safe(v)})
            yield Sample(id=sid, images=[str(image)], question=intent, answer=action_text,
                         boxes=boxes, task="web_action", metadata=meta, image_root=root, where=where)
        except ValueError as exc:
            yield SampleError(sid, str(exc))


__all__ = [
"to_xyxy", "compose_side_by_side", "compose_sample", "load_benchmark", "load_blink", "load_sat", "load_vstar",
"load_vstar_questions", "load_screenspot", "load_osatlas", "load_web_actions",
]
