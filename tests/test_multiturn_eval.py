"""``mcts-engine eval --multiturn``: the turn loop (``mcts_engine.zoom.episode``), turn statistics, and eval end to end
with the sim teacher (bundled vstar / screenspot samples) and against the in-test OpenAI stub server."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from mcts_engine.cli import app
from mcts_engine.config import MultiTurnConfig
from mcts_engine.evaluation.scoring import EvalSpec, render_markdown, summarize, turn_stats
from mcts_engine.samples import Sample, encode_image
from mcts_engine.tasks import get_task
from mcts_engine.teachers.base import Continuation, PromptContext, PromptState, TeacherReply
from mcts_engine.zoom.environment import format_tool_call
from mcts_engine.zoom.episode import ZoomEpisode, as_multiturn, run_episode, score_episode, take_turn

runner = CliRunner()
DATA = Path(__file__).resolve().parent.parent / "mcts_engine" / "sample_data"
WEB = DATA / "screenspot_sample" / "screenspot_web_v2.json"


def cli(*args: str):
    return runner.invoke(app, list(args))


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def outputs(recs: list[dict]) -> list[dict]:
    return [o for r in recs for v in r["variants"] for o in v["outputs"]]


# --------------------------------------------------------------------------------------------
# The turn loop, with a scripted teacher (no server)
# --------------------------------------------------------------------------------------------


def tool_turn(x: int, y: int) -> str:
    return f"<think> the object may be here ({x}, {y}). </think>\n{format_tool_call((x, y))}"


class Scripted:
    """A teacher that replays a fixed list of replies per episode (the n-th request of a path gets reply n)."""

    name = "scripted"

    def __init__(self, script: list[str], length_at: int | None = None) -> None:
        self.script = script
        self.length_at = length_at
        self.requests: list[tuple[int, int, bool]] = []  # (turns on the path, n, forced)

    async def complete(self, state: PromptState, n: int) -> TeacherReply:
        i = len(state.turns)
        self.requests.append((i, n, state.force_answer))
        text = "<answer> blue </answer>" if state.force_answer else self.script[min(i, len(self.script) - 1)]
        finish = "length" if self.length_at == i else "stop"
        return TeacherReply([Continuation(text, finish, 7) for _ in range(n)], prompt_tokens=100)

    async def check(self) -> None: ...

    async def aclose(self) -> None: ...

    def describe(self) -> dict:
        return {"kind": "scripted"}


def context(width: int = 560, height: int = 420) -> PromptContext:
    task = get_task("vstar")
    sample = Sample(id="s", images=[b""], question="What colour is the cup?", answer="blue", choices=["red", "blue"])
    enc, img = encode_image(Image.new("RGB", (width, height), "white"), max_pixels=width * height)
    ctx = PromptContext(sample=sample, system=task.student_system(True), user_text=task.user_text(sample), images=(enc,),
                        truth=task.ground_truth(sample, enc.frame), task=task)
    return as_multiturn(ctx, [img])


MT = MultiTurnConfig(enabled=True, crop_offset=56, crop_size=112)


def run(teacher, max_turns: int = 4, n: int = 1, ctx: PromptContext | None = None) -> list[ZoomEpisode]:
    return asyncio.run(run_episode(teacher, ctx or context(), MT, max_turns, n=n))


def test_episode_zooms_then_answers_with_crops_in_memory():
    eps = run(Scripted([tool_turn(10, 10), tool_turn(300, 200), "<answer> blue </answer>"]))
    ep = eps[0]
    assert ep.end == "answer" and ep.answer == "blue" and ep.points == [(10, 10), (300, 200)]
    assert [t.kind for t in ep.turns] == ["think", "think", "answer"]
    crop = ep.turns[0].observation.images[0]
    assert ep.turns[0].record["box"] == [0, 0, 112, 112] and crop.frame.width == 112  # shifted inside, not shrunk
    assert ep.turns[1].record["box"] == [244, 144, 356, 256]
    assert ep.requests == 3 and ep.prompt_tokens == 300
    out = score_episode(get_task("vstar"), ep, context().truth, context().frame)
    assert out["correct"] and out["well_formed"] and out["points"] == 2 and len(out["turns"]) == 3
    assert out["turns"][0]["crop"].startswith("images/") and out["turns"][0]["crop_size"] == [112, 112]


@pytest.mark.parametrize(
    "reply, end",
    [
        ('<think> here (5, 5). </think>\n<tool_call>\n{"name": "search_coordinate", "arguments": {"coordinate": [5, 5]\n</tool_call>', "bad_tool_call"),
        ('<think> here (5, 5). </think>\n<tool_call>\n{"name": "search_coordinate", "arguments": {"coordinate": [5.5, 5]}}\n</tool_call>', "bad_tool_call"),
        ("<think> here (5, 5). </think>", "no_tool_call"),
        (tool_turn(900, 5), "out_of_frame"),
        ("I think it is blue", "invalid_turn"),
    ],
)
def test_a_failed_step_ends_the_episode_unanswered(reply, end):
    ep = run(Scripted([reply, "<answer> blue </answer>"]))[0]
    assert ep.end == end and ep.answer is None and len(ep.turns) == 1 and ep.turns[0].error.startswith(end)
    out = score_episode(get_task("vstar"), ep, context().truth, context().frame)
    assert not out["correct"] and not out["well_formed"] and out["end"] == end
    assert out["points_out_of_frame"] == (1 if end == "out_of_frame" else 0)


def test_last_turn_is_forced_and_truncation_ends_the_episode():
    t = Scripted([tool_turn(10, 10)])  # never answers by itself
    ep = run(t, max_turns=3)[0]
    assert [r[2] for r in t.requests] == [False, False, True]
    assert ep.end == "answer" and ep.turns[-1].forced and len(ep.turns) == 3
    assert ep.turns[1].repeated and not ep.turns[0].repeated  # the same point twice: allowed, flagged
    ep = run(Scripted([tool_turn(10, 10)], length_at=1), max_turns=3)[0]
    assert ep.end == "truncated" and len(ep.turns) == 2


def test_n_episodes_share_the_first_request():
    t = Scripted([tool_turn(10, 10), "<answer> blue </answer>"])
    eps = run(t, n=3)
    assert t.requests[0] == (0, 3, False) and sorted(t.requests[1:]) == [(1, 1, False)] * 3
    assert [e.requests for e in eps] == [2, 1, 1] and all(e.end == "answer" for e in eps)


def test_run_episode_refuses_a_single_turn_context():
    ctx = context()
    from dataclasses import replace

    with pytest.raises(ValueError, match="multi-turn"):
        run(Scripted(["x"]), ctx=replace(ctx, multiturn=False, frame_images=()))


def test_take_turn_is_pure_and_counts_repeats():
    ep = ZoomEpisode()
    frame = context().frame
    _, p1 = take_turn(ep, Continuation(tool_turn(3, 4), "stop"), False, frame)
    turn, p2 = take_turn(ep, Continuation(tool_turn(3, 4), "stop"), False, frame)
    assert p1 == p2 == (3, 4) and turn.repeated and ep.end == ""


def test_turn_stats_and_markdown_from_hand_written_records():
    def out(end, turns):
        return {"correct": end == "answer", "score": float(end == "answer"), "end": end, "turns": turns}

    zoom = {"text": "t", "point": [1, 2], "crop": "images/a.png"}
    recs = [
        {"variants": [{"outputs": [out("answer", [zoom, dict(zoom, repeated=True), {"text": "a", "forced": True}])]}]},
        {"variants": [{"outputs": [out("bad_tool_call", [{"text": "x", "error": "bad_tool_call: not JSON"}])]}]},
        {"variants": [{"outputs": [out("out_of_frame", [zoom, {"text": "y", "error": "out_of_frame"}])]}]},
        {"variants": [{"outputs": [{"correct": True, "score": 1.0}]}]},  # a single-pass output: not counted
    ]
    s = turn_stats(recs)
    assert s["episodes"] == 3 and s["turns"] == 6 and s["mean_turns"] == 2.0 and s["max_turns_used"] == 3
    assert s["zooms"] == 3 and s["repeated_points"] == 1 and s["answered"] == 1 and s["forced_answers"] == 1
    assert s["malformed_tool_calls"] == 1 and s["out_of_frame_points"] == 1
    summary = summarize(recs, EvalSpec(), task="t")
    assert summary.turns == s and summary.to_dict()["turns"] == s
    assert "malformed tool calls 1" in render_markdown(summary)
    single = summarize(recs[3:], EvalSpec(), task="t")  # single-pass records: no turn statistics
    assert single.turns is None and "turns" not in single.to_dict()


# --------------------------------------------------------------------------------------------
# eval --multiturn end to end with the sim teacher
# --------------------------------------------------------------------------------------------


def check_crops(out: Path, recs: list[dict], size: tuple[int, int]) -> int:
    crops = 0
    for o in outputs(recs):
        assert o["turns"] and o["end"]
        for t in o["turns"]:
            if "point" in t:
                crops += 1
                assert (out / t["crop"]).exists()
                assert Image.open(out / t["crop"]).size == size and tuple(t["crop_size"]) == size
                assert "<observation>" in t["observation"]
    return crops


def test_eval_multiturn_vstar_recipe_switches_it_on_and_resumes(tmp_path):
    out = tmp_path / "ev"
    res = cli("eval", "--recipe", "vstar_multiturn", "--limit", "3", "--out", str(out), "--no-progress", "--format-check")
    assert res.exit_code == 0, res.output
    assert "multi-turn (≤ 6 turns)" in res.output and "turns: 3 episodes" in res.output
    recs = lines(out / "trees.jsonl")
    assert len(recs) == 3 and all(r["task"] == "vstar" for r in recs)
    assert check_crops(out, recs, (672, 672)) >= 3  # 364-px regions of the 1148x840 frame shown at 672 px
    assert all((out / r["images"][0]["file"]).exists() for r in recs)
    assert "Work in turns" in recs[0]["prompt"]["system"]  # the multi-turn student prompt
    s = json.loads((out / "summary.json").read_text())
    assert s["turns"]["episodes"] == 3 and s["turns"]["mean_turns"] >= 2 and s["turns"]["zooms"] >= 3
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["multiturn"] == {"enabled": True, "crop_offset": 182, "crop_size": 672, "draw_dot": False,
                                          "dot_radius": 6, "max_turns": 6}
    res = cli("eval", "--recipe", "vstar_multiturn", "--limit", "5", "--out", str(out), "--no-progress")
    assert res.exit_code == 0, res.output
    recs = lines(out / "trees.jsonl")
    assert len(recs) == 5 and len({r["sample_id"] for r in recs}) == 5
    assert json.loads((out / "summary.json").read_text())["session"]["skipped"] == 3
    res = cli("eval", "--task", "vstar", "--limit", "1", "--out", str(out), "--no-progress")  # single pass: another config
    assert res.exit_code == 2 and "different config" in res.output


def test_eval_multiturn_screenspot_overrides_and_forced_turn(tmp_path):
    out = tmp_path / "ev"
    res = cli("eval", "--task", "screenspot", "--multiturn", "--set", "multiturn.crop_offset=50",
              "--set", "multiturn.crop_size=280", "--set", "multiturn.draw_dot=true", "--limit", "4",
              "--out", str(out), "--no-progress")
    assert res.exit_code == 0, res.output
    recs = lines(out / "trees.jsonl")
    assert check_crops(out, recs, (280, 280)) >= 4
    s = json.loads((out / "summary.json").read_text())
    assert "platform+ui_type" in s["groups"] and s["turns"]["episodes"] == 4
    out1 = tmp_path / "ev1"
    res = cli("eval", "--recipe", "screenspot_multiturn", "--max-turns", "1", "--limit", "3", "--out", str(out1), "--no-progress")
    assert res.exit_code == 0, res.output
    outs = outputs(lines(out1 / "trees.jsonl"))
    assert all(len(o["turns"]) == 1 and o["turns"][0].get("forced") for o in outs)  # one turn: forced to answer
    assert json.loads((out1 / "summary.json").read_text())["turns"]["forced_answers"] == 3


def test_eval_single_pass_is_unchanged_by_default(tmp_path):
    out = tmp_path / "ev"
    res = cli("eval", "--task", "vstar", "--limit", "2", "--out", str(out), "--no-progress")
    assert res.exit_code == 0, res.output
    s = json.loads((out / "summary.json").read_text())
    assert "turns" not in s and not (out / "images").exists()
    assert all("turns" not in o for o in outputs(lines(out / "trees.jsonl")))


# --------------------------------------------------------------------------------------------
# eval --multiturn against the in-test OpenAI stub server (scripted replies)
# --------------------------------------------------------------------------------------------


def _description(body: dict) -> str:
    for m in body["messages"]:
        if m["role"] == "user" and isinstance(m["content"], list):
            for p in m["content"]:
                if p.get("type") == "text" and "Description:" in p["text"]:
                    return p["text"].split("Description:", 1)[1].strip()
    return ""


def scripted(body: dict, i: int, rng) -> str:
    """Turn replies by item: a malformed tool call, a point outside the frame, zooming until forced, or zoom → answer."""
    msgs = body["messages"]
    last = msgs[-1]
    if last["role"] == "assistant" and str(last["content"]).rstrip().endswith("<answer>"):
        return " (20, 30) </answer>"  # the forced last turn continues the pre-filled <answer>
    turn = sum(1 for m in msgs if m["role"] == "assistant")
    what = _description(body)
    if what == "close this window":
        return '<think> The close icon is at the top left (25, 25). </think>\n<tool_call>\n{"name": "search_coordinate", "arguments": {"coordinate": [25, 25}\n</tool_call>'
    if what == "click new message":
        return f"<think> The button should be far right (5000, 20). </think>\n{format_tool_call((5000, 20))}"
    if what == "click apply filters":
        return f"<think> Maybe this one ({40 + turn}, 170). </think>\n{format_tool_call((40 + turn, 170))}"
    if turn == 0:
        return f"<think> The menu icon is near (20, 30). </think>\n{format_tool_call((20, 30))}<answer> (1, 1) </answer>"
    return "<answer> (21, 30) </answer>"


def test_eval_multiturn_against_the_stub_server(tmp_path):
    from mcts_engine.testing.stub_server import StubServer

    out = tmp_path / "ev"
    with StubServer(keep_bodies=True, replies=scripted) as server:
        res = cli("eval", "--task", "screenspot", "--data", str(WEB), "--base-url", server.url, "--model", "stub-model",
                  "--recipe", "screenspot_multiturn", "--max-turns", "3", "--out", str(out), "--no-progress", "--format-check")
        assert res.exit_code == 0, res.output
        bodies = [r["body"] for r in server.stats.records]
    recs = {r["sample"]["question"]: r for r in lines(out / "trees.jsonl")}
    assert len(recs) == 4  # the malformed call is counted, not a crash

    def only(q: str) -> dict:
        return recs[q]["variants"][0]["outputs"][0]

    bad = only("close this window")
    assert bad["end"] == "bad_tool_call" and "not valid JSON" in bad["turns"][0]["error"] and not bad["correct"]
    far = only("click new message")
    assert far["end"] == "out_of_frame" and far["points_out_of_frame"] == 1
    forced = only("click apply filters")
    assert forced["end"] == "answer" and len(forced["turns"]) == 3 and forced["turns"][-1]["forced"]
    assert forced["turns"][-1]["text"].startswith("<answer>") and forced["answer"] == "(20, 30)"
    ok = only("open the menu")
    assert ok["end"] == "answer" and ok["correct"] and [t.get("point") for t in ok["turns"]] == [[20, 30], None]
    assert ok["turns"][0]["text"].endswith("</tool_call>")  # cut at the stop string, text after it dropped
    assert (out / ok["turns"][0]["crop"]).exists()
    # what the server saw: turn stops, the multi-turn student prompt, crops in observation turns, a pre-filled answer
    for b in bodies:
        assert b["stop"] == ["</tool_call>", "</answer>"] and b["max_tokens"] == 1024 and b["temperature"] == 0.0
        assert "Work in turns" in b["messages"][0]["content"]
    later = [b for b in bodies if len(b["messages"]) > 2]
    obs = [m for b in later for m in b["messages"] if m["role"] == "user" and isinstance(m["content"], list)
           and any("<observation>" in p.get("text", "") for p in m["content"])]
    assert obs and all(any(p["type"] == "image_url" for p in m["content"]) for m in obs)
    assert any(b.get("continue_final_message") and b["messages"][-1]["content"].endswith("<answer>") for b in bodies)
    assert len(bodies) == 1 + 1 + 3 + 2  # bad, far: one turn each; forced: three; ok: two
    s = json.loads((out / "summary.json").read_text())
    t = s["turns"]
    assert t["episodes"] == 4 and t["malformed_tool_calls"] == 1 and t["out_of_frame_points"] == 1
    assert t["forced_answers"] == 1 and t["answered"] == 2 and t["turns"] == 7
    assert s["format_check"]["grammar_broken"] == 2 and s["format_check"]["point_out_of_frame"] == 1
    assert re.search(r"malformed tool calls 1 .* points outside the frame 1", (out / "summary.md").read_text())
