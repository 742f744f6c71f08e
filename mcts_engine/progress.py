"""Live progress of a run (``generate`` and ``eval``), updated on every teacher reply.

What it shows: samples done/total (the total is counted up front, cheaply: :func:`count_samples`), trees
in flight, calls/s, choices/s, tokens/s, solve rate, failures and an ETA. The ETA comes from the call
rate, not the tree rate (trees finish in bursts; calls arrive steadily)::

    calls_left = samples_left × (calls per finished tree) − (calls already made by trees in flight)
    ETA        = calls_left / (calls per second so far)

Unknown until the first tree finishes (calls per tree is then measured). Updates arrive per reply
through :class:`CountingTeacher`, a thin proxy around the teacher, so the search never knows about them.

On a terminal: a tqdm bar. Without one (a log file, CI) or with ``progress=False``: one plain status
line every ``interval_s`` seconds (a daemon timer thread, so a slow teacher still gets its lines), and
a last one at the end. ``enabled=False`` together with ``interval_s=0`` shows nothing.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

STATUS_INTERVAL_S = 10.0  # default seconds between plain status lines (no TTY or --no-progress)


# --------------------------------------------------------------------------------------------
# Pure pieces
# --------------------------------------------------------------------------------------------


def eta_seconds(snap: dict[str, Any]) -> float | None:
    """Seconds left at the measured call rate (see the module docstring), or None while unknown."""
    total, done = snap.get("total"), snap["done"]
    if total is None or snap["finished"] == 0 or snap["calls"] == 0 or snap["elapsed_s"] <= 0:
        return None
    per_tree = snap["calls_finished"] / snap["finished"]
    in_flight_calls = max(0, snap["calls"] - snap["calls_finished"] - snap["calls_failed"])
    left = max(0.0, (total - done) * per_tree - in_flight_calls)
    return left / (snap["calls"] / snap["elapsed_s"])


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"


def format_status(snap: dict[str, Any]) -> str:
    """One status line (the plain-text form; the bar shows the same fields as its postfix)."""
    total = "?" if snap.get("total") is None else str(snap["total"])
    return f"{snap['desc']}: {snap['done']}/{total} {snap['unit']}s · " + postfix(snap)


def postfix(snap: dict[str, Any]) -> str:
    el = max(1e-9, snap["elapsed_s"])
    rate = f"{snap['solved'] / snap['finished']:.0%}" if snap["finished"] else "-"
    return (f"{snap['in_flight']} in flight · {snap['calls'] / el:.1f} calls/s · {snap['choices'] / el:.1f} choices/s · "
            f"{(snap['prompt_tokens'] + snap['completion_tokens']) / el:.0f} tok/s · {snap['solve_label']} {rate} · "
            f"{snap['failed']} failed · ETA {fmt_duration(eta_seconds(snap))}")


def resume_line(done: int, total: int | None) -> str:
    """What a resumed run says before it starts ("N of M already done, resuming K")."""
    if total is None:
        return f"{done} already done, resuming the rest"
    if done >= total:
        return f"all {total} samples already done: nothing to do"
    return f"{done} of {total} already done, resuming {total - done}"


# --------------------------------------------------------------------------------------------
# Counting a dataset up front (no image is decoded)
# --------------------------------------------------------------------------------------------


def _lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def _json_rows(path: Path) -> int:
    """Samples in a grounding ``.json`` list: OS-ATLAS rows with ``elements`` count one per element."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list):
        return 1  # the loader reports it as one failure
    return sum(len(r["elements"]) if isinstance(r, dict) and isinstance(r.get("elements"), list) else 1 for r in data)


def _table_rows(path: Path) -> int | None:
    if path.is_dir() and any((path / n).exists() for n in ("dataset_info.json", "state.json", "dataset_dict.json")):
        from datasets import load_from_disk

        ds = load_from_disk(str(path))
        return sum(len(ds[s]) for s in ds.keys()) if hasattr(ds, "keys") and not hasattr(ds, "features") else len(ds)
    import pyarrow.parquet as pq

    files = [path] if path.is_file() else sorted(path.glob("*.parquet"))
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files) if files else None


def count_samples(path: str | Path, limit: int | None = None) -> int | None:
    """How many samples (rows the loader yields, failures included) ``path`` holds, read cheaply: JSONL
    lines, parquet metadata, a ``save_to_disk`` dataset's length, grounding JSON lists (ScreenSpot,
    OS-ATLAS), a V* folder's images. Never decodes an image. None when the layout is unknown."""
    p = Path(path)
    try:
        n = _count(p)
    except Exception:  # counting is best effort: the loader reports bad input itself
        n = None
    if limit is not None:
        return min(n, limit) if n is not None else None
    return n


def _count(p: Path) -> int | None:
    from .tasks.screenspot import SCREENSPOT_FILE
    from .tasks.vstar import VSTAR_IMAGE_EXT

    if p.is_file():
        if p.suffix == ".jsonl":
            return _lines(p)
        if p.suffix == ".json":
            return _json_rows(p)
        if p.suffix == ".parquet":
            return _table_rows(p)
        return None
    if not p.is_dir():
        return None
    shots = sorted(f for f in p.glob("*.json") if SCREENSPOT_FILE.search(f.name))
    if shots:
        return sum(_json_rows(f) for f in shots)
    ann = p / "annotations"
    if ann.is_dir() and any(ann.glob("*.json")):
        return sum(_json_rows(f) for f in sorted(ann.glob("*.json")))
    if (p / "test_questions.jsonl").exists():
        return _lines(p / "test_questions.jsonl")
    cats = [p / c for c in ("direct_attributes", "relative_position") if (p / c).is_dir()]
    if cats:
        return sum(1 for c in cats for f in c.iterdir() if f.suffix.lower() in VSTAR_IMAGE_EXT)
    if any(p.glob("*.parquet")) or any((p / n).exists() for n in ("dataset_info.json", "state.json", "dataset_dict.json")):
        return _table_rows(p)
    jsons = sorted(p.glob("*.json"))
    jsonls = sorted(p.glob("*.jsonl"))
    if jsons and not jsonls:
        return sum(_json_rows(f) for f in jsons)
    if jsonls:
        return sum(_lines(f) for f in jsonls)
    return None


