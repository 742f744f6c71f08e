"""Samples and their loaders (an I/O edge).

A :class:`Sample` is one question about one or more images. Loaders turn files into samples and
never raise on a bad row: they yield a :class:`SampleError` naming the file, row and field, and the
run records it as a failure and goes on.

Supported inputs:
- ViGoRL JSONL: ``id``, ``image`` (relative to ``--image-root``), ``conversations[0].value`` (question),
  ``conversations[1].value`` (answer).
- Plain JSONL: ``id``, ``image`` or ``images``, ``question``, ``answer``, ``choices``, ``bbox``/``boxes``.
- Parquet files or a ``datasets`` dataset saved to disk with the SAT schema: ``images``, ``question``,
  ``answers`` (the options), ``correct_answer``, ``question_type``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Union

from PIL import Image

from .config import IMAGE_FORMATS, InputConfig
from .frame import Frame, capped_frame, frame_for
from .input_checks import DEFAULT_INPUTS, confine, decode_json_line, iter_lines, iter_parquet_rows, open_bounded, sample_problem
from .options import split_options  # the one option parser (the tasks import it from here too)
from .png_writer import encode_png

ImageSource = Union[str, bytes]


@dataclass
class Sample:
    """One item to search on. ``images`` are paths (absolute or relative to ``image_root``) or bytes.

    ``boxes``: annotations ``{"label": str, "bbox": [x1, y1, x2, y2]}`` in ORIGINAL image pixels
    (the first image's frame). ``choices`` empty means a free-form answer.
    """

    id: str
    images: list[ImageSource]
    question: str
    answer: str
    choices: list[str] = field(default_factory=list)
    boxes: list[dict[str, Any]] = field(default_factory=list)
    task: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    image_root: str | None = None
    where: str = ""  # the row it came from ("file:line", "file row N"): failure reasons name it

    def to_record(self) -> dict[str, Any]:
        """A JSON-safe description (image bytes replaced by their hash) for run records."""
        return {
            "id": self.id,
            "images": [img if isinstance(img, str) else f"bytes:{hashlib.sha1(img).hexdigest()}" for img in self.images],
            "question": self.question,
            "answer": self.answer,
            "choices": list(self.choices),
            "boxes": self.boxes,
            "task": self.task,
            "metadata": self.metadata,
        }


@dataclass(frozen=True)
class SampleError:
    """A row that could not become a sample (or a sample whose image cannot be read)."""

    id: str
    reason: str

    def __str__(self) -> str:
        return f"{self.id}: {self.reason}"


class SampleLoadError(Exception):
    """Raised for input that cannot be read at all (missing file, unknown format)."""


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def resolve_image_path(src: str, image_root: str | None) -> Path:
    p = Path(src)
    if not p.is_absolute() and image_root:
        p = Path(image_root) / p
    return p


def open_image(src: ImageSource, image_root: str | None = None, inputs: InputConfig | None = None) -> Image.Image:
    """Open an image as RGB. Raises ``ValueError`` with a one-line reason on failure (also for a path
    outside ``image_root`` and an image over ``inputs.max_image_pixels``: ``input_checks``)."""
    return open_image_with_format(src, image_root, inputs)[0]


def open_image_with_format(
    src: ImageSource, image_root: str | None = None, inputs: InputConfig | None = None
) -> tuple[Image.Image, str | None]:
    """:func:`open_image`, plus the source's container format as Pillow names it (``"JPEG"``, ``"PNG"``, ...)."""
    inputs = inputs or DEFAULT_INPUTS
    try:
        if isinstance(src, (bytes, bytearray)):
            img = open_bounded(src, inputs.max_image_pixels, "bytes")
        else:
            path = confine(src, image_root, inputs.allow_outside_root)
            if not path.exists():
                raise ValueError(f"image not found: {path}")
            img = open_bounded(path, inputs.max_image_pixels, str(src))
        img.load()
    except ValueError:
        raise
    except Exception as exc:  # PIL raises many types for corrupt data
        where = "image bytes" if isinstance(src, (bytes, bytearray)) else str(src)
        raise ValueError(f"cannot read image {where}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    return img.convert("RGB"), img.format


@dataclass(frozen=True)
class EncodedImage:
    """An image resized to the teacher's frame and encoded once, shared by every prompt of a sample."""

    key: str  # content hash of the encoded bytes
    frame: Frame
    mime: str
    data: bytes

    @cached_property
    def data_url(self) -> str:
        """Base64 data URL, computed once (every request of the sample reuses it)."""
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


def frame_format(fmt: str, source_format: str | None) -> str:
    """The encoding of a frame: ``png`` or ``jpeg`` as asked; ``auto`` = JPEG for a JPEG source (already
    lossy: a lossless copy would only be larger), else lossless PNG."""
    if fmt == "auto":
        return "jpeg" if (source_format or "").upper() in ("JPEG", "MPO") else "png"
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"unknown image format {fmt!r} ({', '.join(IMAGE_FORMATS)})")
    return fmt


def encode_image(
    img: Image.Image, max_pixels: int, min_pixels: int = 56 * 56, fmt: str = "png", quality: int = 90,
    source_format: str | None = None,
) -> tuple[EncodedImage, Image.Image]:
    """Resize to the Qwen frame (multiple of 28, ≤ max_pixels) and encode. Returns the encoding and the resized image.

    ``fmt``: ``png``, ``jpeg`` (at ``quality``) or ``auto`` (see :func:`frame_format`; ``source_format`` is the
    container the image was read from)."""
    fmt = frame_format(fmt, source_format)
    frame = frame_for(img.width, img.height, max_pixels=max_pixels, min_pixels=min_pixels)
    resized = img if (frame.width, frame.height) == img.size else img.resize((frame.width, frame.height), Image.BICUBIC)
    if fmt == "jpeg":
        buf = io.BytesIO()
        resized.save(buf, format="JPEG", quality=quality)
        data, mime = buf.getvalue(), "image/jpeg"
    else:
        data, mime = encode_png(resized), "image/png"
    return EncodedImage(key=hashlib.sha1(data).hexdigest()[:16], frame=frame, mime=mime, data=data), resized


def load_frame(
    src: ImageSource, image_root: str | None, max_pixels: int, min_pixels: int, fmt: str, quality: int = 90,
    inputs: InputConfig | None = None, max_long_side: int = 0,
) -> tuple[EncodedImage, Image.Image]:
    """Read an image and prepare the teacher's frame of it (:func:`encode_image`). ``ValueError`` on bad input.
    ``max_long_side`` > 0: the frame is computed from the source capped to that longer side
    (:func:`~mcts_engine.grounding.capped_frame`) and the image resized to it in one step."""
    img, source_format = open_image_with_format(src, image_root, inputs)
    if max_long_side <= 0 or max(img.size) <= max_long_side:
        return encode_image(img, max_pixels=max_pixels, min_pixels=min_pixels, fmt=fmt, quality=quality,
                            source_format=source_format)
    frame = capped_frame(img.width, img.height, max_long_side, max_pixels, min_pixels)
    resized = img.resize((frame.width, frame.height), Image.BICUBIC)
    # already on the 28-pixel grid: encode_image keeps the size; the frame then gets the source's size back
    enc, resized = encode_image(resized, max_pixels=frame.width * frame.height, min_pixels=0, fmt=fmt, quality=quality,
                                source_format=source_format)
    return replace(enc, frame=frame), resized


class FrameCache:
    """Images prepared for the teacher's frame (decoded, resized, encoded), shared by the samples that
    use the same source image.

    Grounding benchmarks ask many questions about one screenshot (ScreenSpot, OS-ATLAS, web actions):
    without this each question would decode, resize and encode it again (tens of ms for a large
    screenshot). Keyed by the source — a file's resolved path, size and modification time, or the hash
    of in-memory bytes — and the frame settings; the ``capacity`` most recently used are kept.
    Thread-safe: samples prepared at the same time that need one image compute it once (the others
    wait for that result); a failure is not kept (each sample reports its own error).
    """

    def __init__(self, capacity: int = 16, max_long_side: int = 0) -> None:
        self.capacity = capacity
        self.max_long_side = int(max_long_side)  # an evaluation's longer-side cap (load_frame); 0 = none
        self._done: OrderedDict[tuple, tuple[EncodedImage, Image.Image]] = OrderedDict()
        self._pending: dict[tuple, threading.Event] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def source_key(src: ImageSource, image_root: str | None) -> tuple:
        if isinstance(src, (bytes, bytearray)):
            return ("bytes", len(src), hashlib.sha1(src).digest())
        path = resolve_image_path(src, image_root)
        try:
            st = path.stat()
        except OSError:
            return ("path", str(path))  # missing: open_image raises the one-line error
        return ("path", str(path.resolve()), st.st_size, st.st_mtime_ns)

    def get(
        self, src: ImageSource, image_root: str | None, max_pixels: int, min_pixels: int, fmt: str, quality: int = 90,
        inputs: InputConfig | None = None,
    ) -> tuple[EncodedImage, Image.Image]:
        """:func:`load_frame` of ``src``, computed once per source and settings (``inputs``: the input rules)."""
        key = (self.source_key(src, image_root), max_pixels, min_pixels, fmt, quality)
        while True:
            with self._lock:
                hit = self._done.get(key)
                if hit is not None:
                    self._done.move_to_end(key)
                    self.hits += 1
                    return hit
                waiting = self._pending.get(key)
                if waiting is None:
                    self._pending[key] = threading.Event()
                    self.misses += 1
                    break
            waiting.wait()  # another thread prepares it; then look again (it may have failed)
        try:
            out = load_frame(src, image_root, max_pixels, min_pixels, fmt, quality, inputs, self.max_long_side)
            with self._lock:
                self._done[key] = out
                while len(self._done) > self.capacity:
                    self._done.popitem(last=False)
            return out
        finally:
            with self._lock:
                self._pending.pop(key).set()


def image_hash(src: ImageSource, image_root: str | None = None, inputs: InputConfig | None = None) -> str:
    """Content hash of an image's source bytes (used to split train/val without leakage)."""
    if isinstance(src, (bytes, bytearray)):
        data = bytes(src)
    else:
        data = confine(src, image_root, (inputs or DEFAULT_INPUTS).allow_outside_root).read_bytes()
    return hashlib.sha1(data).hexdigest()


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------

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


def _finish(row: dict[str, Any], fields: dict[str, Any], sid: str, where: str, task: str, image_root: str | None) -> Sample:
    images = fields["images"]
    if not images or any(i is None or i == "" for i in images):
        raise ValueError(f"{where}: field 'image' is missing")
    if not fields["question"]:
        raise ValueError(f"{where}: field 'question' is missing")
    ans = fields["answer"]
    if ans is None or str(ans).strip() == "":
        raise ValueError(f"{where}: field 'answer' is missing")
    known = {"id", "image", "images", "question", "answer", "choices", "options", "bbox", "boxes", "conversations"}
    meta = {k: v for k, v in row.items() if k not in known and _json_safe(v)}
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


def _json_safe(v: Any) -> bool:
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
            yield _finish(row, fields, sid, where, task, root)
        except ValueError as exc:
            yield SampleError(sid, str(exc))


def _image_cell(cell: Any) -> ImageSource:
    """A parquet/datasets image cell: {"bytes", "path"} dict, raw bytes, a path string or a PIL image."""
    if isinstance(cell, dict):
        if cell.get("bytes"):
            return bytes(cell["bytes"])
        if cell.get("path"):
            return str(cell["path"])
        raise ValueError("image cell has neither bytes nor path")
    if isinstance(cell, (bytes, bytearray, str)):
        return cell if isinstance(cell, str) else bytes(cell)
    if isinstance(cell, Image.Image):
        buf = io.BytesIO()
        cell.save(buf, format="PNG")
        return buf.getvalue()
    raise ValueError(f"unsupported image cell type {type(cell).__name__}")


def _row_from_sat(row: dict[str, Any], where: str) -> dict[str, Any]:
    imgs = row.get("images")
    if imgs is None and row.get("image") is not None:
        imgs = [row["image"]]
    if not imgs:
        raise ValueError(f"{where}: field 'images' is missing")
    try:
        images = [_image_cell(c) for c in (imgs if isinstance(imgs, list) else [imgs])]
    except ValueError as exc:
        raise ValueError(f"{where}: field 'images': {exc}") from None
    options = row.get("answers") or row.get("choices") or []
    answer = row.get("correct_answer", row.get("answer"))
    return {
        "question": str(row.get("question", "")),
        "answer": answer,
        "choices": [str(o) for o in options],
        "images": images,
    }


def load_table(path: str | Path, image_root: str | None = None, task: str = "") -> Iterator[Sample | SampleError]:
    """Parquet file(s) or a ``datasets`` dataset saved with ``save_to_disk``, SAT schema (or plain columns)."""
    path = Path(path)
    if path.is_dir() and any((path / n).exists() for n in ("dataset_info.json", "state.json", "dataset_dict.json")):
        from datasets import load_from_disk

        ds = load_from_disk(str(path))
        if hasattr(ds, "keys") and not hasattr(ds, "features"):  # DatasetDict: take every split in order
            rows_iter = ((f"{path.name}[{split}]", ds[split]) for split in ds.keys())
        else:
            rows_iter = iter([(path.name, ds)])
        for label, d in rows_iter:
            d = d.cast_column("images", _undecoded(d, "images")) if "images" in d.column_names else d
            yield from _table_rows(label, (d[i] for i in range(len(d))), image_root or str(path), task)
        return
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise SampleLoadError(f"{path}: no parquet files found")
    for f in files:
        yield from _table_rows(f.name, iter_parquet_rows(f), image_root or str(f.parent), task)


def _undecoded(d: Any, column: str) -> Any:
    """The feature of ``column`` with image decoding turned off (we want bytes, not PIL objects)."""
    from datasets import Image as HFImage
    from datasets import Sequence as HFSequence

    feat = d.features[column]
    if isinstance(feat, HFImage):
        return HFImage(decode=False)
    if isinstance(feat, (list, HFSequence)):
        inner = feat[0] if isinstance(feat, list) else feat.feature
        if isinstance(inner, HFImage):
            return [HFImage(decode=False)] if isinstance(feat, list) else HFSequence(HFImage(decode=False))
    return feat


def _table_rows(
    label: str, rows: Iterator[dict[str, Any] | tuple[int, str]], image_root: str | None, task: str
) -> Iterator[Sample | SampleError]:
    """Table rows → samples; a row the reader could not read (``(index, reason)``) is a failure."""
    for i, row in enumerate(rows):
        if isinstance(row, tuple):
            yield SampleError(f"{Path(label).stem}-{row[0]}", row[1])
            continue
        where = f"{label} row {i}"
        sid = str(row.get("id") if row.get("id") is not None else f"{Path(label).stem}-{i}")
        try:
            fields = _row_from_sat(row, where)
            meta_row = {k: v for k, v in row.items() if k not in {"images", "image", "answers", "correct_answer"}}
            yield _finish(meta_row, fields, sid, where, task, image_root)
        except ValueError as exc:
            yield SampleError(sid, str(exc))


def load_samples(
    path: str | Path, image_root: str | None = None, task: str = "", inputs: InputConfig | None = None
) -> Iterator[Sample | SampleError]:
    """Dispatch on the input's shape: ``.jsonl``/``.json`` lines, ``.parquet``, or a directory. Every
    sample then passes :func:`vetted` (``inputs``: the bounds and the image-root rule)."""
    inputs = inputs or DEFAULT_INPUTS
    p = Path(path)
    if not p.exists():
        raise SampleLoadError(f"{p}: no such file or directory")
    from .loaders import load_benchmark  # benchmark layouts (BLINK, V*, ScreenSpot, OS-ATLAS, web actions, SAT)

    bench = load_benchmark(p, image_root, task, inputs)
    if bench is not None:
        return vetted(bench, inputs)
    if p.is_file() and p.suffix in {".jsonl", ".json"}:
        return vetted(load_jsonl(p, image_root, task, inputs), inputs)
    if p.is_dir() and not any(p.glob("*.parquet")) and any(p.glob("*.jsonl")):
        jsonls = sorted(p.glob("*.jsonl"))
        return vetted((s for f in jsonls for s in load_jsonl(f, image_root, task, inputs)), inputs)
    if p.suffix == ".parquet" or p.is_dir():
        return vetted(load_table(p, image_root, task), inputs)
    raise SampleLoadError(f"{p}: unsupported input (expected .jsonl, .parquet or a dataset directory)")


def vetted(items: Iterator[Sample | SampleError], inputs: InputConfig) -> Iterator[Sample | SampleError]:
    """``items`` with each sample checked against ``inputs``: text fields within their bounds and every
    image path inside the sample's image root (unless ``allow_outside_root``). A sample that breaks a
    rule becomes a :class:`SampleError` naming its row and field."""
    for item in items:
        why = sample_problem(item, inputs) if isinstance(item, Sample) else None
        yield item if why is None else SampleError(item.id, f"{item.where or item.id}: {why}")


def unique_samples(items: Iterator[Sample | SampleError], limit: int | None = None) -> Iterator[Sample | SampleError]:
    """The first ``limit`` rows (all if None), a repeated sample id turned into a ``SampleError``."""
    seen: set[str] = set()
    for i, item in enumerate(items):
        if limit is not None and i >= limit:
            return
        if isinstance(item, Sample):
            if item.id in seen:
                yield SampleError(item.id, f"duplicate sample id {item.id!r}")
                continue
            seen.add(item.id)
        yield item
