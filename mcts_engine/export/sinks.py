"""Row sinks (an I/O edge): stream rows into one parquet file (images as a per-row-group dictionary)
or JSON lines (images once under ``images/<sha1>.<ext>``). Both take rows with ``images`` as
:class:`~.images.ImageBlob` lists and count what they wrote.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def row_text_bytes(value: Any) -> int:
    """UTF-8 bytes of every string in a row (images excluded): the 'text size' of the benchmark."""
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, dict):
        return sum(row_text_bytes(v) for v in value.values())
    if isinstance(value, list):
        return sum(row_text_bytes(v) for v in value)
    return 0


class ParquetSink:
    """Streams rows into one parquet file.

    The ``images`` column is written as a parquet dictionary: each row group stores every distinct
    image once (a dictionary page) and rows hold indices, so a sample's image costs its bytes once
    however many chains repeat it. Readers see an ordinary ``list<struct<bytes, path>>`` (the arrow
    schema is not stored; the ``datasets`` features go in the file's key-value metadata). A row group
    closes at ``max_rows`` rows or once its distinct images reach ``max_image_bytes``."""

    def __init__(self, path: Path, features: Any, max_rows: int = 2000, max_image_bytes: int = 64 << 20) -> None:
        self.path = path
        self.features = features
        self.schema = features.arrow_schema
        self.max_rows = max_rows
        self.max_image_bytes = max_image_bytes
        self.rows = 0
        self._buf: list[dict[str, Any]] = []
        self._images: list[list[int]] = []  # per row: indices into _uniq
        self._uniq: list[bytes] = []
        self._index: dict[str, int] = {}
        self._uniq_bytes = 0
        self._writer: Any = None

    def add(self, row: dict[str, Any]) -> None:
        idx = []
        for blob in row["images"]:
            i = self._index.get(blob.sha1)
            if i is None:
                i = self._index[blob.sha1] = len(self._uniq)
                self._uniq.append(blob.data)
                self._uniq_bytes += len(blob.data)
            idx.append(i)
        self._images.append(idx)
        self._buf.append({k: v for k, v in row.items() if k != "images"})
        if len(self._buf) >= self.max_rows or self._uniq_bytes >= self.max_image_bytes:
            self._flush()

    def _table(self) -> Any:
        import pyarrow as pa

        rest = pa.schema([f for f in self.schema if f.name != "images"])
        table = pa.Table.from_pylist(self._buf, schema=rest)
        flat = [i for idx in self._images for i in idx]
        offsets = [0]
        for idx in self._images:
            offsets.append(offsets[-1] + len(idx))
        data = pa.DictionaryArray.from_arrays(pa.array(flat, pa.int32()), pa.array(self._uniq, pa.binary()))
        cells = pa.StructArray.from_arrays([data, pa.nulls(len(flat), pa.string())], names=["bytes", "path"])
        images = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), cells)
        cols = {f.name: (images if f.name == "images" else table.column(f.name)) for f in self.schema}
        return pa.table(cols)

    def _flush(self) -> None:
        import pyarrow.parquet as pq

        table = self._table()
        if self._writer is None:
            self._writer = pq.ParquetWriter(
                self.path, table.schema, compression="zstd", use_dictionary=True, store_schema=False,
                dictionary_pagesize_limit=1 << 30, write_statistics=False,
            )
        if self._buf:
            self._writer.write_table(table, row_group_size=len(self._buf) + 1)
        self.rows += len(self._buf)
        self._buf, self._images, self._uniq, self._index, self._uniq_bytes = [], [], [], {}, 0

    def close(self) -> None:
        self._flush()  # also creates an empty file with the schema when no row came
        self._writer.add_key_value_metadata(dict(self.schema.metadata or {}))
        self._writer.close()


class JsonlSink:
    """Rows as JSON lines; images written once to ``images/<sha1>.<ext>`` and referenced by path."""

    def __init__(self, path: Path, image_dir: Path) -> None:
        self.path = path
        self.image_dir = image_dir
        self.rows = 0
        self._fh = path.open("w", encoding="utf-8")

    def add(self, row: dict[str, Any]) -> None:
        paths = []
        for blob in row["images"]:
            name = f"{blob.sha1}.{blob.ext}"
            target = self.image_dir / name
            if not target.exists():
                self.image_dir.mkdir(parents=True, exist_ok=True)
                target.write_bytes(blob.data)
            paths.append(f"{self.image_dir.name}/{name}")
        self._fh.write(json.dumps({**row, "images": paths}, ensure_ascii=False) + "\n")
        self.rows += 1

    def close(self) -> None:
        self._fh.close()
