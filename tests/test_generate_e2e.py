"""`mcts-engine generate` end to end with the sim teacher: run dir, resume, refusal, bad input, kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from mcts_engine.cli import app
from mcts_engine.search.tree import Tree
from mcts_engine.store import RunStore
from mcts_engine.testing.refused_port import refused_url

runner = CliRunner()


def gen(*args: str):
    return runner.invoke(app, ["generate", "--no-progress", *args])


def trees(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "trees.jsonl").read_text().splitlines()]


def test_bundled_sample_run_writes_a_complete_run_directory(tmp_path):
    out = tmp_path / "run"
    res = gen("--limit", "5", "--out", str(out), "--seed", "3")
    assert res.exit_code == 0, res.output
    assert "teacher: sim" in res.output and "not a model" in res.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["teacher"]["kind"] == "sim" and len(cfg["hash"]) == 16
    assert cfg["teacher"]["kind"] == "sim" and "NOT a model" in cfg["teacher"]["note"]
    recs = trees(out)
    assert len(recs) == 5 and len({r["sample_id"] for r in recs}) == 5
    for rec in recs:
        tree = Tree.from_dict(rec)
        assert tree.frame.width % 28 == 0 and tree.frame.height % 28 == 0
        assert rec["frame"]["orig_width"] > 0
        for node in tree.nodes[1:]:
            assert node.text, "every node keeps the teacher's text"
            if node.kind == "think":
                assert node.point is not None and tree.frame.contains(node.point)
        assert rec["stats"]["calls"] > 0 and rec["stats"]["completion_tokens"] > 0
        # The image the teacher saw is stored once, at the frame size.
        img = Image.open(out / rec["images"][0]["file"])
        assert img.size == (tree.frame.width, tree.frame.height)
    stats = json.loads((out / "stats.json").read_text())
    # the run's totals are the sums over its records
    solved = sum(bool(r["solved"]) for r in recs)
    assert (stats["finished"], stats["failed"], stats["solved"]) == (5, 0, solved) and stats["solve_rate"] == solved / 5
    for key in ("calls", "choices", "prompt_tokens", "completion_tokens"):
        assert stats[key] == sum(r["stats"][key] for r in recs) > 0, key
    assert stats["nodes"] == sum(len(r["nodes"]) for r in recs)


def test_seeded_sim_runs_are_reproducible(tmp_path):
    for name in ("a", "b"):
        assert gen("--limit", "4", "--out", str(tmp_path / name), "--seed", "7").exit_code == 0
    strip = lambda r: {k: v for k, v in r.items() if k != "stats"}  # noqa: E731 (timings differ)
    a = {r["sample_id"]: strip(r) for r in trees(tmp_path / "a")}
    b = {r["sample_id"]: strip(r) for r in trees(tmp_path / "b")}
    assert a == b


@pytest.mark.parametrize("task", ["vstar", "screenspot"])
def test_seeded_sim_multiturn_runs_are_reproducible(tmp_path, task):
    # crops are computed while sibling simulations wait: with the sim teacher the order of requests
    # inside a tree must not depend on when a worker thread finishes
    for name in ("a", "b"):
        res = gen("--task", task, "--recipe", f"{task}_multiturn", "--limit", "4",
                  "--out", str(tmp_path / name), "--seed", "3")
        assert res.exit_code == 0, res.output
    strip = lambda r: {k: v for k, v in r.items() if k != "stats"}  # noqa: E731 (timings differ)
    a = {r["sample_id"]: strip(r) for r in trees(tmp_path / "a")}
    b = {r["sample_id"]: strip(r) for r in trees(tmp_path / "b")}
    assert len(a) == 4 and a == b
    assert any(n.get("observation") for r in a.values() for n in r["nodes"])  # crops were taken


def test_resume_skips_finished_and_refuses_other_config(tmp_path):
    out = tmp_path / "run"
    assert gen("--limit", "3", "--out", str(out)).exit_code == 0
    first = (out / "trees.jsonl").read_text()
    res = gen("--limit", "6", "--out", str(out))
    assert res.exit_code == 0, res.output
    recs = trees(out)
    assert len(recs) == 6 and len({r["sample_id"] for r in recs}) == 6
    assert (out / "trees.jsonl").read_text().startswith(first)  # nothing rewritten
    res = gen("--limit", "6", "--out", str(out), "--set", "search.simulations=3")
    assert res.exit_code == 2 and "different config" in res.output
    res = gen("--limit", "6", "--out", str(out), "--set", "search.simulations=3", "--force")
    assert res.exit_code == 0
    # Concurrency does not change results: accepted on resume.
    assert gen("--limit", "6", "--out", str(out), "--set", "search.simulations=3", "--concurrency", "3").exit_code == 0


def test_bad_rows_are_recorded_and_the_run_goes_on(tmp_path):
    Image.new("RGB", (300, 200), "white").save(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    rows = [
        {"id": "good", "image": "ok.png", "question": "Which?", "answer": "left", "choices": ["left", "right"],
         "boxes": [{"label": "cup", "bbox": [10, 10, 60, 60]}]},
        {"id": "no-answer", "image": "ok.png", "question": "Which?", "choices": ["left", "right"]},
        {"id": "missing-image", "image": "nope.png", "question": "Which?", "answer": "left", "choices": ["left", "right"]},
        {"id": "corrupt-image", "image": "broken.png", "question": "Which?", "answer": "left", "choices": ["left", "right"]},
        {"id": "not-an-option", "image": "ok.png", "question": "Which?", "answer": "up", "choices": ["left", "right"]},
    ]
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken json\n")
    out = tmp_path / "run"
    res = gen("--data", str(data), "--teacher", "sim", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert [r["sample_id"] for r in trees(out)] == ["good"]
    fails = {f["id"]: f["reason"] for f in RunStore(out).failures()}
    assert "field 'answer' is missing" in fails["no-answer"] and "d.jsonl:2" in fails["no-answer"]
    assert "image not found" in fails["missing-image"]
    assert "cannot read image" in fails["corrupt-image"]
    assert "not one of the options" in fails["not-an-option"]
    assert "not valid JSON" in fails["d.jsonl#6"]
    assert all("\n" not in r for r in fails.values())
    stats = json.loads((out / "stats.json").read_text())
    assert stats["failed"] == 5 and stats["finished"] == 1


def test_clear_errors_for_bad_options(tmp_path):
    res = gen("--data", str(tmp_path / "missing.jsonl"), "--teacher", "sim", "--out", str(tmp_path / "r"))
    assert res.exit_code == 2 and "no such file" in res.output
    res = gen("--set", "search.simulatons=3", "--out", str(tmp_path / "r2"))
    assert res.exit_code == 2 and "unknown key 'simulatons'" in res.output
    res = gen("--task", "nope")
    assert res.exit_code == 2 and "unknown task" in res.output
    with refused_url() as dead:
        res = gen("--teacher", "openai", "--base-url", dead, "--out", str(tmp_path / "r3"),
                  "--set", "teacher.max_retries=0", "--set", "teacher.timeout_s=2")
    assert res.exit_code == 2 and "cannot reach" in res.output
    assert not (tmp_path / "r3" / "trees.jsonl").exists()


def test_kill_mid_run_then_resume_loses_and_duplicates_nothing(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mcts_engine.cli", "generate", "--no-progress", "--out", str(out), "--limit", "24",
           "--set", "teacher.sim_latency_s=0.02", "--set", "search.trees_in_flight=2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    path = out / "trees.jsonl"
    while time.monotonic() < deadline and (not path.exists() or path.read_text().count("\n") < 3):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    before = path.read_text()
    done_before = before.count("\n")
    assert 3 <= done_before < 24
    # Simulate a write torn by the kill: a partial last line must be cut on resume.
    with path.open("a") as fh:
        fh.write('{"sample_id": "torn", "nod')
    res = gen("--out", str(out), "--limit", "24", "--set", "teacher.sim_latency_s=0.02", "--set", "search.trees_in_flight=2")
    assert res.exit_code == 0, res.output
    recs = trees(out)
    ids = [r["sample_id"] for r in recs]
    assert len(ids) == 24 and len(set(ids)) == 24 and "torn" not in ids
    assert path.read_text().startswith(before)  # finished records untouched


def test_cli_start_and_generate_do_not_import_torch(tmp_path):
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from mcts_engine.cli import app\n"
        f"r = CliRunner().invoke(app, ['generate', '--no-progress', '--limit', '1', '--out', r'{tmp_path / 'r'}'])\n"
        "assert r.exit_code == 0, r.output\n"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
