"""Search trees (de)serialization and the run directory (resume, torn and undecodable lines, failures, the lock,
appends on a failing disk, checkpoints of trees in flight)."""

from __future__ import annotations

import copy
import errno
import json
import os
import socket
from pathlib import Path

import pytest

from mcts_engine.frame import Frame
from mcts_engine.search.tree import Node, Tree
from mcts_engine.store import (
    CONFIG,
    FAILURES,
    INFLIGHT,
    LOCK,
    STATS,
    TREES,
    DuplicateSample,
    RunError,
    RunLock,
    RunLocked,
    RunStore,
    StoreWriteError,
)
from mcts_engine.store import files as runfiles

FRAME = Frame(width=644, height=476, orig_width=640, orig_height=480)


def make_tree(sample_id: str = "s1") -> Tree:
    t = Tree(sample_id=sample_id, task="sat2", frame=FRAME, sample={"id": sample_id, "question": "q?"},
             truth={"answer": "left", "choices": ["left", "right"]}, prompt={"system": "sys", "user": "q?"},
             stats={"calls": 3, "completion_tokens": 40})
    a = t.add(t.root, text="<think> the chair (10, 20). </think>", kind="think", thought="the chair (10, 20).",
              point=(10, 20), source="expand", finish_reason="stop", completion_tokens=12)
    b = t.add(t.root, text="<think> the box (30, 40). </think>", kind="think", thought="the box (30, 40).",
              point=(30, 40), source="expand", completion_tokens=9,
              observation={"image_key": "abc", "crop": [0, 0, 100, 100]})
    t.add(a, text="<answer> left </answer>", kind="answer", answer="left", source="rollout", reward=1.0, correct=True,
          verdict="match", finish_reason="stop", completion_tokens=5)
    t.add(b, text="<answer> right </answer>", kind="answer", answer="right", source="rollout", reward=0.0,
          correct=False, verdict="chose option B", forced=True, completion_tokens=4)
    a.expanded = True
    t.root.expanded = True
    t.root.visits, t.root.value_sum = 2, 1.0
    a.visits, a.value_sum = 1, 1.0
    b.visits = 1
    b.pending = 3  # virtual loss is in-memory only
    t.rejected.append({"parent": 0, "text": "<think> off (999, 999). </think>", "reason": "point outside frame"})
    return t


# --------------------------------------------------------------------------------------------
# Tree / Node
# --------------------------------------------------------------------------------------------


def test_tree_round_trip_through_json() -> None:
    t = make_tree()
    d = t.to_dict()
    back = Tree.from_dict(json.loads(json.dumps(d)))
    assert back.to_dict() == d
    assert back.frame == FRAME
    assert back.solved and d["solved"] is True
    assert d["root_value"] == 0.5
    assert [n.kind for n in back.nodes] == ["root", "think", "think", "answer", "answer"]
    assert back.nodes[1].point == (10, 20) and isinstance(back.nodes[1].point, tuple)
    assert back.nodes[2].observation == {"image_key": "abc", "crop": [0, 0, 100, 100]}
    assert back.nodes[4].forced and back.nodes[4].verdict == "chose option B"
    assert back.nodes[2].pending == 0 and "pending" not in json.dumps(d)
    assert back.path(back.nodes[3]) == [back.nodes[1], back.nodes[3]]
    assert back.path_points(back.nodes[3]) == [(10, 20)]
    assert back.rejected == t.rejected


def test_node_round_trip_each_kind() -> None:
    t = make_tree()
    for n in t.nodes:
        again = Node.from_dict(json.loads(json.dumps(n.to_dict())))
        assert again.to_dict() == n.to_dict()
    root = t.root.to_dict()
    assert "answer" not in root and "point" not in root
    think = t.nodes[1].to_dict()
    assert think["point"] == [10, 20] and "answer" not in think


def test_unsolved_tree() -> None:
    t = Tree(sample_id="x", task="sat2", frame=FRAME)
    assert len(t.nodes) == 1 and t.root.parent is None and not t.solved
    assert Tree.from_dict(t.to_dict()).to_dict() == t.to_dict()


