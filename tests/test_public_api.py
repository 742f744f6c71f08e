"""The curated public API (``mcts_engine.__all__``): every name resolves, and importing the package is light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import mcts_engine

ROOT = Path(__file__).resolve().parent.parent


def test_every_public_name_resolves_to_its_module_object() -> None:
    from mcts_engine import config, search, tasks, verifiers

    assert set(mcts_engine.__all__) == {"__version__", *mcts_engine._EXPORTS}
    for name in mcts_engine.__all__:
        assert getattr(mcts_engine, name) is not None, name
    assert mcts_engine.build_run_config is config.build_run_config
    assert mcts_engine.Tree is search.tree.Tree
    assert mcts_engine.register_task is tasks.register
    assert mcts_engine.match_choice is verifiers.match_choice
    assert set(mcts_engine.__all__) <= set(dir(mcts_engine))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        mcts_engine.no_such_name  # noqa: B018


def test_import_and_the_generate_api_do_not_import_torch_or_transformers() -> None:
    code = ("import sys, mcts_engine; assert not [m for m in sys.modules if m.startswith('mcts_engine.')], 'eager'; "
            "from mcts_engine import run_generate, build_run_config, load_recipe, export_run, build_report, SimTeacher; "
            "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
