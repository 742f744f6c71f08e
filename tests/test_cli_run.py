"""What a run says and returns: exit 1 when nothing succeeded, failures grouped by kind, the teacher's real
reason when it dies, the dry run's projection, resume and complete lines, the next step."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcts_engine.cli import app
from mcts_engine.failures import failure_kind, group_failures, open_failures
from mcts_engine.planning import project
from mcts_engine.testing.stub_server import StubServer

runner = CliRunner()


def gen(*args: str):
    return runner.invoke(app, ["generate", "--no-progress", "--status-every", "0", *args])


# --- failure kinds (pure) -----------------------------------------------------------------------


@pytest.mark.parametrize("sid,reason,kind", [
    ("s1", "s1: teacher error: HTTP 500", "teacher error: HTTP 500"),
    ("s1", "s1: s1: image not found", "image not found"),
    ("s1", "teacher error: HTTP 500", "teacher error: HTTP 500"),
    ("s10", "s1: x", "s1: x"),  # another id's prefix is not this sample's
    ("a:b", "a:b: bad", "bad"),  # ids with a colon
    ("s2", "samples.jsonl:12: field 'image' is missing", "samples.jsonl:N: field 'image' is missing"),
    ("s3", "web.json row 7 element 2: bbox outside", "web.json row N element N: bbox outside"),
    ("s4", "duplicate sample id 's4'", "duplicate sample id '…'"),
    ("s5", "", "(no reason given)"),
    ("s6", "image not found: /data/x/img6.png", "image not found: <file>"),
    ("s7", "cannot reach http://127.0.0.1:9/v1: refused", "cannot reach http://127.0.0.1:9/v1: refused"),
    ("s8", "cached image missing: runs/a/images/k.png", "cached image missing: <file>"),
    ("s10", "answered 503 - injected failure 4 of 100", "answered 503 - injected failure N of N"),
    ("s9", "cannot decode image ~/x/y.jpeg: OSError", "cannot decode image <file>: OSError"),
])
def test_failure_kind_strips_the_id_and_positions(sid: str, reason: str, kind: str) -> None:
    assert failure_kind(reason, sid) == kind


def test_groups_count_and_keep_one_example() -> None:
    records = [{"id": "a", "reason": "a: teacher error: boom"}, {"id": "b", "reason": "teacher error: boom"},
               {"id": "c", "reason": "image not found"}, {"id": "d", "reason": "teacher error: boom"}]
    groups = group_failures(open_failures(records, finished={"d"}))
    assert [(g.kind, g.count, g.example) for g in groups] == [("teacher error: boom", 2, "a"), ("image not found", 1, "c")]


# --- exit codes and what is printed ----------------------------------------------------------------


def _bad_data(tmp: Path, n: int = 3) -> Path:
    rows = [{"id": f"b{i}", "image": f"missing{i}.png", "question": "left or right?", "answer": "left",
             "choices": ["left", "right"]} for i in range(n)]
    p = tmp / "bad.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_all_failed_exits_1_with_failures_grouped(tmp_path: Path) -> None:
    res = gen("--data", str(_bad_data(tmp_path)), "--teacher", "sim", "--out", str(tmp_path / "r"))
    assert res.exit_code == 1, res.output
    assert "done: 0 trees" in res.output and "error: no sample succeeded" in res.output
    group = [ln for ln in res.output.splitlines() if "× " in ln]
    assert len(group) == 1 and "3 × image not found: <file>" in group[0] and "(e.g. b0)" in group[0]
    recs = [json.loads(line) for line in (tmp_path / "r" / "failures.jsonl").read_text().splitlines()]
    assert all(not r["reason"].startswith(r["id"]) for r in recs)  # the id lives in its own field


def test_success_exits_0_and_names_the_next_step(tmp_path: Path) -> None:
    res = gen("--limit", "1", "--out", str(tmp_path / "r"))
    assert res.exit_code == 0, res.output
    assert f"next: mcts-engine export --run {tmp_path / 'r'}" in res.output


def test_a_dead_teacher_stops_the_run_with_its_reason(tmp_path: Path) -> None:
    with StubServer(fail_first=10**6, fail_status=503) as srv:
        res = gen("--base-url", srv.url, "--model", "stub-model", "--limit", "12", "--set", "teacher.max_retries=0",
                  "--out", str(tmp_path / "r"))
    assert res.exit_code == 2, res.output
    assert "stopped: 8 samples in a row got nothing usable from the teacher, the last:" in res.output and "503" in res.output
    assert re.search(r"\s\d+ × teacher error: .*503", res.output)  # what failed so far, grouped, before the stop


# --- dry run, resume, a finished run ------------------------------------------------------------------


def test_project_is_per_tree_average_times_total() -> None:
    stats = {"finished": 2, "calls": 30, "choices": 40, "prompt_tokens": 1000, "completion_tokens": 100}
    p = project(stats, 10, calls_per_s=5.0)
    assert (p["calls"], p["choices"], p["prompt_tokens"], p["completion_tokens"]) == (150, 200, 5000, 500)
    assert p["wall_s"] == 30.0 and project(stats, 10, None)["wall_s"] is None
    with pytest.raises(ValueError):
        project({"finished": 0}, 10, 1.0)


def test_dry_run_projects_from_the_pilot_and_the_real_run_resumes_after_it(tmp_path: Path) -> None:
    run = tmp_path / "r"
    res = gen("--limit", "6", "--out", str(run), "--dry-run", "--pilot", "2")
    assert res.exit_code == 0, res.output
    trees = [json.loads(line) for line in (run / "trees.jsonl").read_text().splitlines()]
    assert len(trees) == 2  # the pilot's trees are kept
    calls = sum(t["stats"]["calls"] for t in trees)
    ptok = sum(t["stats"]["prompt_tokens"] for t in trees)
    m = re.search(r"projected for 6 samples: ([\d,]+) calls, ([\d,]+) choices, ([\d,]+) prompt tokens", res.output)
    assert m, res.output
    assert int(m.group(1).replace(",", "")) == round(calls / 2 * 6)
    assert int(m.group(3).replace(",", "")) == round(ptok / 2 * 6)
    assert "wall time" in res.output and "calls/s" in res.output
    real = gen("--limit", "6", "--out", str(run))
    assert real.exit_code == 0 and "2 of 6 already done, resuming 4" in real.output
    assert len((run / "trees.jsonl").read_text().splitlines()) == 6


def test_a_finished_run_does_no_work_and_does_not_contact_the_teacher(tmp_path: Path) -> None:
    run = tmp_path / "r"
    with StubServer() as srv:
        first = gen("--base-url", srv.url, "--model", "stub-model", "--limit", "2", "--out", str(run),
                    "--set", "search.simulations=2")
        assert first.exit_code == 0, first.output
        url = srv.url
    again = gen("--base-url", url, "--model", "stub-model", "--limit", "2", "--out", str(run), "--set", "search.simulations=2")
    assert again.exit_code == 0, again.output  # the server is gone: it was not asked
    assert "all 2 samples already done: nothing to do" in again.output and "\ndone:" not in again.output


# --- --print-config, --version, env -----------------------------------------------------------------


def test_print_config_yaml_and_json(tmp_path: Path) -> None:
    import yaml

    res = gen("--print-config", "--limit", "3", "--set", "search.simulations=5", "--out", str(tmp_path / "r"))
    assert res.exit_code == 0
    cfg = yaml.safe_load(res.output)
    assert cfg["limit"] == 3 and cfg["search"]["simulations"] == 5 and cfg["teacher"]["kind"] == "sim"
    js = gen("--print-config", "--config-format", "json", "--base-url", "http://h:1/v1")
    assert json.loads(js.output)["teacher"]["kind"] == "openai"
    assert not (tmp_path / "r").exists()


def test_version_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from mcts_engine import __version__
    from mcts_engine.commands import env as env_mod

    assert runner.invoke(app, ["--version"]).output.strip() == f"mcts-engine {__version__}"
    out = runner.invoke(app, ["env"]).output
    for name in ("Python", "Platform", "torch", "transformers", "openai", "aiohttp", "datasets", "pyarrow", "CUDA"):
        assert re.search(rf"^- {name}\s+:", out, re.M), name
    monkeypatch.setattr(env_mod.importlib.util, "find_spec", lambda name: None)
    assert env_mod.cuda_line() == "n/a (torch not installed)"


def test_completion_is_on() -> None:
    assert "--install-completion" in runner.invoke(app, ["--help"]).output
