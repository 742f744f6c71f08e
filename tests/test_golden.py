"""Golden runs: seeded ``sim`` runs compared exactly with stored trees and export rows.

The model is mctx's ``tree_test.py`` with its ``test_data/``: a small search whose every node, visit count, value,
rejected step and exported row is stored under ``tests/golden/`` and must come out the same. Any change to the
search, the sim teacher, the verifiers, the prompts or the export shows up here as a diff of readable JSON.

When a change is MEANT to alter these outputs, regenerate them and review the diff before committing:

    python tests/test_golden.py          # rewrites tests/golden/<case>/{trees,export_*}.jsonl

What is compared: every tree record without its wall-clock fields (``stats.seconds``) and every row of the
``jsonl`` export of every kind (images are compared by file name, which is their content hash). Trees and rows are
exported in sample-id order: the order samples finish in is decided by threads, not by the seed.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"

# (name, generate arguments): a single-turn and a multi-turn run, small enough to run in a few seconds
CASES = {
    "sat2": ["--task", "sat2", "--limit", "3", "--seed", "7"],
    "vstar_multiturn": ["--task", "vstar", "--recipe", "vstar_multiturn", "--limit", "2", "--seed", "3",
                        "--set", "search.simulations=4"],
}
VOLATILE_STATS = ("seconds",)  # wall clock: differs from run to run


def _cli(*args: str) -> None:
    from typer.testing import CliRunner

    from mcts_engine.cli import app

    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output


def _normalized_trees(run: Path) -> list[dict]:
    out = []
    for line in (run / "trees.jsonl").read_text().splitlines():
        rec = json.loads(line)
        for key in VOLATILE_STATS:
            rec.get("stats", {}).pop(key, None)
        rec.get("sample", {}).pop("image_root", None)  # an absolute path: where the checkout lives
        out.append(rec)
    return sorted(out, key=lambda r: r["sample_id"])


def _export_rows(run: Path) -> dict[str, list]:
    exp = run / "exp"
    _cli("export", "--run", str(run), "--format", "jsonl", "--kind", "all", "--out", str(exp))
    return {f.stem: [json.loads(x) for x in f.read_text().splitlines()] for f in sorted(exp.glob("*.jsonl"))}


def produce(name: str, where: Path) -> tuple[list[dict], dict[str, list]]:
    run = where / name
    _cli("generate", "--no-progress", "--out", str(run), *CASES[name])
    # trees.jsonl is in the order samples finished, which threads decide (not the seed): export in sample order
    trees_file = run / "trees.jsonl"
    lines = trees_file.read_text().splitlines(keepends=True)
    trees_file.write_text("".join(sorted(lines, key=lambda line: json.loads(line)["sample_id"])))
    return _normalized_trees(run), _export_rows(run)


def _read_golden(name: str) -> tuple[list[dict], dict[str, list]]:
    d = GOLDEN / name
    trees = [json.loads(x) for x in (d / "trees.jsonl").read_text().splitlines()]
    rows = {f.stem.removeprefix("export_"): [json.loads(x) for x in f.read_text().splitlines()]
            for f in sorted(d.glob("export_*.jsonl"))}
    return trees, rows


@pytest.mark.parametrize("name", sorted(CASES))
def test_seeded_run_matches_its_golden_trees_and_rows(name: str, tmp_path: Path) -> None:
    want_trees, want_rows = _read_golden(name)
    trees, rows = produce(name, tmp_path)
    assert len(trees) == len(want_trees)
    for got, want in zip(trees, want_trees):  # one sample at a time: a failure names the sample
        assert got == want, f"{name}: tree {want['sample_id']} differs from tests/golden/{name}/trees.jsonl"
    assert sorted(rows) == sorted(want_rows)
    for kind in want_rows:
        assert rows[kind] == want_rows[kind], f"{name}: export rows {kind} differ from tests/golden/{name}"


def update() -> None:
    """Rewrite every case's golden files from a fresh seeded run."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name in CASES:
            trees, rows = produce(name, Path(tmp))
            d = GOLDEN / name
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
            (d / "trees.jsonl").write_text("".join(json.dumps(t, sort_keys=True) + "\n" for t in trees))
            for kind, rs in rows.items():
                (d / f"export_{kind}.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rs))
            print(f"{d}: {len(trees)} trees, " + ", ".join(f"{k} {len(v)}" for k, v in rows.items()))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    update()