def _corrupt(mutate) -> dict:  # type: ignore[no-untyped-def]
    d = copy.deepcopy(make_tree().to_dict())
    mutate(d)
    return d


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("nodes"),
        lambda d: d.pop("frame"),
        lambda d: d.pop("sample_id"),
        lambda d: d["frame"].pop("width"),
        lambda d: d.__setitem__("nodes", None),
        lambda d: d.__setitem__("nodes", ["not a node"]),
        lambda d: d["nodes"].__setitem__(1, 7),
        lambda d: d["nodes"][1].pop("id"),
        lambda d: d["nodes"][1].__setitem__("id", 5),
        lambda d: d["nodes"][1].__setitem__("parent", 3),
        lambda d: d["nodes"][1].__setitem__("parent", None),
        lambda d: d["nodes"][1].__setitem__("children", [99]),
        lambda d: d["nodes"][1].__setitem__("children", [0]),
        lambda d: d["nodes"][1].__setitem__("point", [1]),
        lambda d: d["nodes"][1].__setitem__("visits", "many"),
        lambda d: d.__setitem__("stats", [1, 2, 3]),
    ],
)
def test_corrupt_record_raises_value_error(mutate) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError) as exc:
        Tree.from_dict(_corrupt(mutate))
    assert "\n" not in str(exc.value)


def test_non_dict_record_raises_value_error() -> None:
    for bad in ([1, 2], "tree", None):
        with pytest.raises(ValueError):
            Tree.from_dict(bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# RunStore
# --------------------------------------------------------------------------------------------


def open_store(path: Path, h: str = "hash-a", force: bool = False) -> RunStore:
    return RunStore.open_for_generate(path, {"search": {"simulations": 8}, "hash_of": h}, h, force=force,
                                      extra={"teacher": "sim (scripted)"})


def test_new_run_directory_writes_config(tmp_path: Path) -> None:
    store = open_store(tmp_path / "run")
    cfg = store.config()
    assert cfg["hash"] == "hash-a" and cfg["config"]["search"]["simulations"] == 8
    assert cfg["teacher"] == "sim (scripted)"
    assert store.finished_ids() == set() and store.failures() == [] and store.stats() == {}
    assert list(store.iter_trees()) == []


def test_append_and_reopen_same_hash(tmp_path: Path) -> None:
    store = open_store(tmp_path / "run")
    store.append_tree(make_tree("a"))
    store.append_tree(make_tree("b").to_dict())
    store.close()
    again = open_store(tmp_path / "run")
    assert again.finished_ids() == {"a", "b"}
    trees = [t for t, err in again.iter_trees()]
    assert [t.sample_id for t in trees if t] == ["a", "b"]
    assert trees[0] is not None and trees[0].to_dict() == make_tree("a").to_dict()


def test_config_hash_mismatch_refused_unless_force(tmp_path: Path) -> None:
    run = tmp_path / "run"
    store = open_store(run)
    store.append_tree(make_tree("a"))
    store.close()
    with pytest.raises(RunError) as exc:
        open_store(run, "hash-b")
    msg = str(exc.value)
    assert "hash-a" in msg and "hash-b" in msg and "--force" in msg and str(run) in msg
    assert open_store(run).config()["hash"] == "hash-a"  # the refused attempt changed nothing
    forced = open_store(run, "hash-b", force=True)
    cfg = forced.config()
    assert cfg["hash"] == "hash-b"
    assert cfg["history"][-1]["hash"] == "hash-a"
    assert forced.finished_ids() == {"a"}  # forcing keeps what was computed
    forced.close()
    # Same hash again keeps the history.
    assert open_store(run, "hash-b").config()["history"][-1]["hash"] == "hash-a"


def test_unreadable_config_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / CONFIG).write_text("{not json")
    with pytest.raises(RunError, match="unreadable config"):
        open_store(run)


