"""``generate`` end to end against the in-package OpenAI stand-in (``testing/stub_server.py``), with known
answers read off the server's own records (``keep_bodies``):

- every expansion request asks ``n = search.children − existing children``, every rollout request
  ``search.rollouts`` (its first step) or 1 (a later step);
- request bodies are append-only along a path: each request's messages extend those of the request
  that produced its last step (what a server's prefix cache relies on);
- the call and choice totals in ``stats.json`` and in each tree's stats equal what the server recorded;
- ``teacher.concurrency`` bounds the requests in flight at the server;
- the server dying mid-run ends the run with the documented one-line stop, finished and partial trees
  kept, the rest recorded as failures, nothing twice and no traceback.

The replies are scripted so that every one is unique (a tag ``r<k>``, a point no other reply uses, an
answer no option matches): nothing merges or is rejected, so each node of each tree is exactly one
choice of exactly one recorded request, and the trees can be checked against the requests one to one.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mcts_engine.cli import app
from mcts_engine.config import build_run_config, load_recipe
from mcts_engine.generate import run_generate
from mcts_engine.search.tree import Node, Tree
from mcts_engine.testing.prompt_view import read_prompt
from mcts_engine.testing.stub_server import StubServer

CHILDREN, ROLLOUTS = 3, 2
TAG = re.compile(r"(?<![A-Za-z0-9])r(\d+)(?![0-9])")


class UniqueReplies:
    """The stub's ``replies`` hook: each choice is unique and tagged; remembers which request got which tags."""

    def __init__(self) -> None:
        self.count = 0
        self.tags: dict[int, list[int]] = {}  # id(request body) -> the tags of its choices, in order
        self.lock = threading.Lock()

    def __call__(self, body: dict[str, Any], i: int, rng) -> str:
        view = read_prompt(body)
        with self.lock:
            k = self.count
            self.count += 1
            self.tags.setdefault(id(body), []).append(k)
        if view.forced:
            return f" guess-r{k} </answer>" if view.continuing else f"<answer> guess-r{k} </answer>"
        if rng.random() < 0.2 + 0.25 * view.steps:
            return f"<answer> guess-r{k} </answer>"
        w, h = view.frame
        return f"<think> Region r{k} is at ({1 + k % (w - 2)}, {1 + (k // (w - 2)) % (h - 2)}). </think>"


