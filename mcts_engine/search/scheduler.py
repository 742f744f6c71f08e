"""Many trees in flight under one event loop.

The scheduler pulls samples lazily from a loader, keeps up to ``trees_in_flight`` searches running
(each with its own simulations in flight), and hands every finished or failed sample to callbacks the
moment it is done, so the caller can persist it immediately. Teacher-side concurrency is bounded by the
teacher itself (its own semaphore); this module bounds memory (prepared images) and fairness.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


# This many samples (or eval items) in a row with nothing usable from the teacher means it is down: the run stops
# (``Aborted``) and keeps what it finished. One threshold for generate and eval.
MAX_CONSECUTIVE_TEACHER_FAILURES = 8


class Aborted(RuntimeError):
    """The run stopped on purpose (e.g. the teacher is down); finished samples are kept."""


async def run_bounded(
    items: Iterable[T],
    work: Callable[[T], Awaitable[Any]],
    limit: int,
    stop: asyncio.Event | None = None,
) -> None:
    """Run ``work(item)`` for every item with at most ``limit`` in flight; items are pulled lazily.

    ``work`` must handle its own errors (record them); an exception escaping it stops the loop,
    waits for the other jobs in flight, then propagates. Setting ``stop`` stops pulling new items.
    """
    sem = asyncio.Semaphore(max(1, limit))
    running: set[asyncio.Task] = set()
    failure: list[BaseException] = []

    def done(t: asyncio.Task) -> None:
        running.discard(t)
        sem.release()
        if not t.cancelled() and t.exception() is not None:
            failure.append(t.exception())  # type: ignore[arg-type]

    try:
        for item in items:
            await sem.acquire()
            if failure or (stop is not None and stop.is_set()):
                sem.release()
                break
            task = asyncio.create_task(work(item))
            running.add(task)
            task.add_done_callback(done)
        if running:
            await asyncio.gather(*list(running), return_exceptions=True)
    finally:
        for t in list(running):
            t.cancel()
    if failure:
        raise failure[0]
