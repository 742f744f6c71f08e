"""Tree records written before the search-yield change (no log-probs, no solver, old stats) still load,
search on, export and report; new fields round-trip."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from mcts_engine.export.config import ExportConfig
from mcts_engine.export.linearize import Linearizer
from mcts_engine.export.report import build_report
from mcts_engine.export.run import export_run
from mcts_engine.search.tree import Tree
from mcts_engine.tasks import get_task
from mcts_engine.testing.synthetic_runs import make_run

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden" / "tree_record_a398637.jsonl"  # written by commit a398637 (sim teacher)


def old_record() -> dict:
    rec = json.loads(GOLDEN.read_text().splitlines()[0])
    rec["sample"]["image_root"] = str(ROOT / "mcts_engine" / "sample_data" / "sat2_sample")
    return rec


def test_an_old_record_loads_with_solver_flags_and_no_logprobs() -> None:
    rec = old_record()
    assert "logprob" not in json.dumps(rec["nodes"]) and "stop" not in rec["stats"]
    tree = Tree.from_dict(rec)
    assert all(n.logprob is None for n in tree.nodes)
    assert all(n.closed and n.exact == n.reward for n in tree.nodes if n.terminal)
    again = tree.to_dict()
    assert [n for n in again["nodes"]] == rec["nodes"]  # nothing new is written for an old tree
    task = get_task("sat2")
    lin = Linearizer(tree, ExportConfig(), lambda a: task.verify(a, tree.truth).correct, task.backtrack_sentence)
    assert tree.solved and lin.sft_chains()


def test_an_old_run_directory_still_exports_and_reports(tmp_path: Path) -> None:
    rec = old_record()
    run = make_run(tmp_path, [json.dumps(rec)])
    img = rec["images"][0]
    src = ROOT / "mcts_engine" / "sample_data" / "sat2_sample" / rec["sample"]["images"][0]
    (run / "images").mkdir(exist_ok=True)
    Image.open(src).convert("RGB").resize((img["width"], img["height"])).save(run / img["file"])
    res = export_run(run, tmp_path / "out", kinds=["sft", "grpo"], cfg=ExportConfig(val_fraction=0.0))
    assert res.samples_exported == 1 and sum(res.strategies.values()) >= 1
    rep = build_report(run, tmp_path / "r.html", limit=5)
    assert rep.trees == 1 and rep.solved == 1


def test_an_old_record_can_be_searched_on() -> None:
    """A tree handed over from an old record: its counters continue from its stats."""
    from mcts_engine.search.mcts import SearchCounters

    rec = old_record()
    counters = SearchCounters.from_stats(rec["stats"])
    assert (counters.calls, counters.simulations, counters.rejected["out_of_frame"]) == (32, 3, 1)
    assert counters.merged_near == 0 and counters.errors == 0
