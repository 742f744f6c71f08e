"""Task registry: ``get_task("sat2")``, and the benchmark layouts the task modules recognise.

Every module of this package is found by :func:`pkgutil.iter_modules` (no list to keep): importing it registers
its task classes (``@register``). A module that owns a benchmark's file layout also provides the layout hook:

- ``LAYOUT_PRIORITY: int`` — the order modules are asked in (lower first; ties by module name);
- ``detect(probe: InputProbe) -> bool`` — is this input that layout? (names, columns, first rows; never image
  content; :class:`~mcts_engine.samples.probe.InputProbe` reads each fact once for all modules);
- ``load(probe, image_root, task, inputs) -> Iterator[Sample | SampleError]`` — its samples. Like every loader,
  it never raises on a bad row: it yields a ``SampleError`` naming the file, row and field.

:func:`load_benchmark` asks the modules in order and returns the first match's samples (None: not a benchmark
layout; ``samples.load_samples`` then tries ViGoRL's released layout and the generic readers). Every box the
loaders produce is ORIGINAL-pixel xyxy (``samples.boxes.to_xyxy``, once, at load); the source box is kept in
``metadata["source_bbox"]``. Adding a task is one module here (its class, prompts, verifier wiring and, for a new
file layout, the hook) plus one recipe.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from ..config import InputConfig
from ..samples.probe import InputProbe
from ..samples.types import Sample, SampleError
from .base import Task

TASKS: dict[str, type[Task]] = {}
_MODULES: list[ModuleType] = []


def register(cls: type[Task]) -> type[Task]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    TASKS[cls.name] = cls
    return cls


def _load_all() -> list[ModuleType]:
    """Import every module of the package once (each registers its tasks); the modules, in discovery order."""
    if not _MODULES:
        names = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
        _MODULES.extend([importlib.import_module(f"{__name__}.{name}") for name in names])
    return _MODULES


def layout_modules() -> list[ModuleType]:
    """The modules that provide a layout hook (``detect`` and ``load``), in the order they are asked."""
    mods = [m for m in _load_all() if callable(getattr(m, "detect", None)) and callable(getattr(m, "load", None))]
    return sorted(mods, key=lambda m: (int(getattr(m, "LAYOUT_PRIORITY", 100)), m.__name__))


def load_benchmark(
    path: str | Path | InputProbe, image_root: str | None = None, task: str = "", inputs: InputConfig | None = None
) -> Iterator[Sample | SampleError] | None:
    """The samples of a benchmark-layout input, or None if no task module recognises ``path``.
    ``inputs``: the rules for what the loaders read while loading (image headers, composites)."""
    probe = path if isinstance(path, InputProbe) else InputProbe(Path(path))
    if not (probe.is_dir or probe.is_file):
        return None
    for mod in layout_modules():
        if mod.detect(probe):
            return mod.load(probe, image_root, task, inputs)
    return None


def task_names() -> list[str]:
    _load_all()
    return sorted(TASKS)


def get_task(name: str, options: dict[str, Any] | None = None) -> Task:
    _load_all()
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r} (known: {', '.join(sorted(TASKS))})")
    return TASKS[name](options)


__all__ = ["Task", "TASKS", "get_task", "register", "task_names", "load_benchmark", "layout_modules"]
