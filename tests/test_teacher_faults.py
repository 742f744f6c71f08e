"""The ``openai`` teacher against a misbehaving server: every fault mode of the stand-in is retried (or,
for protocol oddities aiohttp absorbs, never mixes replies up), and a generation run under a fault mix
finishes every sample exactly once. Backoff is shortened in these tests (the rules stay the same)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from test_teacher_openai import _ctx

from mcts_engine.config import TeacherConfig
from mcts_engine.teachers.base import PromptState, TeacherError, Turn
from mcts_engine.teachers.openai_compat import OpenAITeacher
from mcts_engine.testing.faults import FAULT_KINDS, FaultPlan, FaultSpec, parse_faults
from mcts_engine.testing.stub_server import StubServer

ROOT = Path(__file__).resolve().parent.parent
MIX = "5xx=10%,hang=5%,reset=2%,malformed=5%,429=2%,extra_bytes=2%,interim_1xx=2%,cut_chunked=2%"
WIRE_OK = ("extra_bytes", "interim_1xx")  # valid replies with protocol oddities: nothing to retry


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setattr("mcts_engine.teachers.retry.INITIAL_RETRY_DELAY", 0.005)
    monkeypatch.setattr("mcts_engine.teachers.retry.MAX_RETRY_DELAY", 0.02)


def _teacher(url: str, **kw) -> OpenAITeacher:
    kw.setdefault("model", "stub-model")
    kw.setdefault("timeout_s", 0.5)
    return OpenAITeacher(TeacherConfig(kind="openai", base_url=url, **kw))


def _echo(body, i, rng):
    """Reply with the marker of the request's own last step, so a reply can be matched to its request."""
    last = body["messages"][-1]
    text = last["content"] if isinstance(last["content"], str) else ""
    marker = re.search(r"marker-(\d+)", text)
    return f"<answer> {marker.group(0) if marker else 'none'} </answer>"


def _state(k: int) -> PromptState:
    return PromptState(_ctx()).child(Turn(f"<think> Look at marker-{k} (1, 2). </think>"))


async def _many(teacher: OpenAITeacher, count: int, n: int) -> list:
    try:
        return await asyncio.gather(*(teacher.complete(_state(k), n) for k in range(count)), return_exceptions=True)
    finally:
        await teacher.aclose()


@pytest.mark.parametrize("kind", [k for k in FAULT_KINDS if k != "malformed"])
def test_each_fault_mode_is_retried_and_the_request_then_succeeds(kind):
    with StubServer(faults=f"{kind}=first:2", hang_s=1.0, retry_after_s=0.01, replies=_echo) as srv:
        t = _teacher(srv.url, max_retries=3, concurrency=1)
        replies = asyncio.run(_many(t, 3, 2))
        assert srv.stats.faults == {kind: 2}
        assert srv.stats.chat_requests == 3 + (0 if kind in WIRE_OK else 2)
    # a reset before any reply byte is first sent once more at once (it may be a stale keep-alive connection)
    assert t.retried == {"reset": 1, **{k: 0 for k in WIRE_OK}}.get(kind, 2) and t.failed == 0
    for k, reply in enumerate(replies):
        assert not isinstance(reply, BaseException), reply
        assert [c.text for c in reply.choices] == [f"<answer> marker-{k} </answer>"] * 2


@pytest.mark.parametrize("kind", WIRE_OK)
def test_a_reply_is_never_handed_to_another_request(kind):
    """Every reply carries a forged second reply after it (or a 1xx before it), on ONE keep-alive
    connection: each request still gets exactly its own reply, and the forged one reaches nobody."""
    with StubServer(faults=f"{kind}=1.0", replies=_echo) as srv:
        t = _teacher(srv.url, max_retries=0, concurrency=1)

        async def sequential():
            try:
                return [await t.complete(_state(k), 1) for k in range(12)]
            finally:
                await t.aclose()

        replies = asyncio.run(sequential())
        assert srv.stats.faults == {kind: 12}
    assert [r.choices[0].text for r in replies] == [f"<answer> marker-{k} </answer>" for k in range(12)]
    assert t.retried == 0


def test_a_chunked_body_cut_short_is_retried_not_returned():
    with StubServer(faults="cut_chunked=first:1", replies=_echo) as srv:
        with pytest.raises(TeacherError) as ei:
            asyncio.run(_one(_teacher(srv.url, max_retries=0)))
        msg = str(ei.value)
        assert "cut short" in msg and srv.url in msg and "\n" not in msg
    with StubServer(faults="cut_chunked=first:1", replies=_echo) as srv:
        reply = asyncio.run(_one(_teacher(srv.url, max_retries=1)))
        assert srv.stats.chat_requests == 2
    assert reply.choices[0].text == "<answer> marker-0 </answer>"


async def _one(t: OpenAITeacher):
    try:
        return await t.complete(_state(0), 1)
    finally:
        await t.aclose()