def test_torn_last_line_is_cut_on_reopen(tmp_path: Path) -> None:
    run = tmp_path / "run"
    store = open_store(run)
    store.append_tree(make_tree("a"))
    store.append_tree(make_tree("b"))
    good = (run / TREES).read_bytes()
    torn = json.dumps(make_tree("c").to_dict())[:150]
    with (run / TREES).open("a") as fh:
        fh.write(torn)  # killed mid-write: no newline
    # Before the repair a reader sees the torn line as an error, and "c" is not finished.
    assert store.finished_ids() == {"a", "b"}
    assert [err is not None for _, err in store.iter_trees()] == [False, False, True]
    store.close()
    again = open_store(run)
    assert (run / TREES).read_bytes() == good
    assert again.finished_ids() == {"a", "b"}
    again.append_tree(make_tree("c"))
    assert again.finished_ids() == {"a", "b", "c"}
    assert all(err is None for _, err in again.iter_trees())


def test_torn_first_and_only_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    open_store(run)
    (run / TREES).write_text('{"sample_id": "a", "nod')
    again = open_store(run)
    assert (run / TREES).read_text() == ""
    assert again.finished_ids() == set()


def test_complete_file_is_untouched_on_reopen(tmp_path: Path) -> None:
    run = tmp_path / "run"
    store = open_store(run)
    store.append_tree(make_tree("a"))
    store.close()
    before = (run / TREES).read_bytes()
    open_store(run)
    assert (run / TREES).read_bytes() == before


def test_failures_recorded_and_torn_failure_line_cut(tmp_path: Path) -> None:
    run = tmp_path / "run"
    store = open_store(run)
    store.append_failure("x", "samples.jsonl:3: field 'answer' is missing")
    store.append_failure("y", "image not found: images/y.png")
    fails = store.failures()
    assert [f["id"] for f in fails] == ["x", "y"]
    assert fails[0]["reason"] == "samples.jsonl:3: field 'answer' is missing" and fails[0]["time"]
    assert "x" not in store.finished_ids()  # a failure is not a finished sample: resume retries it
    with (run / FAILURES).open("a") as fh:
        fh.write('{"id": "z", "rea')
    assert [f["id"] for f in store.failures()] == ["x", "y"]  # a torn line is skipped when reading
    store.close()
    store = open_store(run)
    assert (run / FAILURES).read_text().endswith("\n")
    store.append_failure("z", "timeout")
    assert [f["id"] for f in store.failures()] == ["x", "y", "z"]


def test_iter_trees_reports_corrupt_lines_as_errors(tmp_path: Path) -> None:
    run = tmp_path / "run"
    store = open_store(run)
    store.append_tree(make_tree("a"))
    bad_node = make_tree("b").to_dict()
    bad_node["nodes"][2]["parent"] = 9
    non_dict_node = make_tree("c").to_dict()
    non_dict_node["nodes"] = ["oops"]
    with (run / TREES).open("a") as fh:
        fh.write("this is not json\n")
        fh.write("[1, 2, 3]\n")
        fh.write(json.dumps({"no_sample_id": 1}) + "\n")
        fh.write(json.dumps(bad_node) + "\n")
        fh.write(json.dumps(non_dict_node) + "\n")
        fh.write("\n")
    store.append_tree(make_tree("d"))
    results = list(store.iter_trees())  # never raises
    assert [t.sample_id if t else None for t, _ in results] == ["a", None, None, None, None, None, "d"]
    errors = [e for _, e in results if e]
    assert len(errors) == 5
    assert errors[0].startswith(f"{TREES}:2:") and "not valid JSON" in errors[0]
    assert errors[1].startswith(f"{TREES}:3:") and "not a tree record" in errors[1]
    assert errors[2].startswith(f"{TREES}:4:")
    assert errors[3].startswith(f"{TREES}:5:") and "b" in errors[3]
    assert errors[4].startswith(f"{TREES}:6:")
    assert all("\n" not in e for e in errors)


