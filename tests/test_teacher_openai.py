"""The ``openai`` teacher against the in-test OpenAI-compatible stub server (127.0.0.1 only)."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import pytest
from PIL import Image

from mcts_engine.config import TeacherConfig
from mcts_engine.grounding import parse_step
from mcts_engine.samples import Sample, encode_image
from mcts_engine.tasks.base import FORCE_ANSWER_PROMPT
from mcts_engine.teachers import make_teacher
from mcts_engine.teachers.base import PromptContext, PromptState, TeacherError, TeacherUnavailable, Turn, build_messages
from mcts_engine.teachers.openai_compat import HEAD_CACHE_KEY, OpenAITeacher, split_tokens
from mcts_engine.testing.refused_port import refused_url
from mcts_engine.testing.stub_server import StubServer, finish_text, image_size, read_prompt, scripted_reply

STEP = "<think> The red chair is near (30, 40). </think>"
STEP2 = "<think> The lamp stands at (50, 20). </think>"


def _ctx(fmt: str = "png") -> PromptContext:
    img = Image.new("RGB", (120, 90), (200, 120, 40))
    enc, _ = encode_image(img, max_pixels=1280 * 28 * 28, fmt=fmt)
    sample = Sample(id="s1", images=[], question="Left or right?", answer="left", choices=["left", "right"])
    return PromptContext(
        sample=sample,
        system="You are a careful visual reasoner.",
        user_text="Is the chair left or right?\nOptions:\n(A) left\n(B) right",
        images=(enc,),
        truth={"answer": "left", "choices": ["left", "right"]},
    )


def _teacher(url: str, **kw) -> OpenAITeacher:
    kw.setdefault("model", "stub-model")
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout_s", 10.0)
    return OpenAITeacher(TeacherConfig(kind="openai", base_url=url, **kw))


def run(coro):
    return asyncio.run(coro)


async def _complete(teacher: OpenAITeacher, state: PromptState, n: int):
    try:
        return await teacher.complete(state, n)
    finally:
        await teacher.aclose()


def _fixed(*texts: str):
    return lambda body, i, rng: texts[i % len(texts)]


# --------------------------------------------------------------------------------------------
# Requests and replies
# --------------------------------------------------------------------------------------------


def test_siblings_in_one_request_with_stop_reattached():
    with StubServer(keep_bodies=True, replies=_fixed(STEP, STEP2, "<answer> left </answer>")) as srv:
        reply = run(_complete(_teacher(srv.url), PromptState(_ctx()), 3))
        assert srv.stats.chat_requests == 1
        body = srv.stats.records[0]["body"]
    assert body["n"] == 3 and body["model"] == "stub-model"
    assert body["stop"] == ["</think>", "</answer>"]
    assert "continue_final_message" not in body  # nothing to continue at the root
    assert [c.text for c in reply.choices] == [STEP, STEP2, "<answer> left </answer>"]
    assert all(c.finish_reason == "stop" for c in reply.choices)
    # the server's stop handling really cut the closing tags (the teacher put them back)
    assert parse_step(reply.choices[0].text).point == (30, 40)
    total = sum(c.completion_tokens for c in reply.choices)
    assert total > 0 and all(c.completion_tokens > 0 for c in reply.choices)
    assert reply.prompt_tokens > 0 and reply.latency_s > 0


def test_stop_inferred_when_server_reports_no_stop_reason():
    with StubServer(report_stop_reason=False, replies=_fixed(STEP, "<answer> right </answer>")) as srv:
        reply = run(_complete(_teacher(srv.url), PromptState(_ctx()), 2))
    assert [c.text for c in reply.choices] == [STEP, "<answer> right </answer>"]


def test_request_body_is_the_rendered_prompt_and_head_is_cached(monkeypatch):
    import mcts_engine.teachers.openai_compat as oc

    calls = []
    real = oc.head_messages
    monkeypatch.setattr(oc, "head_messages", lambda ctx: calls.append(1) or real(ctx))
    ctx = _ctx()
    state = PromptState(ctx).child(Turn(STEP)).child(Turn(STEP2))
    with StubServer(keep_bodies=True) as srv:
        t = _teacher(srv.url)

        async def go():
            await t.complete(state, 2)
            await t.complete(state.forced(), 1)
            await t.aclose()

        run(go())
        bodies = [r["body"] for r in srv.stats.records]
    assert len(calls) == 1 and HEAD_CACHE_KEY in ctx.cache  # the image is serialized once per sample
    msgs, cont, _ = build_messages(state, "continue")
    assert bodies[0]["messages"] == msgs and cont
    assert bodies[0]["messages"][1]["content"][0]["image_url"]["url"] == ctx.images[0].data_url


def test_continue_style_sends_continue_final_message_and_prefills_forced_answer():
    state = PromptState(_ctx()).child(Turn(STEP))
    with StubServer(keep_bodies=True) as srv:
        t = _teacher(srv.url)

        async def go():
            a = await t.complete(state, 2)
            b = await t.complete(state.forced(), 3)
            await t.aclose()
            return a, b

        step_reply, forced_reply = run(go())
        b0, b1 = (r["body"] for r in srv.stats.records)
    for b in (b0, b1):
        assert b["continue_final_message"] is True and b["add_generation_prompt"] is False
        assert b["messages"][-1]["role"] == "assistant"
    assert b0["messages"][-1]["content"] == STEP
    assert b1["messages"][-1]["content"] == STEP + "\n<answer>"
    for c in forced_reply.choices:  # the server continued after "<answer>"; the pre-fill is put back
        step = parse_step(c.text)
        assert c.text.startswith("<answer>") and c.text.endswith("</answer>")
        assert step.kind == "answer" and step.answer in ("left", "right")
    for c in step_reply.choices:
        assert parse_step(c.text).kind in ("think", "answer")
        assert not c.text.startswith((" ", "\n"))


def test_plain_style_sends_steps_as_turns():
    state = PromptState(_ctx()).child(Turn(STEP))
    with StubServer(keep_bodies=True) as srv:
        t = _teacher(srv.url, prompt_style="plain")

        async def go():
            r = await t.complete(state.forced(), 2)
            await t.aclose()
            return r

        reply = run(go())
        body = srv.stats.records[0]["body"]
    assert "continue_final_message" not in body and "add_generation_prompt" not in body
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert body["messages"][2]["content"] == STEP and body["messages"][3]["content"] == FORCE_ANSWER_PROMPT
    for c in reply.choices:
        assert parse_step(c.text).kind == "answer" and c.text.endswith("</answer>")


def test_length_finish_is_left_open_and_gets_max_tokens():
    long = "<think> " + "very " * 200 + "(1, 2). </think>"
    with StubServer(replies=_fixed(long, STEP)) as srv:
        reply = run(_complete(_teacher(srv.url, max_tokens=16), PromptState(_ctx()), 2))
    a, b = reply.choices
    assert a.finish_reason == "length" and not a.text.endswith("</think>") and a.completion_tokens == 16
    assert b.finish_reason == "stop" and b.text == STEP


def test_split_tokens_keeps_the_total():
    assert split_tokens(10, [1, 1, 2], ["stop"] * 3, 256) == [3, 2, 5]
    parts = split_tokens(101, [10, 20, 30], ["stop"] * 3, 256)
    assert sum(parts) == 101 and parts[0] < parts[1] < parts[2]
    assert split_tokens(40, [5, 100], ["stop", "length"], 32) == [8, 32]
    assert split_tokens(None, [5, 5], ["stop", "stop"], 32) == [0, 0]


def test_api_key_from_env_and_describe_has_no_secret(monkeypatch):
    monkeypatch.setenv("MY_TEACHER_KEY", "sekrit-123")
    with StubServer() as srv:
        t = _teacher(srv.url, api_key_env="MY_TEACHER_KEY")
        run(_complete(t, PromptState(_ctx()), 1))
        assert srv.last_headers["authorization"] == "Bearer sekrit-123"
        desc = json.dumps(t.describe())
    assert "sekrit" not in desc and "MY_TEACHER_KEY" in desc
    shown = _teacher("http://user:pw@10.0.0.1:8000/v1").describe()["base_urls"]
    assert shown == ["http://10.0.0.1:8000/v1"]
    monkeypatch.delenv("MY_TEACHER_KEY")
    with StubServer() as srv:
        run(_complete(_teacher(srv.url, api_key_env="MY_TEACHER_KEY"), PromptState(_ctx()), 1))
        assert srv.last_headers["authorization"] == "Bearer EMPTY"


def test_factory_builds_openai_teacher():
    t = make_teacher(TeacherConfig(kind="openai", base_url="http://127.0.0.1:9/v1"))
    assert isinstance(t, OpenAITeacher) and t.name == "openai"


# --------------------------------------------------------------------------------------------
# Failures
# --------------------------------------------------------------------------------------------


def test_retries_500_then_succeeds():
    with StubServer(fail_first=2, retry_after_ms=5) as srv:
        reply = run(_complete(_teacher(srv.url, max_retries=3), PromptState(_ctx()), 3))
        assert srv.stats.chat_requests == 3
    assert len(reply.choices) == 3


def test_500_after_retries_is_a_one_line_teacher_error():
    with StubServer(fail_first=100, retry_after_ms=5) as srv:
        with pytest.raises(TeacherError) as ei:
            run(_complete(_teacher(srv.url, max_retries=2), PromptState(_ctx()), 3))
        assert srv.stats.chat_requests == 3
    msg = str(ei.value)
    assert "500" in msg and "\n" not in msg


def test_timeout_is_a_teacher_error():
    with StubServer(hang_first=10, hang_s=5.0) as srv:
        with pytest.raises(TeacherError, match="timed out"):
            run(_complete(_teacher(srv.url, timeout_s=0.3, max_retries=1), PromptState(_ctx()), 2))
        assert srv.stats.chat_requests == 2  # one retry after the first timeout


@pytest.mark.parametrize("kind,fragment", [
    ("not_json", "not JSON"),
    ("no_choices", "no 'choices'"),
    ("no_content", "no message content"),
    ("too_few", "no 'choices'"),  # n=1: one choice fewer is none
    ("wrong_count", "2 choices for n=1"),
])
def test_malformed_reply_after_retries_is_a_one_line_teacher_error(kind, fragment, monkeypatch):
    monkeypatch.setattr("mcts_engine.teachers.retry.INITIAL_RETRY_DELAY", 0.001)
    with StubServer(malformed=kind) as srv:
        with pytest.raises(TeacherError, match="malformed reply") as ei:
            run(_complete(_teacher(srv.url, max_retries=2), PromptState(_ctx()), 1))
        assert srv.stats.chat_requests == 3  # retried like a 5xx
    msg = str(ei.value)
    assert fragment in msg and "(after 2 retries)" in msg and "\n" not in msg


def test_wrong_model_mid_run_is_a_teacher_error():
    with StubServer() as srv:
        with pytest.raises(TeacherError, match="404"):
            run(_complete(_teacher(srv.url, model="other"), PromptState(_ctx()), 1))


def test_check_unreachable_server():
    with refused_url() as url:
        t = _teacher(url, max_retries=2)
        with pytest.raises(TeacherUnavailable) as ei:
            run(t.check())
    msg = str(ei.value)
    assert msg.startswith(f"cannot reach teacher at {url}") and "\n" not in msg


def test_check_unknown_model_names_what_is_served():
    with StubServer(models=("Qwen/Qwen2.5-VL-7B-Instruct", "qwen-72b")) as srv:
        t = _teacher(srv.url, model="nope")
        with pytest.raises(TeacherUnavailable) as ei:
            run(t.check())
        ok = _teacher(srv.url, model="qwen-72b")
        run(ok.check())
        assert srv.stats.chat_requests == 0
    msg = str(ei.value)
    assert "'nope'" in msg and "Qwen/Qwen2.5-VL-7B-Instruct" in msg and "qwen-72b" in msg and "\n" not in msg


def test_check_then_complete_in_separate_event_loops():
    with StubServer() as srv:
        t = _teacher(srv.url)
        run(t.check())
        reply = run(_complete(t, PromptState(_ctx()), 2))
    assert len(reply.choices) == 2


def test_stale_keepalive_connections_are_replaced():
    with StubServer(drop_keepalive=True) as srv:
        t = _teacher(srv.url)

        async def go():
            for _ in range(5):
                await t.complete(PromptState(_ctx()), 1)
            await t.aclose()

        run(go())
        assert srv.stats.chat_requests == 5


# --------------------------------------------------------------------------------------------
# Concurrency and several servers
# --------------------------------------------------------------------------------------------


def test_concurrency_bound_is_respected():
    with StubServer(latency_s=0.05) as srv:
        t = _teacher(srv.url, concurrency=3)

        async def go():
            await asyncio.gather(*(t.complete(PromptState(_ctx()), 2) for _ in range(12)))
            await t.aclose()

        run(go())
        assert srv.stats.chat_requests == 12
        assert srv.stats.max_inflight == 3
    assert t.max_inflight == 3


def test_requests_spread_over_several_servers():
    with StubServer(latency_s=0.03) as a, StubServer(latency_s=0.03) as b:
        t = _teacher(f"{a.url},{b.url}", concurrency=8)

        async def go():
            await t.check()
            await asyncio.gather(*(t.complete(PromptState(_ctx()), 1) for _ in range(24)))
            await t.aclose()

        run(go())
        assert a.stats.model_requests == 1 and b.stats.model_requests == 1
        assert a.stats.chat_requests + b.stats.chat_requests == 24
        assert a.stats.chat_requests >= 6 and b.stats.chat_requests >= 6
        assert t.describe()["base_urls"] == [a.url, b.url]


def test_check_names_the_unreachable_one_of_several_servers():
    with refused_url() as dead, StubServer() as a:
        t = _teacher(f"{a.url}, {dead}")
        with pytest.raises(TeacherUnavailable, match=f"cannot reach teacher at {dead}"):
            run(t.check())


# --------------------------------------------------------------------------------------------
# The stub server itself
# --------------------------------------------------------------------------------------------


def test_stub_reads_image_frames_and_scripts_protocol_replies():
    ctx = _ctx()
    assert image_size(ctx.images[0].data_url) == (ctx.frame.width, ctx.frame.height)
    jctx = _ctx("jpeg")
    assert image_size(jctx.images[0].data_url) == (jctx.frame.width, jctx.frame.height)
    import random

    msgs, cont, _ = build_messages(PromptState(ctx).child(Turn(STEP)), "continue")
    view = read_prompt({"messages": msgs, "continue_final_message": cont})
    assert view.frame == (ctx.frame.width, ctx.frame.height) and view.options == ("left", "right")
    assert view.steps == 1 and not view.forced and view.continuing
    rng = random.Random(0)
    for i in range(50):
        step = parse_step(scripted_reply(view, i, rng))
        if step.kind == "think":
            assert ctx.frame.contains(step.point)
        else:
            assert step.kind == "answer" and step.answer in ("left", "right")
    assert finish_text("<think> a (1, 2). </think> more", ["</think>"], None) == ("<think> a (1, 2). ", "stop", "</think>", 5)


def test_stub_capacity_queues_choices():
    with StubServer(capacity=2, latency_s=0.1) as srv:
        t = _teacher(srv.url, concurrency=8)

        async def go():
            await asyncio.gather(*(t.complete(PromptState(_ctx()), 2) for _ in range(3)))
            await t.aclose()

        run(go())
        st = srv.stats
    # all three requests (6 choices) were at the server at once, yet never more than 2 choices decoded:
    # at least 4 choices waited for a slot, and every one was decoded
    assert st.max_inflight == 3 and st.max_decoding == 2 and st.choices == 6
    assert [r["status"] for r in st.records] == [200, 200, 200]


def test_stub_accepts_hundreds_of_concurrent_connections():
    async def go(url):
        async def one():
            r, w = await asyncio.open_connection("127.0.0.1", int(url.split(":")[2].split("/")[0]))
            w.write(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            data = await r.read()
            w.close()
            return data.startswith(b"HTTP/1.1 200")

        return await asyncio.gather(*(one() for _ in range(400)))

    with StubServer() as srv:
        assert all(run(go(srv.url)))
        assert srv.stats.model_requests == 400


def test_png_header_helper_rejects_garbage():
    assert image_size("data:image/png;base64," + base64.b64encode(b"not a png at all, sorry" * 3).decode()) is None
    buf = io.BytesIO()
    Image.new("RGB", (33, 17)).save(buf, format="PNG")
    assert image_size("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()) == (33, 17)


def test_stop_strings_follow_the_context_and_one_shot():
    import dataclasses

    from mcts_engine.grounding import TOOL_CLOSE

    ctx = _ctx()
    ctx.stop = (TOOL_CLOSE, "</answer>")
    call = '<think> Zoom (3, 4). </think> <tool_call>{"name": "search_coordinate", "arguments": {"coordinate": [3, 4]}}</tool_call>'
    with StubServer(keep_bodies=True, replies=_fixed(call)) as srv:
        t = _teacher(srv.url)

        async def go():
            a = await t.complete(PromptState(ctx), 1)
            b = await t.complete(dataclasses.replace(PromptState(_ctx()), one_shot=True), 1)
            await t.aclose()
            return a, b

        a, _ = run(go())
        stops = [r["body"]["stop"] for r in srv.stats.records]
    assert stops == [["</tool_call>", "</answer>"], ["</answer>"]]
    assert a.choices[0].text == call


def test_retry_after_is_honoured(monkeypatch):
    import mcts_engine.teachers.openai_compat as oc

    waits: list[float] = []

    async def record(delay: float) -> None:
        waits.append(delay)

    monkeypatch.setattr(oc, "_backoff_sleep", record)
    with StubServer(fail_first=2, fail_status=503, retry_after_ms=30) as srv:
        reply = run(_complete(_teacher(srv.url, max_retries=3), PromptState(_ctx()), 1))
        assert len(reply.choices) == 1 and srv.stats.chat_requests == 3
    assert waits == [0.03, 0.03]  # the server's Retry-After-Ms, not the backoff


def test_4xx_is_not_retried():
    with StubServer(fail_first=5, fail_status=400, retry_after_ms=5) as srv:
        with pytest.raises(TeacherError, match="400") as ei:
            run(_complete(_teacher(srv.url, max_retries=3), PromptState(_ctx()), 1))
        assert srv.stats.chat_requests == 1
    assert "retries" not in str(ei.value)


def test_unreachable_mid_run_is_a_teacher_error():
    with refused_url() as url, pytest.raises(TeacherError, match=f"cannot reach {url}"):
        run(_complete(_teacher(url), PromptState(_ctx()), 1))


def test_teacher_client_key_is_gone():
    from mcts_engine.config import ConfigError, build_run_config

    with pytest.raises((ConfigError, ValueError), match="client"):
        build_run_config({}, ["teacher.client=direct"])


def test_logprobs_asked_only_when_configured_and_summed_per_choice():
    def with_logprobs(body, i, rng):
        return STEP if i == 0 else "<answer> left </answer>"

    with StubServer(keep_bodies=True, replies=with_logprobs) as srv:
        on = run(_complete(_teacher(srv.url, logprobs=True), PromptState(_ctx()), 2))
        off = run(_complete(_teacher(srv.url), PromptState(_ctx()), 2))
        asked = [r["body"].get("logprobs") for r in srv.stats.records]
    assert asked == [True, None]
    assert all(isinstance(c.logprob, float) and c.logprob < 0 for c in on.choices)
    assert on.choices[0].logprob != on.choices[1].logprob
    assert all(c.logprob is None for c in off.choices)  # not asked: not read


def test_choice_logprob_sums_tokens_and_is_none_when_absent():
    from mcts_engine.teachers.openai_compat import choice_logprob

    assert choice_logprob({"logprobs": {"content": [{"token": "a", "logprob": -0.5}, {"token": "b", "logprob": -1.25}]}}) == -1.75
    assert choice_logprob({"logprobs": None}) is None
    assert choice_logprob({}) is None
    assert choice_logprob({"logprobs": {"content": []}}) is None
    assert choice_logprob({"logprobs": {"content": [{"token": "a"}]}}) is None


def test_final_temperature_applies_to_the_forced_answer_request_only():
    """teacher.final_temperature (e.g. 0: a greedy last turn, as the released ViGoRL evaluation samples it)."""
    state = PromptState(_ctx()).child(Turn(STEP))
    for final, want in ((None, [0.7, 0.7]), (0.0, [0.7, 0.0])):
        t = OpenAITeacher(TeacherConfig(kind="openai", base_url="http://127.0.0.1:9/v1", model="m", temperature=0.7,
                                        final_temperature=final))
        temps = [json.loads(t.request_body(s, 1)[0])["temperature"] for s in (state, state.forced())]
        assert temps == want
