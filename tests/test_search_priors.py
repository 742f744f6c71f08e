"""PUCT with the teacher's log-prob priors (and the uniform fallback), near-duplicate points, and the
log-probs the sim teacher and the stand-in server's truth model give."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import urllib.request

import pytest
from test_search_mcts import FRAME, ScriptedTeacher, make_ctx, run_search

from mcts_engine.config import TeacherConfig
from mcts_engine.grounding import parse_step
from mcts_engine.search import mcts
from mcts_engine.search.mcts import check_step
from mcts_engine.search.select import best_child, priors, puct
from mcts_engine.search.tree import Tree
from mcts_engine.teachers.base import Continuation, PromptState, TeacherReply


class LogprobTeacher(ScriptedTeacher):
    """ScriptedTeacher whose choices carry log-probs from ``lp(text)`` (None: the server gave none)."""

    def __init__(self, fn, lp) -> None:
        super().__init__(fn)
        self.lp = lp

    async def complete(self, state: PromptState, n: int) -> TeacherReply:
        reply = await super().complete(state, n)
        return TeacherReply([Continuation(c.text, c.finish_reason, c.completion_tokens, self.lp(c.text)) for c in reply.choices], 10)


def three_points(state, i, k):
    if len(state.turns) >= 1 or state.force_answer:
        return "<answer> left </answer>"
    return [f"<think> a ({10 + k}, 10). </think>", f"<think> b ({100 + k}, 100). </think>", f"<think> c ({200 + k}, 200). </think>"][i]


# ------------------------------------------------------------------------------------ PUCT


def test_priors_are_a_softmax_of_length_normalized_logprobs() -> None:
    t = Tree(sample_id="s", task="sat2", frame=FRAME)
    a = t.add(t.root, kind="think", point=(1, 1), logprob=-2.0, completion_tokens=10)  # mean -0.2
    b = t.add(t.root, kind="think", point=(2, 2), logprob=-4.0, completion_tokens=40)  # mean -0.1: longer, likelier
    ps, ok = priors([a, b])
    assert ok and ps[1] > ps[0] and sum(ps) == pytest.approx(1.0)
    assert ps[1] / ps[0] == pytest.approx(math.exp(0.1))
    # one sibling without a log-prob: uniform priors, reported
    c = t.add(t.root, kind="think", point=(3, 3))
    assert priors([a, b, c]) == ([1 / 3] * 3, False)


def test_puct_formula_and_prior_driven_choice() -> None:
    t = Tree(sample_id="s", task="sat2", frame=FRAME)
    r = t.root
    a = t.add(r, kind="think", point=(1, 1), logprob=-1.0, completion_tokens=1)
    b = t.add(r, kind="think", point=(2, 2), logprob=-3.0, completion_tokens=1)
    r.visits, a.visits, a.value_sum = 9, 4, 2.0
    assert puct(a, r, 0.7, 2.0, 1.0) == pytest.approx(0.5 + 2.0 * 0.7 * 3 / 5)
    a.visits, a.value_sum = 0, 0.0
    assert best_child(t, r, 1.0, 1.0, "puct") is a  # both unvisited: the likelier step first
    a.logprob, b.logprob = -3.0, -1.0
    assert best_child(t, r, 1.0, 1.0, "puct") is b
    # virtual loss lowers PUCT like UCT
    before = puct(b, r, 0.5, 1.0, 1.0)
    b.pending = 1
    assert puct(b, r, 0.5, 1.0, 1.0) < before


def test_search_keeps_logprobs_on_nodes_and_follows_the_priors() -> None:
    lp = {"a": -0.1, "b": -3.0, "c": -3.0}
    teacher = LogprobTeacher(three_points, lambda text: lp.get(text.split()[1], -1.0) * 5)
    tree, search = run_search(teacher, simulations=2, children=3, rollouts=0, selection="puct", puct_exploration=1.0,
                              parallel_simulations=1)
    kids = [tree.nodes[c] for c in tree.root.children]
    assert [k.logprob for k in kids] == [-0.5, -15.0, -15.0]
    assert kids[0].children and not kids[1].children  # the second simulation went to the likely step
    assert search.counters.priors_missing == 0
    assert Tree.from_dict(tree.to_dict()).nodes[kids[0].id].logprob == -0.5


def test_no_logprobs_give_uniform_priors_and_one_notice(caplog) -> None:
    mcts._notices.discard("priors")
    with caplog.at_level(logging.WARNING, logger="mcts_engine.search"):
        tree, search = run_search(ScriptedTeacher(three_points), simulations=3, selection="puct")
        run_search(ScriptedTeacher(three_points), simulations=3, selection="puct")
    notes = [r for r in caplog.records if "uniform priors" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.WARNING
    assert search.counters.priors_missing > 0 and tree.stats["priors_missing"] == search.counters.priors_missing
    assert len(tree.nodes) > 3  # never an error: the search ran


# ------------------------------------------------------------------------------------ near-duplicate points


def test_a_step_near_a_point_on_its_path_is_a_repeat() -> None:
    t = Tree(sample_id="s", task="sat2", frame=FRAME)  # 280 x 224: diagonal ≈ 358 px, 2 % ≈ 7.2 px
    a = t.add(t.root, kind="think", point=(100, 100))
    dist = mcts.min_distance(t, 0.02)
    assert dist == pytest.approx(0.02 * math.hypot(280, 224))
    near = parse_step("<think> again (104, 103). </think>")
    far = parse_step("<think> elsewhere (110, 100). </think>")
    assert check_step(t, a, near, "stop", True, min_dist=dist).startswith("repeated_point: (104, 103) is near (100, 100)")
    assert check_step(t, a, far, "stop", True, min_dist=dist) is None
    assert check_step(t, a, near, "stop", True, min_dist=0.0) is None  # 0: only exact repeats
    assert check_step(t, a, parse_step("<think> same (100, 100). </think>"), "stop", True, min_dist=0.0) == "repeated_point"


def test_near_siblings_merge_and_both_rules_are_counted() -> None:
    def script(state, i, k):
        if len(state.turns) == 1 and not state.force_answer:
            return "<think> back (52, 51). </think>"  # the rollout repeats its path's point, nearly
        if len(state.turns) >= 1 or state.force_answer:
            return "<answer> left </answer>"
        return ["<think> one (50, 50). </think>", "<think> two (53, 52). </think>", "<think> far (200, 50). </think>"][i]

    tree, search = run_search(ScriptedTeacher(script), simulations=1, children=3, rollouts=1, min_point_distance=0.02,
                              step_retries=1)
    assert [tree.nodes[c].point for c in tree.root.children] == [(50, 50), (200, 50)]
    assert search.counters.merged_near == 1 and tree.stats["merged_near"] == 1
    assert search.counters.rejected["repeated_point"] >= 1
    assert any(r["reason"].startswith("repeated_point: (52, 51) is near") for r in tree.rejected)


# ------------------------------------------------------------------------------------ log-prob sources


def test_sim_teacher_gives_logprobs_only_when_asked_and_stays_seeded() -> None:
    from mcts_engine.teachers.sim import SimTeacher

    ctx = make_ctx()
    ctx.hint_boxes.append({"label": "cup", "bbox": [10, 10, 60, 60]})

    def texts(cfg: TeacherConfig):
        sim = SimTeacher(cfg, seed=4)
        reply = asyncio.run(sim.complete(PromptState(ctx), 4))
        return [c.text for c in reply.choices], [c.logprob for c in reply.choices]

    plain, none = texts(TeacherConfig())
    with_lp, lps = texts(TeacherConfig(logprobs=True))
    assert plain == with_lp and none == [None] * 4  # the replies do not change, only the log-probs appear
    assert all(isinstance(v, float) and v < 0 for v in lps)


def test_truth_model_sends_openai_logprobs_when_asked() -> None:
    from mcts_engine.testing.stub_server import StubServer
    from mcts_engine.testing.truth_model import Key, TruthModel

    question = "Is the cup left or right? (A) left (B) right"
    model = TruthModel({question: Key("left", (0, 0, 10, 10), 100, 100)})
    body = {"model": "stub-model", "n": 3, "stop": ["</think>", "</answer>"],
            "messages": [{"role": "user", "content": [{"type": "text", "text": question}]}]}

    def post(payload: dict) -> dict:
        req = urllib.request.Request(f"{server.url}/chat/completions", data=json.dumps(payload).encode(),
                                     headers={"content-type": "application/json"})
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as resp:
            return json.loads(resp.read())

    with StubServer(replies=model) as server:
        asked = post(dict(body, logprobs=True))
        plain = post(body)
    for c in asked["choices"]:
        content = c["logprobs"]["content"]
        assert content and all(isinstance(t["logprob"], float) and t["logprob"] < 0 for t in content)
        assert "".join(t["token"] for t in content) == c["message"]["content"]
    assert all(c["logprobs"] is None for c in plain["choices"])


def test_truth_model_grounding_decides_the_answer() -> None:
    from mcts_engine.testing.truth_model import Key, TruthConfig, TruthModel

    q = "Which?\n(A) left\n(B) right"
    model = TruthModel({q: Key("left", (0, 0, 20, 20), 100, 100)}, TruthConfig(p_good=1.0, p_bad=0.0))
    img = "data:image/png;base64,"  # no readable size: the stand-in's default frame (56 x 56)

    def answer(path_text: str) -> str:
        body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": img}},
                                                          {"type": "text", "text": q}]},
                             {"role": "assistant", "content": f"{path_text}\n<answer>"}],
                "continue_final_message": True}
        return model.reply(body, 0, random.Random(0))[0]

    assert answer("<think> key (5, 5). </think>").strip() == "left </answer>"  # visited the key box
    assert answer("<think> elsewhere (40, 40). </think>").strip() == "right </answer>"


def test_puct_generation_asks_the_teacher_for_logprobs(tmp_path) -> None:
    from mcts_engine.config import build_run_config
    from mcts_engine.generate import run_generate

    cfg = build_run_config({}, ["search.selection=puct", "search.simulations=2", "teacher.kind=sim"], limit=1)
    run_generate(cfg, tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert saved["teacher"]["logprobs"] is True
    rec = json.loads((tmp_path / "run" / "trees.jsonl").read_text().splitlines()[0])
    assert all(isinstance(n.get("logprob"), float) for n in rec["nodes"][1:])
