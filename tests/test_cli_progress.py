"""Live progress: totals counted up front without decoding images, a status line per interval that moves on
every teacher reply (before any tree finishes), the ETA from the call rate."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from mcts_engine.config import build_run_config, load_recipe
from mcts_engine.generate import default_data, run_generate
from mcts_engine.progress import CountingTeacher, Progress, count_samples, eta_seconds, format_status, resume_line
from mcts_engine.samples import load_samples
from mcts_engine.testing.stub_server import StubServer

DATA = Path(__file__).resolve().parent.parent / "mcts_engine" / "sample_data"
LINE = re.compile(r"generate: (\d+)/(\d+) samples · (\d+) in flight · ([\d.]+) calls/s")


@pytest.mark.parametrize("name", ["sat2_sample/samples.jsonl", "sat2_sample/sat_schema.parquet", "vstar_sample",
                                  "screenspot_sample", "osatlas_sample", "blink_sample", "web_action_sample"])
def test_count_matches_what_the_loader_yields(name: str) -> None:
    path = DATA / name
    assert count_samples(path) == sum(1 for _ in load_samples(path))
    assert count_samples(path, limit=1) == 1


def test_count_never_opens_an_image(monkeypatch: pytest.MonkeyPatch) -> None:
    import PIL.Image

    def no(*a, **k):
        raise AssertionError("an image was opened")

    monkeypatch.setattr(PIL.Image, "open", no)
    assert count_samples(DATA / "osatlas_sample") and count_samples(DATA / "blink_sample")
    assert count_samples(DATA / "nope") is None


def _snap(**kw):
    base = dict(desc="generate", unit="sample", solve_label="solved", total=10, done=0, finished=0, solved=0,
                failed=0, in_flight=2, calls=0, choices=0, prompt_tokens=0, completion_tokens=0, calls_finished=0,
                calls_failed=0, elapsed_s=10.0)
    return {**base, **kw}


def test_eta_is_the_calls_left_over_the_call_rate() -> None:
    assert eta_seconds(_snap(calls=30)) is None  # no tree finished: calls per tree unknown
    # 2 finished trees took 20 calls (10 each); 8 samples left → 80 calls, minus the 10 made by trees in flight;
    # 30 calls in 10 s = 3 calls/s → 70 / 3 s
    s = _snap(done=2, finished=2, solved=1, calls=30, calls_finished=20)
    assert eta_seconds(s) == pytest.approx(70 / 3)
    line = format_status(s)
    assert line.startswith("generate: 2/10 samples · 2 in flight · 3.0 calls/s") and "solved 50%" in line and "ETA 23s" in line


def test_resume_line() -> None:
    assert resume_line(3, 10) == "3 of 10 already done, resuming 7"
    assert "nothing to do" in resume_line(10, 10)


def test_progress_counts_each_reply_through_the_proxy() -> None:
    import asyncio

    class Reply:
        choices = [type("C", (), {"completion_tokens": 4})()] * 3
        prompt_tokens = 100

    class Inner:
        replays_in_order = True

        async def complete(self, state, n):
            return Reply()

    prog = Progress(5, enabled=False, interval_s=0)
    teacher = CountingTeacher(Inner(), prog)
    state = type("S", (), {"context": type("X", (), {"sample": type("Y", (), {"id": "a"})()})()})()
    prog.begin("a")
    asyncio.run(teacher.complete(state, 3))
    assert (prog.calls, prog.choices, prog.prompt_tokens, prog.completion_tokens) == (1, 3, 100, 12)
    assert teacher.replays_in_order is True  # everything else passes through
    prog.fail("a")
    assert prog.calls_failed == 1 and prog.snapshot()["in_flight"] == 0


def _status_lines(text: str) -> list[tuple[int, int, int, float]]:
    return [(int(a), int(b), int(c), float(d)) for a, b, c, d in LINE.findall(text)]


def test_status_moves_before_the_first_tree_finishes_with_a_slow_sim(tmp_path: Path, capsys) -> None:
    cfg = build_run_config(load_recipe(None, "sat2"), ["teacher.sim_latency_s=0.1", "search.parallel_simulations=1"],
                           task="sat2", data=str(default_data("sat2")), limit=1, teacher__kind="sim")
    t0 = time.perf_counter()
    stats = run_generate(cfg, tmp_path / "r", progress=False, status_every=0.15)
    lines = _status_lines(capsys.readouterr().err)
    assert stats["finished"] == 1 and stats["session"]["calls"] >= 3
    early = [ln for ln in lines if ln[0] == 0]
    assert early and any(ln[3] > 0 for ln in early) and all(ln[1] == 1 and ln[2] == 1 for ln in early)
    assert time.perf_counter() - t0 < 20


def test_status_moves_before_the_first_tree_finishes_against_a_slow_server(tmp_path: Path, capsys) -> None:
    with StubServer(latency_s=0.08) as srv:
        cfg = build_run_config(load_recipe(None, "sat2"), ["search.parallel_simulations=1", "search.simulations=4"],
                               task="sat2", data=str(default_data("sat2")), limit=1, teacher__kind="openai",
                               teacher__base_url=srv.url, teacher__model="stub-model")
        stats = run_generate(cfg, tmp_path / "r", progress=False, status_every=0.1)
    lines = _status_lines(capsys.readouterr().err)
    assert stats["finished"] == 1
    assert any(ln[0] == 0 and ln[3] > 0 for ln in lines), lines  # calls counted while the tree was in flight


def test_eval_shows_a_total_and_its_status_lines(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mcts_engine.cli import app

    res = CliRunner().invoke(app, ["eval", "--task", "vstar", "--limit", "2", "--out", str(tmp_path / "e"),
                                   "--no-progress", "--status-every", "0.05", "--set", "teacher.sim_latency_s=0.15"])
    assert res.exit_code == 0, res.output
    assert re.search(r"eval vstar: \d/2 items · \d in flight", res.output)
