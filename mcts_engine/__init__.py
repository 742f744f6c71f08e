"""mcts-engine: grounded Monte Carlo Tree Search data engine for vision-language models.

The public API: what a library user needs to run the engine from Python rather than from the CLI. A run is
``build_run_config(load_recipe(None, "sat2"), ["search.simulations=16"])`` → ``run_generate(cfg, out_dir)``
(trees in a run directory, read back with ``RunStore``/``Tree``) → ``export_run`` (training parquet) and
``build_report`` (an HTML page). A teacher is anything that satisfies the ``Teacher`` protocol
(``OpenAITeacher`` for an OpenAI-compatible server, ``SimTeacher`` a scripted stand-in, ``make_teacher`` picks by
``teacher.kind``); a task is a ``Task`` found by name in the registry (``get_task``, ``task_names``,
``register_task``); the verifiers score answers.

Every name is imported on first use (PEP 562 ``__getattr__``), so ``import mcts_engine`` costs nothing and never
imports torch or transformers; the trainer (``mcts_engine.train``) is not re-exported here for the same reason.
Anything not in ``__all__`` is internal and may move.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name → (module, attribute): one row per name
_EXPORTS: dict[str, tuple[str, str]] = {
    # configuration
    "RunConfig": ("config", "RunConfig"),
    "TeacherConfig": ("config", "TeacherConfig"),
    "SearchConfig": ("config", "SearchConfig"),
    "MultiTurnConfig": ("config", "MultiTurnConfig"),
    "ConfigError": ("config", "ConfigError"),
    "build_run_config": ("config", "build_run_config"),
    "load_recipe": ("config", "load_recipe"),
    "bundled_recipes": ("config", "bundled_recipes"),
    # generation and the run directory
    "run_generate": ("generate", "run_generate"),
    "default_data": ("generate", "default_data"),
    "RunStore": ("store", "RunStore"),
    "Tree": ("search.tree", "Tree"),
    "Node": ("search.tree", "Node"),
    # export and report
    "ExportConfig": ("export.linearize", "ExportConfig"),
    "export_run": ("export.formats", "export_run"),
    "build_report": ("export.report", "build_report"),
    # teachers
    "Teacher": ("teachers.base", "Teacher"),
    "TeacherError": ("teachers.base", "TeacherError"),
    "TeacherUnavailable": ("teachers.base", "TeacherUnavailable"),
    "make_teacher": ("teachers", "make_teacher"),
    "OpenAITeacher": ("teachers.openai_compat", "OpenAITeacher"),
    "SimTeacher": ("teachers.sim", "SimTeacher"),
    # tasks
    "Task": ("tasks.base", "Task"),
    "get_task": ("tasks", "get_task"),
    "task_names": ("tasks", "task_names"),
    "register_task": ("tasks", "register"),
    # verifiers
    "Verdict": ("verifiers", "Verdict"),
    "match_choice": ("verifiers", "match_choice"),
    "match_text": ("verifiers", "match_text"),
    "match_numeric": ("verifiers", "match_numeric"),
    "point_in_box": ("verifiers", "point_in_box"),
    "point_near": ("verifiers", "point_near"),
    "parse_point_answer": ("verifiers", "parse_point_answer"),
}

__all__ = [  # the same names as _EXPORTS (tests/test_public_api.py checks), spelled out for tools
    "__version__", "RunConfig", "TeacherConfig", "SearchConfig", "MultiTurnConfig", "ConfigError",
    "build_run_config", "load_recipe", "bundled_recipes", "run_generate", "default_data", "RunStore", "Tree",
    "Node", "ExportConfig", "export_run", "build_report", "Teacher", "TeacherError", "TeacherUnavailable",
    "make_teacher", "OpenAITeacher", "SimTeacher", "Task", "get_task", "task_names", "register_task", "Verdict",
    "match_choice", "match_text", "match_numeric", "point_in_box", "point_near", "parse_point_answer",
]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time the names come from __getattr__
    from .config import ConfigError, MultiTurnConfig, RunConfig, SearchConfig, TeacherConfig, build_run_config, bundled_recipes, load_recipe
    from .export.formats import export_run
    from .export.linearize import ExportConfig
    from .export.report import build_report
    from .generate import default_data, run_generate
    from .search.tree import Node, Tree
    from .store import RunStore
    from .tasks import get_task, task_names
    from .tasks import register as register_task
    from .tasks.base import Task
    from .teachers import make_teacher
    from .teachers.base import Teacher, TeacherError, TeacherUnavailable
    from .teachers.openai_compat import OpenAITeacher
    from .teachers.sim import SimTeacher
    from .verifiers import Verdict, match_choice, match_numeric, match_text, parse_point_answer, point_in_box, point_near


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use and cache the name here."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
