"""Generic tables → :class:`~mcts_engine.samples.types.Sample`: parquet file(s) or a ``datasets`` dataset saved
with ``save_to_disk`` (an I/O edge).

The SAT schema (``images``, ``question``, ``answers`` = the options, ``correct_answer``, ``question_type``) or plain
columns. Image cells arrive undecoded (bytes or paths, never PIL objects); a row the reader cannot read, or one that
cannot become a sample, is a :class:`~mcts_engine.samples.types.SampleError` naming the file and row. The table
readers the benchmark loaders share (:func:`iter_table`, :func:`table_columns`) live here too.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from .bounds import iter_parquet_rows
from .jsonl import finish_sample
from .types import ImageSource, Sample, SampleError, SampleLoadError


def image_cell(cell: Any) -> ImageSource:
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
        images = [image_cell(c) for c in (imgs if isinstance(imgs, list) else [imgs])]
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
            d = d.cast_column("images", undecoded(d, "images")) if "images" in d.column_names else d
            yield from table_rows(label, (d[i] for i in range(len(d))), image_root or str(path), task)
        return
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise SampleLoadError(f"{path}: no parquet files found")
    for f in files:
        yield from table_rows(f.name, iter_parquet_rows(f), image_root or str(f.parent), task)


def undecoded(d: Any, column: str) -> Any:
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


def table_rows(
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
            yield finish_sample(meta_row, fields, sid, where, task, image_root)
        except ValueError as exc:
            yield SampleError(sid, str(exc))


def table_columns(path: Path) -> tuple[set[str], str] | None:
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


def iter_table(path: Path, image_columns: tuple[str, ...]) -> Iterator[tuple[str, Iterator[dict[str, Any]], str]]:
    """``(label, rows, default image root)`` per parquet file or dataset split; image columns undecoded."""
    if path.is_dir() and any((path / n).exists() for n in ("dataset_info.json", "state.json", "dataset_dict.json")):
        from datasets import load_from_disk

        ds = load_from_disk(str(path))
        parts = [(f"{path.name}[{s}]", ds[s]) for s in ds.keys()] if hasattr(ds, "keys") and not hasattr(ds, "features") else [(path.name, ds)]
        for label, d in parts:
            for col in image_columns:
                if col in d.column_names:
                    d = d.cast_column(col, undecoded(d, col))
            yield label, (d[i] for i in range(len(d))), str(path)
        return
    files = [path] if path.is_file() else sorted(path.glob("*.parquet"))
    for f in files:
        yield f.name, iter_parquet_rows(f, batch_size=32), str(f.parent)