# --------------------------------------------------------------------------------------------
# The live object
# --------------------------------------------------------------------------------------------


class Progress:
    """Counters of this session, shown live; every method is cheap and safe to call per reply."""

    def __init__(self, total: int | None, already: int = 0, enabled: bool = True, *, desc: str = "generate",
                 unit: str = "sample", solve_label: str = "solved", interval_s: float = STATUS_INTERVAL_S,
                 stream: IO[str] | None = None, tty: bool | None = None) -> None:
        self.t0 = time.perf_counter()
        self.total, self.desc, self.unit, self.solve_label = total, desc, unit, solve_label
        self.done = already
        self.finished = self.solved = self.failed = 0
        self.calls = self.choices = self.prompt_tokens = self.completion_tokens = 0
        self.calls_finished = self.calls_failed = 0  # calls of trees that finished / failed (for the ETA)
        self._calls_of: dict[str, int] = {}  # calls per tree in flight, by sample id
        self.in_flight: set[str] = set()
        self.stream = stream if stream is not None else sys.stderr
        self.bar: Any = None
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        self._closed = False
        self.interval_s = interval_s
        is_tty = tty if tty is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        if enabled and is_tty:
            from tqdm import tqdm

            # tqdm's own rate/remaining (per finished sample) is left out: the postfix has the call-rate ETA
            self.bar = tqdm(total=total, initial=already, unit=unit, dynamic_ncols=True, desc=desc, file=self.stream,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
        elif interval_s > 0:
            self._timer = threading.Thread(target=self._tick, name="progress-status", daemon=True)
            self._timer.start()

    # --- events -------------------------------------------------------------------------------
    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def begin(self, sample_id: str) -> None:
        """A tree (or eval item) starts asking the teacher."""
        self.in_flight.add(sample_id)
        self._calls_of.setdefault(sample_id, 0)
        self._refresh(0)

    def on_reply(self, choices: int, prompt_tokens: int, completion_tokens: int, sample_id: str | None = None) -> None:
        """One teacher reply arrived (see :class:`CountingTeacher`)."""
        self.calls += 1
        self.choices += choices
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        if sample_id is not None and sample_id in self._calls_of:
            self._calls_of[sample_id] += 1
        self._refresh(0)

    def done_one(self, sample_id: str, solved: bool, calls: int | None = None) -> None:
        """A tree finished (``calls``: its own count, else what the proxy attributed to it)."""
        self.in_flight.discard(sample_id)
        attributed = self._calls_of.pop(sample_id, 0)
        self.done += 1
        self.finished += 1
        self.solved += int(solved)
        self.calls_finished += attributed if calls is None else calls
        self._refresh(1)

    def update(self, tree: Any) -> None:
        """A finished ``Tree`` (generate)."""
        self.done_one(str(tree.sample_id), bool(tree.solved), int(tree.stats.get("calls", 0)) or None)

    def fail(self, sample_id: str) -> None:
        self.in_flight.discard(sample_id)
        self.calls_failed += self._calls_of.pop(sample_id, 0)
        self.done += 1
        self.failed += 1
        self._refresh(1)

    def skip(self) -> None:
        """A sample finished in an earlier session."""
        self.done += 1
        self._refresh(1)

    # --- display ------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "desc": self.desc, "unit": self.unit, "solve_label": self.solve_label, "total": self.total,
            "done": self.done, "finished": self.finished, "solved": self.solved, "failed": self.failed,
            "in_flight": len(self.in_flight), "calls": self.calls, "choices": self.choices,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "calls_finished": self.calls_finished, "calls_failed": self.calls_failed,
            "elapsed_s": time.perf_counter() - self.t0,
        }

    def _refresh(self, advanced: int) -> None:
        if self.bar is None:
            return
        self.bar.set_postfix_str(postfix(self.snapshot()), refresh=False)
        self.bar.update(advanced)  # tqdm redraws at most every mininterval

    def _tick(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._print()

    def _print(self) -> None:
        try:
            print(format_status(self.snapshot()), file=self.stream, flush=True)
        except ValueError:  # the stream was closed under us (interpreter shutdown)
            pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self.bar is not None:
            self.bar.set_postfix_str(postfix(self.snapshot()), refresh=False)
            self.bar.close()
        elif self._timer is not None:
            self._timer.join(timeout=1.0)
            self._print()


class CountingTeacher:
    """The teacher, reporting every reply to a :class:`Progress`; everything else is passed through."""

    def __init__(self, inner: Any, progress: Progress) -> None:
        self._inner, self._progress = inner, progress

    async def complete(self, state: Any, n: int) -> Any:
        reply = await self._inner.complete(state, n)
        try:
            sid = str(state.context.sample.id)
        except AttributeError:
            sid = None
        self._progress.on_reply(len(reply.choices), int(reply.prompt_tokens or 0),
                                sum(int(c.completion_tokens or 0) for c in reply.choices), sid)
        return reply

    def __getattr__(self, name: str) -> Any:  # name, check, aclose, describe, replays_in_order, ...
        return getattr(self._inner, name)


__all__ = ["Progress", "CountingTeacher", "count_samples", "format_status", "eta_seconds", "resume_line",
           "STATUS_INTERVAL_S"]
