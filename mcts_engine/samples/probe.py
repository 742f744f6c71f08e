"""What an input path looks like, read lazily and at most once: the facts the task modules' layout hooks test.

``mcts_engine.tasks.load_benchmark`` builds one :class:`InputProbe` per input and hands it to each task module's
``detect(probe)`` in turn, then to the chosen module's ``load(probe, ...)``; so a directory is listed, a parquet
schema read and a ``.json`` parsed once however many modules ask (a loader takes the parsed document from the probe
instead of reading the file again). Detection only looks at names, columns and first rows, never at image content.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from .jsonl import first_jsonl_row, safe_json
from .parquet import table_columns


class InputProbe:
    """Lazily computed facts about ``path`` (a file or a directory)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.is_dir = path.is_dir()
        self.is_file = not self.is_dir and path.is_file()
        self.suffix = path.suffix

    @cached_property
    def jsons(self) -> list[Path]:
        """A directory's ``*.json`` files, sorted (``[]`` for a file)."""
        return sorted(self.path.glob("*.json")) if self.is_dir else []

    @cached_property
    def jsonls(self) -> list[Path]:
        """A directory's ``*.jsonl`` files, sorted; a ``.jsonl`` file itself."""
        if self.is_dir:
            return sorted(self.path.glob("*.jsonl"))
        return [self.path] if self.suffix == ".jsonl" else []

    @cached_property
    def columns(self) -> set[str] | None:
        """Column names of a parquet file, a directory of them or a ``save_to_disk`` dataset (None: not a table)."""
        if not (self.is_dir or self.suffix == ".parquet"):
            return None
        cols = table_columns(self.path)
        return None if cols is None else cols[0]

    @cached_property
    def first_json(self) -> Any:
        """The parsed ``.json`` file, or a directory's first ``*.json`` (None if unreadable or absent)."""
        if self.is_dir:
            return safe_json(self.jsons[0]) if self.jsons else None
        return safe_json(self.path) if self.suffix == ".json" else None

    @cached_property
    def first_row(self) -> dict[str, Any] | None:
        """The first readable JSON object of the (first) ``.jsonl`` file."""
        return first_jsonl_row(self.jsonls[0]) if self.jsonls else None


__all__ = ["InputProbe"]