def test_stats_written_atomically(tmp_path: Path) -> None:
    store = open_store(tmp_path / "run")
    store.write_stats({"solve_rate": 0.5, "calls": 10})
    store.write_stats({"solve_rate": 0.75, "calls": 20})
    assert store.stats() == {"solve_rate": 0.75, "calls": 20}
    assert not list((tmp_path / "run").glob("*.tmp"))
    assert (tmp_path / "run" / STATS).exists()


def test_open_existing(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="not a run directory"):
        RunStore.open_existing(tmp_path)
    open_store(tmp_path / "run").append_tree(make_tree("a"))
    assert RunStore.open_existing(tmp_path / "run").finished_ids() == {"a"}


# --------------------------------------------------------------------------------------------
# Reading what a kill, a bad disk or a hand edit left behind
# --------------------------------------------------------------------------------------------


def test_non_utf8_and_torn_lines_are_errors_naming_the_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    store = open_store(run)
    store.append_tree(make_tree("a"))
    with (run / TREES).open("ab") as fh:
        fh.write(b'{"sample_id": "caf\xe9", "nodes": []}\n')  # latin-1, not UTF-8
    store.append_tree(make_tree("b"))
    with (run / TREES).open("ab") as fh:
        fh.write(json.dumps(make_tree("c").to_dict()).encode()[:90])  # torn by a kill, not yet repaired
    results = list(store.iter_trees())  # never raises
    assert [t.sample_id if t else None for t, _ in results] == ["a", None, "b", None]
    errors = [e for _, e in results if e]
    assert errors[0] == f"{TREES}:2: not valid UTF-8 (byte 0xe9 at column 19)"
    assert errors[1].startswith(f"{TREES}:4: not valid JSON") and "torn" in errors[1]
    assert store.finished_ids() == {"a", "b"}
    with (run / FAILURES).open("ab") as fh:
        fh.write(b'{"id": "x", "reason": "\xff"}\n')
    store.append_failure("y", "timeout")
    assert [f["id"] for f in store.failures()] == ["y"]
    errs = [e for _, e in store.iter_failures() if e]
    assert errs == [f"{FAILURES}:1: not valid UTF-8 (byte 0xff at column 24)"]


def test_append_tree_refuses_a_finished_sample(tmp_path: Path) -> None:
    store = open_store(tmp_path / "run")
    store.append_tree(make_tree("a"))
    with pytest.raises(DuplicateSample, match="a: already finished"):
        store.append_tree(make_tree("a").to_dict())
    store.close()
    again = open_store(tmp_path / "run")  # the refusal holds across sessions
    with pytest.raises(DuplicateSample):
        again.append_tree(make_tree("a"))
    assert (tmp_path / "run" / TREES).read_text().count("\n") == 1


