"""A run survives kills, signals, a full disk and a second writer: in-flight checkpoints, resume, the lock.

Processes that are killed run as subprocesses (bounded by ``timeout``); the sim teacher's latency makes
them slow enough to interrupt. Teacher requests are counted by a driver script (one byte appended per
request, so the count survives kill -9).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcts_engine.cli import app
from mcts_engine.config import build_run_config, load_recipe
from mcts_engine.generate import default_data, prepare_context, run_generate
from mcts_engine.samples import load_samples
from mcts_engine.search.mcts import TreeSearch
from mcts_engine.search.resume import TrackedTeacher, resume, snapshot
from mcts_engine.store import INFLIGHT, LOCK, TREES, RunError, RunStore
from mcts_engine.store import files as runfiles
from mcts_engine.teachers.base import PromptState, TeacherError
from mcts_engine.teachers.sim import SimTeacher
from mcts_engine.zoom.observer import make_observer

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def tree_lines(run: Path) -> list[dict]:
    p = run / TREES
    if not p.exists():
        return []
    # complete lines only: the run may be appending a tree while the test reads the file
    return [json.loads(x) for x in p.read_text().split("\n")[:-1] if x]


def read_inflight(run: Path) -> dict[str, dict]:
    """The newest complete checkpoint of each sample (a torn last line is ignored, as a restart cuts it)."""
    out: dict[str, dict] = {}
    p = run / INFLIGHT
    if not p.exists():
        return out
    for raw in p.read_bytes().split(b"\n"):
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        if rec.get("tree") is None:
            out.pop(rec["sample_id"], None)
        else:
            out[rec["sample_id"]] = rec
    return out


def node_keys(tree: dict) -> list[tuple]:
    return [(n["id"], n["parent"], n["text"]) for n in tree["nodes"]]


def config(*overrides: str, task: str = "sat2", recipe: str | None = None, limit: int = 4):
    return build_run_config(load_recipe(recipe, task), list(overrides), task=task, data=str(default_data(task)),
                            limit=limit, teacher__kind="sim")


class FlakyTeacher(SimTeacher):
    """The sim teacher, failing the requests ``fail(sample_id, request_index)`` picks."""

    def __init__(self, cfg, fail, seed: int = 0) -> None:  # type: ignore[no-untyped-def]
        super().__init__(cfg, seed)
        self.fail, self.asked = fail, {}

    async def complete(self, state, n):  # type: ignore[no-untyped-def]
        sid = state.context.sample.id
        k = self.asked[sid] = self.asked.get(sid, 0) + 1
        if self.fail(sid, k):
            raise TeacherError("HTTP 503 after 3 retries")
        return await super().complete(state, n)


# A generate session whose teacher requests are counted in COUNT (one byte each, written before the request).
DRIVER = textwrap.dedent("""
    import os, sys
    from mcts_engine.config import build_run_config, load_recipe
    from mcts_engine.generate import default_data, run_generate
    from mcts_engine.teachers.sim import SimTeacher

    out, count, limit, *overrides = sys.argv[1:]
    fd = os.open(count, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    class Counting(SimTeacher):
        async def complete(self, state, n):
            os.write(fd, b".")
            return await super().complete(state, n)

    cfg = build_run_config(load_recipe(None, "sat2"), overrides, task="sat2", data=str(default_data("sat2")),
                           limit=int(limit), teacher__kind="sim")
    stats = run_generate(cfg, out, teacher=Counting(cfg.teacher, seed=cfg.seed), progress=False)
    print(stats["session"]["resumed"])
""")


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def test_every_reply_is_checkpointed_within_the_interval(tmp_path, monkeypatch):
    """Each reply a tree received is on disk within checkpoint_s (+ slack for a loaded machine)."""
    from mcts_engine.store import InflightLog

    monkeypatch.setattr(InflightLog, "compact", lambda self: None)  # keep the whole history to inspect
    interval, slack = 0.2, 1.0
    cfg = config("teacher.sim_latency_s=0.1", "store.checkpoint_s=0.2", "search.trees_in_flight=3", limit=3)
    replies: list[tuple[float, str]] = []

    class Logging(SimTeacher):
        async def complete(self, state, n):  # type: ignore[no-untyped-def]
            reply = await super().complete(state, n)
            replies.append((time.time(), state.context.sample.id))
            return reply

    run_generate(cfg, tmp_path / "run", teacher=Logging(cfg.teacher), progress=False)
    records = [json.loads(x) for x in (tmp_path / "run" / INFLIGHT).read_text().splitlines()]
    written: dict[str, list[float]] = {}
    for rec in records:
        written.setdefault(rec["sample_id"], []).append(rec["time"])
    last = {sid: t for t, sid in replies}  # a tree is stored right after its last reply
    checked = 0
    for t, sid in replies:
        if t + interval + slack < last[sid]:  # the tree was still in flight a whole interval later
            assert any(t <= w <= t + interval + slack for w in written.get(sid, [])), (sid, t)
            checked += 1
    assert checked >= 20  # the check covered a good part of the run


@pytest.mark.parametrize("sig, code, task, recipe", [
    (signal.SIGTERM, 143, "vstar", "vstar_multiturn"),
    (signal.SIGINT, 130, "sat2", None),
])
def test_signal_checkpoints_every_tree_in_flight_then_resumes(tmp_path, sig, code, task, recipe):
    out = tmp_path / "run"
    # slow enough that the 8 samples cannot all finish in the 0.3 s between the first tree and the signal
    args = ["generate", "--no-progress", "--task", task, "--out", str(out), "--limit", "8",
            "--set", "teacher.sim_latency_s=0.1", "--set", "search.trees_in_flight=3"]
    if recipe:
        args += ["--recipe", recipe]
    no_periodic = ["--set", "store.checkpoint_s=600"]  # only the signal's flush writes checkpoints
    proc = subprocess.Popen([sys.executable, "-m", "mcts_engine.cli", *args, *no_periodic], env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 20
    while time.time() < deadline and len(tree_lines(out)) < 1:
        time.sleep(0.05)
    time.sleep(0.3)  # trees in flight have nodes
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == code, err
    msg = err.strip().splitlines()[-1]
    assert msg.startswith(f"interrupted by {sig.name}: ") and "rerun the same command to resume" in msg
    saved = int(msg.split(": ", 1)[1].split(" ")[0])
    finished = {r["sample_id"] for r in tree_lines(out)}
    ckpt = {sid: rec for sid, rec in read_inflight(out).items() if sid not in finished}
    assert saved >= 1 and len(ckpt) == saved and len(finished) < 8
    assert all(len(rec["tree"]["nodes"]) > 1 or rec["tree"]["stats"]["calls"] for rec in ckpt.values())
    assert json.loads((out / LOCK).read_text() or "{}") == {}  # released on the way out
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    recs = tree_lines(out)
    ids = [r["sample_id"] for r in recs]
    assert len(ids) == 8 and len(set(ids)) == 8
    assert json.loads((out / "stats.json").read_text())["session"]["resumed"] == saved
    final = {r["sample_id"]: r for r in recs}
    for sid, rec in ckpt.items():  # the checkpointed nodes were continued, not asked again
        n = len(rec["tree"]["nodes"])
        assert node_keys(final[sid])[:n] == node_keys(rec["tree"])
        assert final[sid]["stats"]["calls"] >= rec["tree"]["stats"]["calls"]
        assert final[sid]["stats"]["seconds"] > rec["tree"]["stats"]["seconds"] > 0  # both sessions' time
    if recipe:  # multi-turn: the continued trees have their crops
        for sid in ckpt:
            for node in final[sid]["nodes"]:
                if node["kind"] == "think":
                    assert (out / node["observation"]["image"]["file"]).exists()
    assert not (out / INFLIGHT).exists()  # compacted away on the clean finish


def test_kill_9_three_times_then_rerun_stores_each_sample_once_and_redoes_little(tmp_path):
    """Three kill -9 during a run, then a rerun to the end: every sample exactly once, every checkpointed
    node kept, and the requests asked again bounded by what the kill windows allow.

    Redone requests = requests sent (all sessions) - requests the final trees account for (their ``calls``
    carry over from the checkpoints). A kill loses the replies received since the last complete checkpoint
    and the requests in flight. Each of the F request slots gets at most one reply per latency L, and
    checkpoints are written every c (+ e for the write itself); a kill during a write falls back to the
    checkpoint before it: at most F * (2 (c + e) / L + 2) requests per kill. Each kill happens once the
    checkpoints of the unfinished trees hold more requests than that bound, so a run that did not continue
    from its checkpoints would exceed it."""
    out, count = tmp_path / "run", tmp_path / "count"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    F, L, c, e = 2, 0.05, 0.05, 0.1  # 1 tree x 1 simulation x (children 2 x rollouts 1) requests at once
    bound = round(F * (2 * (c + e) / L + 2))
    overrides = [f"teacher.sim_latency_s={L}", f"store.checkpoint_s={c}", "search.trees_in_flight=1",
                 "search.parallel_simulations=1", "search.children=2", "search.rollouts=1", "search.simulations=16",
                 "teacher.sim_mean_steps=4"]
    cmd = [sys.executable, str(driver), str(out), str(count), "3", *overrides]
    snapshots: list[dict[str, dict]] = []
    for _ in range(3):
        proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        started, deadline, fired = time.time(), time.time() + 15, False
        while time.time() < deadline and proc.poll() is None:
            done = {r["sample_id"] for r in tree_lines(out)}
            ck = {k: v for k, v in read_inflight(out).items() if k not in done}
            if any(v["time"] > started for v in ck.values()) and \
                    sum(v["tree"]["stats"]["calls"] for v in ck.values()) > bound:
                fired = True
                break
            time.sleep(0.02)
        if not fired:  # stop it before reading its stderr (a read of a running process waits for its end)
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate(timeout=10)
            pytest.fail(f"no kill point reached (checkpoints missing?) exit {proc.returncode}: {err.decode()[-2000:]}")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        done = {r["sample_id"] for r in tree_lines(out)}
        snapshots.append({k: v for k, v in read_inflight(out).items() if k not in done})
    res = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=40)
    assert res.returncode == 0, res.stderr[-2000:]
    assert int(res.stdout.split()[-1]) >= 1  # the last session continued checkpointed trees
    recs = tree_lines(out)
    ids = [r["sample_id"] for r in recs]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 3
    final = {r["sample_id"]: r for r in recs}
    for snap in snapshots:
        for sid, rec in snap.items():
            n = len(rec["tree"]["nodes"])
            assert node_keys(final[sid])[:n] == node_keys(rec["tree"]), sid
    sent = count.stat().st_size
    accounted = sum(r["stats"]["calls"] for r in recs)
    redone = sent - accounted
    print(f"requests sent {sent}, in the final trees {accounted}, redone {redone} (bound {3 * bound})")
    assert 0 <= redone <= 3 * bound, (sent, accounted, bound)


def test_resume_rebuilds_a_multiturn_search_from_its_checkpoint(tmp_path):
    """The resumed prompt states equal the ones the search built (crops read back, or cropped again when
    a crop file is gone), and the search continues within its budget."""
    import asyncio

    # near-point merging off: the sim points at the one target, and this test needs a tree several steps deep
    cfg = config("search.simulations=3", "search.min_point_distance=0", task="vstar", recipe="vstar_multiturn", limit=1)
    run, images = tmp_path / "run", tmp_path / "run" / "images"
    images.mkdir(parents=True)
    sample = next(iter(load_samples(default_data("vstar"), None, "vstar")))
    task = __import__("mcts_engine.tasks", fromlist=["get_task"]).get_task("vstar", {})
    ctx, imgs = prepare_context(sample, task, cfg, images)
    observe = make_observer(ctx, cfg.multiturn, images, cfg.teacher.image_format)
    from mcts_engine.search.tree import Tree

    tree = Tree(sample_id=sample.id, task="vstar", frame=ctx.frame, images=imgs)
    teacher = TrackedTeacher(SimTeacher(cfg.teacher, seed=1))
    verify = lambda a: task.verify(a, ctx.truth)  # noqa: E731
    first = TreeSearch(tree, PromptState(ctx), teacher, cfg.search, verify, observe=observe)
    asyncio.run(first.run())
    record = json.loads(json.dumps(snapshot(tree, first.counters, teacher.waiting)))
    deep = [n for n in tree.nodes if n.kind == "think" and n.depth >= 2]
    assert deep, "the search went at least two steps deep"

    def same(a: PromptState, b: PromptState) -> bool:
        return [(t.text, t.observation.text, [(i.key, i.data, i.frame) for i in t.observation.images])
                for t in a.turns] == [(t.text, t.observation.text, [(i.key, i.data, i.frame)
                                                                    for i in t.observation.images])
                                      for t in b.turns]

    back = resume(record, PromptState(ctx), run, observe)
    assert set(back.states) == set(first.states)
    assert all(same(back.states[i], first.states[i]) for i in first.states)
    assert back.counters.calls == first.counters.calls and back.counters.simulations == 3
    gone = run / deep[0].observation["image"]["file"]
    gone.unlink()  # a crop file lost: cropped again by the observer
    again = resume(record, PromptState(ctx), run, observe)
    assert same(again.states[deep[0].id], first.states[deep[0].id]) and gone.exists()
    cfg.search.simulations = 6
    more = TreeSearch(again.tree, PromptState(ctx), SimTeacher(cfg.teacher, seed=2), cfg.search, verify,
                      observe=observe, states=again.states, counters=again.counters)
    asyncio.run(more.run())
    assert more.counters.simulations == 6 and more.counters.calls > first.counters.calls
    assert node_keys(again.tree.to_dict())[:len(tree.nodes)] == node_keys(record)
    with pytest.raises(ValueError, match="images changed"):
        resume({**record, "images": [{"key": "other"}]}, PromptState(ctx), run, observe)


# --------------------------------------------------------------------------------------------
# Partial trees and teacher failures
# --------------------------------------------------------------------------------------------


def test_tree_with_teacher_errors_is_stored_with_its_counts(tmp_path):
    cfg = config(limit=3)
    teacher = FlakyTeacher(cfg.teacher, lambda sid, k: k in (2, 5))  # two failed requests per tree
    stats = run_generate(cfg, tmp_path / "run", teacher=teacher, progress=False)
    recs = tree_lines(tmp_path / "run")
    assert len(recs) == 3 and stats["failed"] == 0
    assert all(r["stats"]["errors"] >= 1 and len(r["nodes"]) > 1 for r in recs)


def test_run_stops_after_8_samples_in_a_row_with_nothing_usable(tmp_path):
    from mcts_engine.search.scheduler import Aborted

    cfg = config("search.trees_in_flight=1", limit=12)
    first = [s.id for s in load_samples(default_data("sat2"), None, "sat2")]
    ok = set(first[:1])  # the teacher serves the first sample, then goes down for good
    teacher = FlakyTeacher(cfg.teacher, lambda sid, k: sid not in ok)
    with pytest.raises(Aborted, match="8 samples in a row"):
        run_generate(cfg, tmp_path / "run", teacher=teacher, progress=False)
    store = RunStore(tmp_path / "run")
    assert len(store.failures()) == 8 and all("teacher error" in f["reason"] for f in store.failures())
    assert not (tmp_path / "run" / INFLIGHT).exists()  # a failed sample leaves no checkpoint to resume


# --------------------------------------------------------------------------------------------
# The lock
# --------------------------------------------------------------------------------------------


def test_second_process_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path):
    out = tmp_path / "run"
    args = ["--no-progress", "--out", str(out), "--limit", "3", "--set", "teacher.sim_latency_s=0.05"]
    holder = subprocess.Popen(
        [sys.executable, "-m", "mcts_engine.cli", "generate", *args, "--set", "teacher.sim_latency_s=5"],
        env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 20
        while time.time() < deadline and not ((out / LOCK).exists() and (out / LOCK).read_text()):
            time.sleep(0.05)
        for cmd in (["generate", *args], ["eval", "--no-progress", "--out", str(out), "--limit", "2"]):
            res = runner.invoke(app, cmd)
            assert res.exit_code == 2, res.output
            errors = [x for x in res.output.splitlines() if x.startswith("error:")]
            assert len(errors) == 1 and f"locked by pid {holder.pid}" in errors[0], res.output
            assert "Traceback" not in res.output
        assert not (out / TREES).exists()  # the refused commands wrote nothing
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
    assert json.loads((out / LOCK).read_text())["pid"] == holder.pid  # a stale lock file remains
    res = runner.invoke(app, ["generate", *args, "--force"])  # the holder's config had another latency
    assert res.exit_code == 0, res.output
    assert json.loads((out / "stats.json").read_text())["session"]["lock_taken_over_from"]["pid"] == holder.pid
    assert len(tree_lines(out)) == 3


def test_two_generates_at_once_store_each_sample_once(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mcts_engine.cli", "generate", "--no-progress", "--out", str(out), "--limit", "4",
           "--set", "teacher.sim_latency_s=0.1", "--set", "search.trees_in_flight=4"]
    procs = [subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=40) + (p.returncode,) for p in procs]
    codes = sorted(r[2] for r in results)
    assert codes == [0, 2], results
    refused = next(r for r in results if r[2] == 2)
    assert "locked by pid" in refused[1]
    ids = [r["sample_id"] for r in tree_lines(out)]
    assert len(ids) == 4 and len(set(ids)) == 4


# --------------------------------------------------------------------------------------------
# Bad input, bad disk
# --------------------------------------------------------------------------------------------


def test_out_that_is_a_file_is_refused_before_any_work(tmp_path):
    f = tmp_path / "taken.txt"
    f.write_text("keep")
    # an unreachable teacher: a check made before the --out check would answer "cannot reach"
    res = runner.invoke(app, ["generate", "--no-progress", "--out", str(f), "--teacher", "openai",
                              "--base-url", "http://127.0.0.1:9/v1", "--set", "teacher.max_retries=0"])
    assert res.exit_code == 2 and "is a file, not a run directory" in res.output, res.output
    assert res.output.count("error:") == 1 and "Traceback" not in res.output
    res = runner.invoke(app, ["eval", "--no-progress", "--out", str(f), "--limit", "1"])
    assert res.exit_code == 2 and "is a file, not a run directory" in res.output, res.output
    assert f.read_text() == "keep"


def test_non_utf8_line_in_trees_is_skipped_and_counted_by_export_and_report(tmp_path):
    run = tmp_path / "run"
    assert runner.invoke(app, ["generate", "--no-progress", "--out", str(run), "--limit", "3"]).exit_code == 0
    lines = (run / TREES).read_bytes().splitlines(keepends=True)
    (run / TREES).write_bytes(lines[0] + b'{"sample_id": "\xff\xfe"}\n' + b"".join(lines[1:]))
    res = runner.invoke(app, ["export", "--run", str(run), "--kind", "sft", "--out", str(tmp_path / "exp")])
    assert res.exit_code == 0, res.output
    assert "exported 3/3 samples" in res.output and f"{TREES}:2: not valid UTF-8" in res.output
    res = runner.invoke(app, ["report", "--run", str(run)])
    assert res.exit_code == 0 and "3 trees" in res.output, res.output
    assert f"{TREES}:2: not valid UTF-8" in (run / "report.html").read_text()


@pytest.mark.parametrize("target", [TREES, INFLIGHT])
def test_disk_full_stops_the_run_with_one_line_and_keeps_everything(tmp_path, monkeypatch, target):
    out = tmp_path / "run"
    real_write = os.write
    appends = {"n": 0}

    def disk(fd: int, data) -> int:  # type: ignore[no-untyped-def]
        if os.readlink(f"/proc/self/fd/{fd}").endswith(target):
            appends["n"] += 1
            if appends["n"] > 2:  # the third append finds the disk full, after half of it landed
                real_write(fd, bytes(data[: len(data) // 2]))
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(runfiles, "_write", disk)
    args = ["generate", "--no-progress", "--out", str(out), "--limit", "8", "--set", "teacher.sim_latency_s=0.02",
            "--set", "store.checkpoint_s=0.05", "--set", "search.trees_in_flight=2"]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    line = res.output.strip().splitlines()[-1]
    assert line.startswith(f"error: stopped: cannot write {out / target}: No space left on device; kept on disk: ")
    assert "rerun the same command to resume" in line and "Traceback" not in res.output
    for name in (TREES, INFLIGHT):  # no torn line anywhere
        p = out / name
        assert not p.exists() or p.read_bytes() == b"" or p.read_bytes().endswith(b"\n")
    kept = [r["sample_id"] for r in tree_lines(out)]
    assert len(kept) < 8 and (target != TREES or len(kept) == 2)
    monkeypatch.setattr(runfiles, "_write", real_write)  # space freed
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    ids = [r["sample_id"] for r in tree_lines(out)]
    assert ids[: len(kept)] == kept and len(ids) == 8 and len(set(ids)) == 8


def test_generate_refuses_run_error_not_traceback_for_unwritable_parent(tmp_path):
    parent = tmp_path / "file"
    parent.write_text("x")
    with pytest.raises(RunError, match="is a file"):
        run_generate(config(limit=1), parent / "run", progress=False)


def test_disk_full_while_saving_an_image_stops_the_run(tmp_path, monkeypatch):
    import mcts_engine.generate as generate

    def full(enc, image_dir):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device", str(image_dir / f"{enc.key}.png"))

    monkeypatch.setattr(generate, "save_image", full)
    res = runner.invoke(app, ["generate", "--no-progress", "--out", str(tmp_path / "run"), "--limit", "3"])
    assert res.exit_code == 2, res.output
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("error: stopped: cannot write ") and "No space left on device; kept on disk: 0 finished" in line
    assert not RunStore(tmp_path / "run").failures()  # a full disk is not the samples' fault


def test_checkpoint_interval_is_a_store_key_outside_the_config_hash():
    from mcts_engine.config import ConfigError

    a, b = config(), config("store.checkpoint_s=1.5")
    assert 0 < a.store.checkpoint_s <= 10 and b.store.checkpoint_s == 1.5
    assert a.hash() == b.hash()  # a rerun may checkpoint more or less often
    for bad in ("0", "-2"):
        with pytest.raises(ConfigError, match="store.checkpoint_s"):
            config(f"store.checkpoint_s={bad}")