class KillSwitch(UniqueReplies):
    """Sets ``fire`` while answering a request past the first ``after`` choices that extends a path (its
    tree has nodes besides the root, so killing the server then leaves a partial tree behind)."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.fire = threading.Event()

    def __call__(self, body: dict[str, Any], i: int, rng) -> str:
        text = super().__call__(body, i, rng)
        if self.count > self.after and read_prompt(body).steps >= 1:
            self.fire.set()
        return text


def tag_of(text: str) -> int:
    m = TAG.search(text)
    assert m is not None, text
    return int(m.group(1))


def flatten(body: dict[str, Any]) -> str:
    """The request's messages as one string; a final assistant message that the server continues is left
    open (its raw text, no closing quote), so a continued request's string extends its parent's."""
    msgs = body["messages"]
    parts = [json.dumps(m["role"]) + json.dumps(m["content"]) for m in msgs]
    if body.get("continue_final_message"):
        parts[-1] = json.dumps(msgs[-1]["role"]) + msgs[-1]["content"]
    return "".join(parts)


def config(url: str, *overrides: str):
    return build_run_config(load_recipe(None, "sat2"), [
        "teacher.kind=openai", f"teacher.base_url={url}", "teacher.model=stub-model", "teacher.timeout_s=20",
        f"search.children={CHILDREN}", f"search.rollouts={ROLLOUTS}", "search.max_depth=3",
        "search.min_point_distance=0", "search.selection=uct",
        "search.widen_alpha=0", "search.max_children=0",  # no widening: an expansion asks children − existing
        *overrides,
    ], seed=0)


def read_trees(run: Path) -> list[Tree]:
    return [Tree.from_dict(json.loads(line)) for line in (run / "trees.jsonl").read_text().splitlines()]


def generate(tmp_path: Path, style: str, *overrides: str, latency_s: float = 0.0):
    replies = UniqueReplies()
    with StubServer(keep_bodies=True, replies=replies, latency_s=latency_s) as srv:
        cfg = config(srv.url, f"teacher.prompt_style={style}", *overrides)
        stats = run_generate(cfg, tmp_path / "run", progress=False)
        records = list(srv.stats.records)
        served = srv.stats.summary()
    return stats, read_trees(tmp_path / "run"), records, served, replies


@pytest.mark.parametrize("style", ["continue", "plain"])
def test_requests_match_the_trees_one_to_one(tmp_path, style):
    # one simulation at a time per tree (no request overtakes another of the same tree), three trees at once
    stats, trees, records, served, replies = generate(
        tmp_path, style, "limit=6", "search.simulations=5", "search.parallel_simulations=1",
        "search.trees_in_flight=3", "teacher.concurrency=4")
    assert stats["finished"] == 6 and stats["failed"] == 0
    made: dict[int, tuple[Tree, Node]] = {}  # tag -> the node that choice became
    for tree in trees:
        assert tree.rejected == [] and tree.stats["merged"] == 0 and tree.stats["merged_near"] == 0
        for node in tree.nodes[1:]:
            assert tag_of(node.text) not in made
            made[tag_of(node.text)] = (tree, node)
    assert all(r["status"] == 200 for r in records)

    asked_by: dict[int, dict[str, Any]] = {}  # tag -> the request that returned it
    calls: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for r in records:
        tags = replies.tags[id(r["body"])]
        assert r["body"]["n"] == r["n"] == len(tags)
        hits = [made[t] for t in tags]  # KeyError: a choice the server sent is in no tree
        tree = hits[0][0]
        assert all(t is tree for t, _ in hits) and len({n.parent for _, n in hits}) == 1
        parent = tree.nodes[hits[0][1].parent]
        calls[tree.sample_id] += 1
        asked_by.update({t: r for t in tags})
        kids = [tree.nodes[c] for c in parent.children]
        first = kids.index(hits[0][1])
        assert kids[first:first + len(tags)] == [n for _, n in hits]  # one request's choices land together
        sources = {n.source for _, n in hits}
        assert len(sources) == 1
        if sources == {"expand"}:  # an expansion: the children budget less the children already there
            assert r["n"] == CHILDREN - first, (parent.id, first, r["n"])
            assert all(k.source == "rollout" for k in kids[:first])
            kinds["expand after rollouts" if first else "expand"] += 1
        elif parent.source == "expand":  # the first steps of a new child's rollouts, in one request
            assert r["n"] == ROLLOUTS and first == 0
            kinds["rollout start"] += 1
        else:  # a later rollout step
            assert parent.source == "rollout" and r["n"] == 1
            kinds["rollout step"] += 1
        if parent.parent is not None:  # append-only: extends the request that produced the parent
            before, now = flatten(asked_by[tag_of(parent.text)]["body"]), flatten(r["body"])
            assert now.startswith(before), (before[-200:], now[-200:])
            assert f"r{tag_of(parent.text)}" in now[len(before):]  # ... by the parent's step
    assert set(asked_by) == set(made)  # every node is a choice of exactly one recorded request
    assert min(kinds.values()) >= 1 and len(kinds) == 4, kinds  # every kind of request was exercised

    # call totals: per tree, per run, and as the server counted them
    assert {t.sample_id: t.stats["calls"] for t in trees} == dict(calls)
    on_disk = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert on_disk["calls"] == stats["calls"] == len(records) == served["chat_requests"]
    assert on_disk["choices"] == served["choices"] == sum(t.stats["choices"] for t in trees) == len(made)


def test_concurrency_bounds_the_requests_in_flight_at_the_server(tmp_path):
    # six trees with two simulations each want up to 12 requests at once; the teacher allows 3
    stats, trees, _, served, _ = generate(
        tmp_path, "continue", "limit=6", "search.simulations=3", "search.parallel_simulations=2",
        "search.trees_in_flight=6", "teacher.concurrency=3", latency_s=0.03)
    assert stats["finished"] == 6
    assert served["max_inflight"] == 3
    assert stats["calls"] == served["chat_requests"] == sum(t.stats["calls"] for t in trees)


def test_server_dying_mid_run_stops_with_one_line_and_keeps_what_was_done(tmp_path, monkeypatch):
    import mcts_engine.teachers.openai_compat as oc

    async def no_wait(delay: float) -> None:  # the retry after a refused connection comes at once
        return None

    monkeypatch.setattr(oc, "_backoff_sleep", no_wait)
    out = tmp_path / "run"
    replies = KillSwitch(after=12)
    # each choice takes 0.1 s: the request that pulls the switch is still in flight when the server goes
    srv = StubServer(keep_bodies=True, replies=replies, latency_s=0.1).start_in_thread()
    killed = threading.Event()

    def kill() -> None:
        if replies.fire.wait(30):
            srv.stop_thread()
            killed.set()

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    try:
        res = CliRunner().invoke(app, [
            "generate", "--task", "sat2", "--base-url", srv.url, "--model", "stub-model", "--limit", "20",
            "--out", str(out), "--no-progress", "--set", "teacher.max_retries=1", "--set", "teacher.timeout_s=5",
            "--set", "search.simulations=4", "--set", f"search.children={CHILDREN}",
            "--set", f"search.rollouts={ROLLOUTS}", "--set", "search.max_depth=3", "--set", "search.min_point_distance=0",
            "--set", "search.trees_in_flight=2", "--set", "search.parallel_simulations=1",
        ])
    finally:
        fired = replies.fire.is_set()
        replies.fire.set()  # had the run ended first, the killer must not wait
        killer.join(35)
        srv.stop_thread()
    assert fired and killed.is_set(), res.output
    assert "Traceback" not in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2 and len(errors) == 1, res.output
    assert errors[0].startswith("error: stopped: 8 samples in a row got nothing usable from the teacher")
    assert errors[0].endswith("finished samples are kept, rerun to resume")
    assert not (out / "errors.log").exists()  # no internal error anywhere

    trees = read_trees(out)
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    stored, failed = [t.sample_id for t in trees], [f["id"] for f in failures]
    assert len(set(stored)) == len(stored) and len(set(failed)) == len(failed) and not set(stored) & set(failed)
    assert trees and len(failed) >= 8 and len(stored) + len(failed) <= 20
    assert all("teacher error" in f["reason"] and "\n" not in f["reason"] for f in failures)
    sent = {t for tags in replies.tags.values() for t in tags}
    seen: set[int] = set()
    for tree in trees:  # every stored node is a choice the server sent, none twice
        for node in tree.nodes[1:]:
            assert tag_of(node.text) in sent and tag_of(node.text) not in seen
            seen.add(tag_of(node.text))
    assert any(t.stats["errors"] > 0 for t in trees)  # a tree cut short by the death was kept, partial
