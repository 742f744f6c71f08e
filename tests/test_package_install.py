"""A non-editable install carries its recipes and sample data: ``generate`` works from any directory.

Installs a copy of the source tree with ``pip install --no-deps --no-build-isolation --target`` (no registry
reached; the venv's setuptools builds it) and runs the quickstart from an unrelated directory with only the
install on ``PYTHONPATH``. Slow (~6 s): left out of ``pytest -m "not slow"``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_a_non_editable_install_runs_generate_from_another_directory(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy, so the build writes nothing into the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "mcts_engine", src / "mcts_engine", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
           "--target", str(target), str(src)]
    proc = subprocess.run(pip, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for folder in ("recipes", "sample_data"):  # every bundled file ships, whatever its kind
        def files(root: Path) -> set[str]:
            return {str(f.relative_to(root)) for f in root.rglob("*") if f.is_file() and "__pycache__" not in f.parts}

        shipped, bundled = files(target / "mcts_engine" / folder), files(ROOT / "mcts_engine" / folder)
        assert bundled and shipped == bundled, sorted(bundled ^ shipped)[:10]
    assert (target / "mcts_engine" / "sample_data" / "blink_sample" / "blink_val.parquet").exists()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mcts_engine.cli", "generate", "--task", "sat2", "--out", str(out), "--limit", "4",
           "--no-progress"]
    proc = subprocess.run(cmd, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["data"].startswith(str(target / "mcts_engine" / "sample_data"))  # the installed copy, not the checkout
    assert len((out / "trees.jsonl").read_text().splitlines()) == 4

    proc = subprocess.run([sys.executable, "-m", "mcts_engine.cli", "generate", "--task", "sat2", "--recipe", "nope",
                           "--out", str(tmp_path / "r2")], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0 and "recipe nope: no such file or bundled recipe" in proc.stderr
    assert "Traceback" not in proc.stderr
