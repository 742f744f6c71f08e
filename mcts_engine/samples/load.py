"""One entry point for every input: :func:`load_samples` (an I/O edge).

It asks the task registry first (:func:`mcts_engine.tasks.load_benchmark`: each task module recognises its own
benchmark layout), then ViGoRL's released layout (``vigorl``), then the generic readers: ``.jsonl``/``.json``
lines (``jsonl``), ``.parquet`` or a dataset directory (``parquet``). Every sample then passes :func:`vetted`
(the input rules of ``bounds``). The registry is imported when called, never at import time: ``samples`` sits below
``tasks`` (tasks import samples; this one call looks up, at run time, the layouts the task modules provide).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..config import InputConfig
from . import vigorl
from .bounds import DEFAULT_INPUTS, sample_problem
from .jsonl import load_jsonl
from .parquet import load_table
from .probe import InputProbe
from .types import Sample, SampleError, SampleLoadError


def load_samples(
    path: str | Path, image_root: str | None = None, task: str = "", inputs: InputConfig | None = None
) -> Iterator[Sample | SampleError]:
    """Dispatch on the input's shape: ``.jsonl``/``.json`` lines, ``.parquet``, or a directory. Every
    sample then passes :func:`vetted` (``inputs``: the bounds and the image-root rule)."""
    inputs = inputs or DEFAULT_INPUTS
    p = Path(path)
    if not p.exists():
        raise SampleLoadError(f"{p}: no such file or directory")
    from ..tasks import load_benchmark  # the task modules' layouts (BLINK, V*, ScreenSpot, OS-ATLAS, web actions, SAT)

    probe = InputProbe(p)
    bench = load_benchmark(probe, image_root, task, inputs)
    if bench is None and vigorl.detect(probe):  # ViGoRL's released JSONL, any task
        bench = vigorl.load(probe, image_root, task, inputs)
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