def test_failed_append_leaves_no_partial_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    store = open_store(run)
    store.append_tree(make_tree("a"))
    before = (run / TREES).read_bytes()

    def half_then_full(fd: int, data: memoryview) -> int:
        os.write(fd, bytes(data[: len(data) // 2]))  # half the line reaches the disk, then it is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runfiles, "_write", half_then_full)
    with pytest.raises(StoreWriteError) as exc:
        store.append_tree(make_tree("b"))
    assert str(exc.value) == f"cannot write {run / TREES}: No space left on device"
    assert (run / TREES).read_bytes() == before  # cut back to the last complete line
    monkeypatch.setattr(runfiles, "_fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    monkeypatch.setattr(runfiles, "_write", os.write)
    with pytest.raises(StoreWriteError, match="I/O error"):
        store.append_failure("b", "x")
    assert not (run / FAILURES).exists() or (run / FAILURES).read_bytes() == b""
    monkeypatch.undo()
    store.append_tree(make_tree("b"))  # the store goes on once the disk does
    assert store.finished_ids() == {"a", "b"}


# --------------------------------------------------------------------------------------------
# The lock
# --------------------------------------------------------------------------------------------


def test_lock_refuses_a_second_writer_and_names_the_holder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    store = open_store(run)
    holder = json.loads((run / LOCK).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    with pytest.raises(RunLocked) as exc:
        open_store(run)
    msg = str(exc.value)
    assert f"pid {os.getpid()}" in msg and str(run) in msg and "\n" not in msg
    with pytest.raises(RunLocked):
        RunLock.check(run)
    store.close()
    assert (run / LOCK).read_text() == ""  # released: emptied, never deleted
    RunLock.check(run)
    with open_store(run) as again:
        assert again.lock is not None and again.lock.took_over is None


def test_stale_pid_file_is_taken_over(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    dead = {"pid": 2**22 + 12345, "host": socket.gethostname(), "since": "2026-01-01T00:00:00"}
    (run / LOCK).write_text(json.dumps(dead))  # no process holds a flock on it
    RunLock.check(run)
    store = open_store(run)
    assert store.lock is not None and store.lock.took_over == dead
    assert json.loads((run / LOCK).read_text())["pid"] == os.getpid()
    store.close()


def test_without_flock_the_pid_file_decides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_flock(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(runfiles.fcntl, "flock", no_flock)
    run = tmp_path / "run"
    run.mkdir()
    live = {"pid": os.getppid(), "host": socket.gethostname()}  # a live process that is not us
    (run / LOCK).write_text(json.dumps(live))
    with pytest.raises(RunLocked, match=f"pid {os.getppid()}"):
        open_store(run)
    (run / LOCK).write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname()}))
    with open_store(run) as store:
        assert store.lock is not None and store.lock.took_over["pid"] == 2**22 + 12345


def test_out_that_is_a_file_is_a_one_line_error(tmp_path: Path) -> None:
    f = tmp_path / "results.txt"
    f.write_text("keep me")
    for bad in (f, f / "run"):
        with pytest.raises(RunError) as exc:
            open_store(bad)
        assert "is a file" in str(exc.value) and "\n" not in str(exc.value)
    assert f.read_text() == "keep me"


# --------------------------------------------------------------------------------------------
# Checkpoints of trees in flight
# --------------------------------------------------------------------------------------------


def test_inflight_log_newest_wins_drops_and_compacts(tmp_path: Path) -> None:
    run = tmp_path / "run"
    store = open_store(run)
    log = store.inflight("hash-a")
    assert log.take("a") is None and not (run / INFLIGHT).exists()
    t = make_tree("a")
    log.write({"a": t.to_dict(), "b": make_tree("b").to_dict()})
    t.stats["calls"] = 9
    log.write({"a": t.to_dict()})
    log.write({"c": make_tree("c").to_dict()})
    log.drop("c", "teacher error")  # c failed: its retry starts afresh
    store.append_tree(make_tree("b"))  # b finished
    with (run / INFLIGHT).open("ab") as fh:
        fh.write(b'{"sample_id": "a", "hash": "hash-a", "tree": {"torn')  # a kill mid-write
    again = store.inflight("hash-a")
    assert set(again.latest) == {"a"}  # b finished, c dropped, the torn line cut
    rec = again.take("a")
    assert rec is not None and rec["stats"]["calls"] == 9 and Tree.from_dict(rec).to_dict()["nodes"] == t.to_dict()["nodes"]
    assert store.inflight("hash-b").latest == {}  # a checkpoint of another config is never resumed
    again.compact_min_bytes = 1  # compact once the file outgrows 4 x its live records
    for _ in range(3):
        again.write({"d": make_tree("d").to_dict()})
        assert len((run / INFLIGHT).read_bytes().splitlines()) > 2
    again.write({"d": make_tree("d").to_dict()})
    lines = (run / INFLIGHT).read_bytes().splitlines()
    assert sorted(json.loads(x)["sample_id"] for x in lines) == ["a", "d"]
    again.forget("a")
    again.forget("d")
    again.compact()  # a clean finish with nothing in flight
    assert not (run / INFLIGHT).exists()
    store.close()