def test_a_hang_past_the_timeout_is_retried_then_a_timeout_error():
    with StubServer(faults="hang=1.0", hang_s=2.0) as srv:
        with pytest.raises(TeacherError, match=r"timed out after 0.3s \(after 1 retry\)"):
            asyncio.run(_one(_teacher(srv.url, max_retries=1, timeout_s=0.3)))
        assert srv.stats.chat_requests == 2


def test_a_fault_mix_under_concurrency_loses_and_mixes_up_nothing():
    with StubServer(faults=MIX, hang_s=1.0, retry_after_s=0.01, seed=3, replies=_echo) as srv:
        t = _teacher(srv.url, max_retries=10, concurrency=8)
        replies = asyncio.run(_many(t, 60, 2))
        faults = sum(srv.stats.faults.values())
    assert faults >= 10  # the mix really was served
    for k, reply in enumerate(replies):
        assert not isinstance(reply, BaseException), reply
        assert [c.text for c in reply.choices] == [f"<answer> marker-{k} </answer>"] * 2
    assert t.failed == 0 and t.retried >= 1 and t.retried_choices == 2 * t.retried


def test_fault_plans_are_seeded_and_follow_their_rates():
    a = FaultPlan(parse_faults(MIX), seed=1)
    b = FaultPlan(parse_faults(MIX), seed=1)
    picks = [a.pick(i) for i in range(4000)]
    assert picks == [b.pick(i) for i in range(4000)]
    assert picks != [FaultPlan(parse_faults(MIX), seed=2).pick(i) for i in range(4000)]
    share = sum(p == "5xx" for p in picks) / len(picks)
    assert 0.08 < share < 0.12
    assert {p for p in picks if p} >= {"5xx", "hang", "reset", "not_json", "no_choices", "too_few", "cut_chunked"}
    seq = FaultPlan([FaultSpec("5xx", first=2), FaultSpec("hang", first=1)])
    assert [seq.pick(i) for i in range(4)] == ["5xx", "5xx", "hang", None]
    with pytest.raises(ValueError, match="add up to"):
        FaultPlan(parse_faults("5xx=0.7,hang=0.5"))
    for bad in ("teapot=0.1", "5xx", "5xx=lots", "5xx=1.5"):
        with pytest.raises(ValueError):
            parse_faults(bad)


@pytest.mark.parametrize("retries", [3, 10])
def test_generate_under_the_fault_mix_finishes_every_sample_once(tmp_path, retries):
    """The issue's fault mix (plus the protocol faults) on the bundled SAT-2 samples: every sample
    finished, none failed, none twice — with the default ``max_retries`` (3: a request that still fails
    costs its expansion or rollout, and the search goes on) and with 10 (no request exhausts its retries)."""
    from mcts_engine.config import build_run_config, load_recipe
    from mcts_engine.generate import run_generate

    data = ROOT / "mcts_engine" / "sample_data" / "sat2_sample" / "samples.jsonl"
    with StubServer(faults=MIX, hang_s=1.0, retry_after_s=0.01, seed=5) as srv:
        cfg = build_run_config(load_recipe(None, "sat2"), [
            "teacher.kind=openai", f"teacher.base_url={srv.url}", "teacher.model=stub-model", "teacher.concurrency=16",
            f"teacher.max_retries={retries}", "teacher.timeout_s=0.5", "search.simulations=3", "search.children=2",
            "search.rollouts=1", "limit=16",
        ], data=str(data), seed=0)
        stats = run_generate(cfg, tmp_path / "run", force=True, progress=False)
        served = dict(srv.stats.faults)
    assert stats["finished"] == 16 and stats.get("failed", 0) == 0, stats
    ids = [json.loads(line)["sample_id"] for line in (tmp_path / "run" / "trees.jsonl").read_text().splitlines()]
    assert len(ids) == 16 and len(set(ids)) == 16
    assert not (tmp_path / "run" / "failures.jsonl").exists() or not (tmp_path / "run" / "failures.jsonl").read_text().strip()
    assert sum(served.values()) >= 10 and {"5xx", "hang", "reset"} <= set(served)


def test_the_waits_between_attempts_follow_the_rules(monkeypatch):
    """Backoff (with jitter) after 5xx, the server's Retry-After after a 429 — recorded, not slept."""
    import mcts_engine.teachers.openai_compat as oc

    monkeypatch.setattr("mcts_engine.teachers.retry.INITIAL_RETRY_DELAY", 0.5)  # the real rules again
    monkeypatch.setattr("mcts_engine.teachers.retry.MAX_RETRY_DELAY", 8.0)
    waits: list[float] = []

    async def record(delay: float) -> None:
        waits.append(delay)

    monkeypatch.setattr(oc, "_backoff_sleep", record)
    with StubServer(faults="5xx=first:2,429=first:1", retry_after_s=2) as srv:
        reply = asyncio.run(_one(_teacher(srv.url, max_retries=3)))
        assert srv.stats.chat_requests == 4
    assert len(reply.choices) == 1
    assert 0.375 <= waits[0] <= 0.5 and 0.75 <= waits[1] <= 1.0 and waits[2] == 2.0
