"""End to end for every task on its bundled sample: generate → export with the sim teacher, and
``mcts-engine eval`` (sim teacher; and the openai backend against the in-test stub server)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import NormalDist, fmean, variance

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mcts_engine.cli import app

runner = CliRunner()
TASKS = ("sat2", "blink", "vstar", "screenspot", "osatlas", "web_action")
SMALL = ["--set", "search.simulations=2", "--set", "search.children=2", "--set", "search.rollouts=1"]


def cli(*args: str):
    return runner.invoke(app, list(args))


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.mark.parametrize("task", TASKS)
def test_generate_then_export_every_task(task, tmp_path):
    run = tmp_path / "run"
    res = cli("generate", "--task", task, "--limit", "3", "--seed", "1", "--out", str(run), "--no-progress", *SMALL)
    assert res.exit_code == 0, res.output
    recs = lines(run / "trees.jsonl")
    assert len(recs) == 3 and all(r["task"] == task for r in recs)
    for r in recs:
        assert r["truth"] and any(n["kind"] == "answer" for n in r["nodes"])
    res = cli("export", "--run", str(run), "--kind", "sft,grpo", "--quiet")
    assert res.exit_code == 0, res.output
    out = run / "export" / "trl"
    summary = json.loads((out / "export_summary.json").read_text())
    assert summary["samples_exported"] == 3, summary.get("skipped_records")
    rows = sum(pq.ParquetFile(out / f).metadata.num_rows for f in ("grpo_train.parquet", "grpo_val.parquet"))
    assert rows == 3


Z = NormalDist().inv_cdf(0.975)  # the two-sided 95 % normal quantile, from the standard library


def item_scores(recs: list[dict], circular: bool) -> list[float]:
    """Per item: the share of its K samples that are correct (under every rotation when circular)."""
    out = []
    for r in recs:
        variants = r["variants"] if circular else r["variants"][:1]
        k = len(variants[0]["outputs"])
        out.append(sum(all(v["outputs"][j]["correct"] for v in variants) for j in range(k)) / k)
    return out


def assert_overall_matches_the_records(s: dict, recs: list[dict], macro_key: str | None) -> None:
    """The headline and its interval, recomputed from trees.jsonl without mcts_engine.evaluation.scoring."""
    scores = item_scores(recs, s["circular"])
    o = s["overall"]
    lo, hi = o["ci95"]
    if macro_key is None:
        # Micro mean of 0/1 items: Wilson's score interval, checked by its definition (the bounds are the
        # proportions p where the score test is exactly at the edge: n (p_hat - p)^2 = z^2 p (1 - p)).
        assert set(scores) <= {0.0, 1.0} and o["method"] == "wilson"
        n, p_hat = len(scores), sum(scores) / len(scores)
        assert o["n"] == n and o["mean"] == pytest.approx(p_hat, abs=1e-12)
        for bound, clipped in ((lo, 0.0), (hi, 1.0)):
            if bound == clipped:
                assert p_hat == clipped  # Wilson touches 0 (1) only when no (every) item is right
            else:
                assert n * (p_hat - bound) ** 2 == pytest.approx(Z * Z * bound * (1 - bound), rel=1e-9, abs=1e-12)
        assert lo < p_hat < hi or p_hat in (lo, hi)
        return
    # Macro mean over the values of `macro_key`: normal interval with Var = sum_g s_g^2 / n_g / G^2
    # (a one-item group counts s^2 = 0.25, the binary worst case).
    groups: dict[str, list[float]] = {}
    for r, x in zip(recs, scores):
        groups.setdefault(r["groups"][macro_key], []).append(x)
    g = len(groups)
    mean = sum(fmean(v) for v in groups.values()) / g
    var = sum((variance(v) if len(v) > 1 else 0.25) / len(v) for v in groups.values()) / g**2
    half = Z * math.sqrt(var)
    assert o["method"] == "macro-normal" and o["n"] == len(scores) and g >= 2
    assert o["mean"] == pytest.approx(mean, abs=1e-12)
    assert lo == pytest.approx(max(0.0, mean - half), abs=1e-12) and hi == pytest.approx(min(1.0, mean + half), abs=1e-12)


@pytest.mark.parametrize(
    "task, group_key",
    [("sat2", "question_type"), ("blink", "sub_task"), ("vstar", "category"), ("screenspot", "platform+ui_type"),
     ("osatlas", "platform"), ("web_action", "action_type")],
)
def test_eval_every_task_with_the_sim_teacher(task, group_key, tmp_path):
    out = tmp_path / "ev"
    res = cli("eval", "--task", task, "--limit", "6", "--out", str(out), "--no-progress", "--format-check")
    assert res.exit_code == 0, res.output
    assert "not a model" in res.output and "format check:" in res.output
    recs = lines(out / "trees.jsonl")
    assert len(recs) == 6 and all(r["kind"] == "eval" for r in recs)
    for r in recs:
        for v in r["variants"]:
            assert len(v["outputs"]) == 1
            o = v["outputs"][0]
            assert o["well_formed"], o["text"]  # the sim writes a whole chain in one reply
            assert o["answer"] and o["points"] >= 1 and 0.0 <= o["score"] <= 1.0
    s = json.loads((out / "summary.json").read_text())
    assert s["items"] == 6 and group_key in s["groups"]
    assert s["format_check"]["outputs"] == sum(len(r["variants"]) for r in recs)
    assert s["format_check"]["grammar_broken"] == 0
    assert_overall_matches_the_records(s, recs, macro_key="sub_task" if task == "blink" else None)
    if task == "sat2":  # circular: one request per rotation of the options
        assert s["circular"] and all(len(r["variants"]) == len(r["sample"]["choices"]) for r in recs)
        assert s["overall"]["mean"] <= s["vanilla"]["mean"]
        rot = recs[0]["variants"][1]
        assert rot["choices"] == recs[0]["sample"]["choices"][1:] + recs[0]["sample"]["choices"][:1]
    if task == "blink":
        assert s["headline"] == "mean over sub_task"
    if task == "web_action":
        assert "mean_score" in s
    assert (out / "summary.md").read_text().startswith("### eval")


def test_eval_resumes_and_refuses_another_config(tmp_path):
    out = tmp_path / "ev"
    assert cli("eval", "--task", "vstar", "--limit", "3", "--out", str(out), "--no-progress").exit_code == 0
    first = (out / "trees.jsonl").read_text()
    res = cli("eval", "--task", "vstar", "--out", str(out), "--no-progress")  # resume: 3 kept, 5 more
    assert res.exit_code == 0, res.output
    recs = lines(out / "trees.jsonl")
    assert (out / "trees.jsonl").read_text().startswith(first) and len(recs) == 8
    assert len({r["sample_id"] for r in recs}) == 8
    assert json.loads((out / "summary.json").read_text())["session"]["skipped"] == 3
    res = cli("eval", "--task", "vstar", "--out", str(out), "--no-progress", "-k", "2")
    assert res.exit_code == 2 and "different config" in res.output
    res = cli("eval", "--task", "nope", "--no-progress")
    assert res.exit_code == 2 and "unknown task" in res.output


def test_eval_bad_items_are_failures_not_crashes(tmp_path):
    data = tmp_path / "d.jsonl"
    rows = [{"id": "ok", "image": "a.png", "intent": "Go back", "action": "go_back"},
            {"id": "noimg", "image": "missing.png", "intent": "Go back", "action": "go_back"}]
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "ev"
    res = cli("eval", "--task", "web_action", "--data", str(data), "--teacher", "sim", "--out", str(out), "--no-progress")
    assert res.exit_code == 0, res.output
    assert [r["sample_id"] for r in lines(out / "trees.jsonl")] == ["ok"]
    fails = lines(out / "failures.jsonl")
    assert fails[0]["id"] == "noimg" and "image not found" in fails[0]["reason"]
    assert json.loads((out / "summary.json").read_text())["failed"] == 1


def test_eval_openai_backend_one_shot_stop_and_k(tmp_path):
    """A served model (stub) gets ONE request per item with n=K, stop only at </answer>, greedy when K=1."""
    from mcts_engine.testing.stub_server import StubServer

    chain = "<think>\nThe element is at (20, 30). Checking it again (22, 31).\n</think>\n<answer> (21, 30) </answer>"
    with StubServer(keep_bodies=True, replies=lambda body, i, rng: chain) as server:
        out = tmp_path / "ev"
        res = cli("eval", "--task", "screenspot", "--base-url", server.url, "--model", "stub-model", "--limit", "4",
                  "-k", "3", "--temperature", "0.7", "--out", str(out), "--no-progress", "--format-check")
        assert res.exit_code == 0, res.output
        bodies = [r["body"] for r in server.stats.records]
    assert len(bodies) == 4
    for b in bodies:
        assert b["stop"] == ["</answer>"] and b["n"] == 3 and b["temperature"] == 0.7 and b["max_tokens"] == 1024
        assert b["messages"][0]["content"].startswith("You locate elements on screenshots")  # the STUDENT prompt
        assert b["messages"][-1]["role"] == "user"  # no assistant pre-fill in one-shot mode
    recs = lines(out / "trees.jsonl")
    outs = [o for r in recs for o in r["variants"][0]["outputs"]]
    assert len(outs) == 12 and all(o["well_formed"] and o["answer"] == "(21, 30)" and o["points"] == 2 for o in outs)
    s = json.loads((out / "summary.json").read_text())
    assert s["samples_per_item"] == 3 and "pass_at_k" in s and s["format_check"]["grammar_broken"] == 0
