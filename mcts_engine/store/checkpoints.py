"""Trees in flight during a ``generate`` session: which are running, and checkpointing them.

:class:`Checkpointer` keeps the searches in flight and appends a checkpoint of each one that changed since
its last (``search.resume.snapshot``, one ``write`` + ``fsync`` for the batch, ``store.InflightLog``) every
``store.checkpoint_s`` seconds, and on demand: SIGINT/SIGTERM (:func:`route_signals`) and a failed append
flush every tree before the session stops. A checkpoint is taken on the event loop between two steps, so
every tree is consistent. A tree leaves the set when it is stored in trees.jsonl (its checkpoints are dead
weight from then on) or when its sample fails (its checkpoint is dropped on disk: a retry starts afresh).
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..search.mcts import TreeSearch
from ..search.resume import TrackedTeacher, snapshot
from .run import INFLIGHT, TREES, InflightLog, StoreWriteError


class Interrupted(RuntimeError):
    """SIGINT/SIGTERM stopped the run after the trees in flight were checkpointed (exit 128 + signal)."""

    def __init__(self, signum: int, saved: int, run: Path) -> None:
        self.signum, self.saved = signum, saved
        super().__init__(
            f"interrupted by {signal.Signals(signum).name}: {saved} tree(s) in flight checkpointed to {run / INFLIGHT}, "
            f"finished samples kept in {run / TREES}; rerun the same command to resume"
        )

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@dataclass
class InFlight:
    """A tree in flight: its search, the teacher view that counts its unanswered requests, and the
    :meth:`signature` of its last checkpoint on disk."""

    search: TreeSearch
    teacher: TrackedTeacher
    saved: tuple[int, ...] | None = None
    earlier_s: float = 0.0  # search time of the sessions before this one
    started: float = field(default_factory=time.perf_counter)

    def signature(self) -> tuple[int, ...]:
        """Changes whenever the search received a reply, added a node or backed up a value."""
        t, c = self.search.tree, self.search.counters
        return (len(t.nodes), len(t.rejected), t.root.visits, c.calls - self.teacher.waiting, c.choices,
                c.simulations, getattr(c, "errors", 0))

    @property
    def on_disk(self) -> bool:
        return self.saved == self.signature()

    def snapshot(self) -> dict[str, Any]:
        """The checkpoint record; ``stats.seconds`` is the search time of every session so far."""
        record = snapshot(self.search.tree, self.search.counters, self.teacher.waiting)
        record["stats"]["seconds"] = round(self.earlier_s + time.perf_counter() - self.started, 4)
        return record

    @property
    def empty(self) -> bool:
        """Nothing to keep yet: no node, no rejected step, no reply."""
        nodes, rejected, _, calls = self.signature()[:4]
        return nodes == 1 and rejected == 0 and calls == 0


class Checkpointer:
    """The searches in flight of one session and their checkpoints in ``log``."""

    def __init__(self, log: InflightLog, interval_s: float) -> None:
        self.log, self.interval_s = log, interval_s
        self.live: dict[str, InFlight] = {}
        self.written = 0  # checkpoint records appended this session

    def track(self, sample_id: str, search: TreeSearch, teacher: TrackedTeacher, resumed: bool) -> None:
        """A search starts; ``resumed``: it continues the checkpoint on disk (nothing new to write yet)."""
        live = self.live[sample_id] = InFlight(search, teacher)
        if resumed:
            live.saved = live.signature()
            live.earlier_s = float(search.tree.stats.get("seconds", 0.0) or 0.0)

    def finished(self, sample_id: str) -> None:
        """The tree is stored in trees.jsonl."""
        self.live.pop(sample_id, None)
        self.log.forget(sample_id)

    def failed(self, sample_id: str, reason: str) -> None:
        """The sample failed: drop its checkpoint (may raise :class:`StoreWriteError`)."""
        self.live.pop(sample_id, None)
        self.log.drop(sample_id, reason)

    def saved(self) -> int:
        """Trees in flight with something to keep whose current state is on disk."""
        return sum(1 for live in self.live.values() if live.on_disk and not live.empty)

    def checkpoint(self) -> int:
        """Append a checkpoint of every tree in flight that changed since its last one (a tree that has
        nothing yet is skipped); returns how many trees in flight with something to keep are on disk as they
        are now (all of them). Raises :class:`StoreWriteError` (nothing torn left behind)."""
        batch, sigs = {}, {}
        for sid, live in self.live.items():
            sig = live.signature()
            if sig != live.saved and not live.empty:
                batch[sid] = live.snapshot()
                sigs[sid] = sig
        self.log.write(batch)
        for sid, sig in sigs.items():
            self.live[sid].saved = sig
        self.written += len(batch)
        return sum(1 for live in self.live.values() if not live.empty)

    def flush(self) -> int:
        """:meth:`checkpoint` as far as the disk allows; returns how many trees in flight are on disk."""
        try:
            return self.checkpoint()
        except StoreWriteError:
            return self.saved()

    async def run(self, on_error: Callable[[StoreWriteError], None]) -> None:
        """Checkpoint every ``interval_s`` until cancelled, or until a write fails (``on_error``)."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.checkpoint()
            except StoreWriteError as exc:
                on_error(exc)
                return


def route_signals(handler: Callable[[int], Any]) -> Callable[[], None]:
    """Send SIGINT and SIGTERM to ``handler(signum)`` on the running event loop (main thread only; else a
    no-op). Returns the function that puts the previous handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        old = signal.getsignal(sig)
        try:
            loop.add_signal_handler(sig, handler, sig)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        previous[sig] = old

    def restore() -> None:
        for sig, old in previous.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, old)

    return restore


__all__ = ["Checkpointer", "InFlight", "Interrupted", "route_signals"]
