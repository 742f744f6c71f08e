"""Failed samples grouped by kind: the end-of-run summary on screen and the report's failure table.

A failure record (``failures.jsonl``) is ``{"id", "reason", "time"}``. Its *kind* is the reason with
what differs between samples taken out, so that eleven samples failing the same way read as one row of
count 11: the sample id (older runs wrote reasons as ``"<id>: <reason>"``; the id is stripped wherever it
appears as a prefix), file paths (``/data/img7.png`` → ``<file>``), then positions in a file (``row 12``,
``line 7``, ``element 3``, ``x.jsonl:12:`` become ``row N``, …) and counters (``4 of 10``). Pure functions over plain records.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

KIND_MAX = 160  # characters of a kind shown

_POSITIONS = (
    # a file path (with a directory; not a URL's //host) ending in an extension: one kind for every file
    (re.compile(r"(?<![:\w/.~])(?:~|\.{1,2})?/?(?:[^\s/'\"]+/)+[^\s/'\"]+\.[A-Za-z0-9]{1,5}\b"), "<file>"),
    (re.compile(r"\b(row|line|element|item|index)\s+\d+\b"), r"\1 N"),
    (re.compile(r"\b\d+ of \d+\b"), "N of N"),  # counters ("failure 4 of 10")
    (re.compile(r"(\.jsonl?|\.parquet|\.json):\d+\b"), r"\1:N"),
)


def failure_kind(reason: str, sample_id: str | None = None) -> str:
    """The grouping key of one failure: ``reason`` without the sample id and positions, one line."""
    text = " ".join(str(reason).split())
    sid = "" if sample_id is None else str(sample_id)
    if sid:
        for _ in range(2):  # "<id>: <id>: reason" (a reason prefixed twice) strips fully
            if text.startswith(sid) and text[len(sid):len(sid) + 1] in (":", ""):
                text = text[len(sid) + 1:].strip()
        text = text.replace(f"'{sid}'", "'…'").replace(f'"{sid}"', '"…"')
    for pattern, repl in _POSITIONS:
        text = pattern.sub(repl, text)
    text = text or "(no reason given)"
    return text if len(text) <= KIND_MAX else text[: KIND_MAX - 1] + "…"


@dataclass(frozen=True)
class FailureGroup:
    kind: str
    count: int
    example: str  # one sample id of this kind

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "count": self.count, "example": self.example}


def open_failures(records: Iterable[dict[str, Any]], finished: set[str] | None = None) -> dict[str, str]:
    """The last recorded reason per sample id, for samples that have not finished since."""
    last: dict[str, str] = {}
    for rec in records:
        last[str(rec.get("id"))] = str(rec.get("reason", ""))
    return {sid: r for sid, r in last.items() if not finished or sid not in finished}


def group_failures(failures: dict[str, str] | Iterable[tuple[str, str]]) -> list[FailureGroup]:
    """``{sample id: reason}`` (or pairs) → groups by kind, the largest first (ties: by kind). A group's example
    is its smallest sample id, so the same failures give the same lines whatever order samples failed in."""
    pairs = failures.items() if isinstance(failures, dict) else failures
    counts: dict[str, list[Any]] = {}
    for sid, reason in pairs:
        kind = failure_kind(reason, sid)
        if kind in counts:
            counts[kind][0] += 1
            counts[kind][1] = min(counts[kind][1], sid)
        else:
            counts[kind] = [1, sid]
    return [FailureGroup(k, c, ex) for k, (c, ex) in sorted(counts.items(), key=lambda kv: (-kv[1][0], kv[0]))]


def format_groups(groups: list[FailureGroup], limit: int = 10) -> list[str]:
    """Lines for the terminal: ``  11 × teacher error: … (e.g. s3)``."""
    lines = [f"  {g.count:>5} × {g.kind}   (e.g. {g.example})" for g in groups[:limit]]
    rest = groups[limit:]
    if rest:
        lines.append(f"  … {sum(g.count for g in rest)} more in {len(rest)} other kind(s)")
    return lines


__all__ = ["failure_kind", "FailureGroup", "open_failures", "group_failures", "format_groups"]
