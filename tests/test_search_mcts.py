"""MCTS: pure selection/backup rules and the asynchronous tree search against scripted teachers."""

from __future__ import annotations

import asyncio

import pytest

from mcts_engine.config import SearchConfig
from mcts_engine.frame import Frame
from mcts_engine.grounding import parse_step
from mcts_engine.samples import EncodedImage, Sample
from mcts_engine.search.mcts import TreeSearch, backup, best_child, check_step, select_path, uct
from mcts_engine.search.tree import Tree
from mcts_engine.tasks import get_task
from mcts_engine.teachers.base import Continuation, PromptContext, PromptState, TeacherError, TeacherReply

FRAME = Frame(width=280, height=224, orig_width=560, orig_height=448)


def make_ctx() -> PromptContext:
    img = EncodedImage(key="k", frame=FRAME, mime="image/png", data=b"x")
    sample = Sample(id="s1", images=["x.png"], question="Left or right?", answer="left", choices=["left", "right"], task="sat2")
    task = get_task("sat2")
    return PromptContext(sample=sample, system="sys", user_text="q", images=(img,), truth=task.ground_truth(sample, FRAME), task=task)


class ScriptedTeacher:
    """Returns texts from a function of (depth, index-in-request, call number); records calls."""

    name = "scripted"

    def __init__(self, fn, fail_on: set[int] | None = None, delay: float = 0.0) -> None:
        self.fn = fn
        self.calls: list[tuple[int, int, bool]] = []  # (depth, n, forced)
        self.fail_on = fail_on or set()
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0

    async def complete(self, state: PromptState, n: int) -> TeacherReply:
        k = len(self.calls)
        self.calls.append((len(state.turns), n, state.force_answer))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if k in self.fail_on:
                raise TeacherError("HTTP 500 after retries")
            texts = [self.fn(state, i, k) for i in range(n)]
        finally:
            self.in_flight -= 1
        return TeacherReply([Continuation(t, "stop", 5) for t in texts], prompt_tokens=10)

    async def check(self) -> None: ...

    async def aclose(self) -> None: ...

    def describe(self) -> dict:
        return {"kind": "scripted"}


def distinct_steps(state: PromptState, i: int, k: int) -> str:
    depth = len(state.turns)
    if state.force_answer or depth >= 2:
        return "<answer> left </answer>" if (i + k) % 2 == 0 else "<answer> right </answer>"
    return f"<think> look at region {k}-{i} ({10 + 7 * k + i}, {20 + depth}). </think>"


def run_search(teacher, **cfg) -> tuple[Tree, TreeSearch]:
    """These scripts write points a few pixels apart: only exact repeats count unless a test says so. The
    scripted expectations are written for the reference's budget shape (8 simulations, 2 in flight, a fixed
    number of children): progressive widening is off unless a test turns it on (tests/test_search_widening.py)."""
    cfg.setdefault("min_point_distance", 0.0)
    for key, value in (("simulations", 8), ("parallel_simulations", 2), ("max_children", 0), ("widen_alpha", 0.0)):
        cfg.setdefault(key, value)
    ctx = make_ctx()
    tree = Tree(sample_id="s1", task="sat2", frame=FRAME)
    task = ctx.task
    search = TreeSearch(tree, PromptState(ctx), teacher, SearchConfig(**cfg), lambda a: task.verify(a, ctx.truth))
    asyncio.run(search.run())
    return tree, search


# ------------------------------------------------------------------------------------------ pure


def test_uct_matches_reference_formula_and_virtual_loss_lowers_it():
    tree = Tree(sample_id="a", task="sat2", frame=FRAME)
    root = tree.root
    a = tree.add(root, kind="think", point=(1, 1))
    b = tree.add(root, kind="think", point=(2, 2))
    root.visits, a.visits, a.value_sum, b.visits, b.value_sum = 10, 6, 3.0, 4, 2.0
    # by hand: Q = 3/6 = 0.5; ln(10 + 1) = 2.397895; / (6 + 1) = 0.342556; sqrt = 0.585283; × 2 = 1.170566
    assert uct(a, root, 2.0, 1.0) == pytest.approx(1.670566, abs=1e-6)
    # Unvisited children get Q = 0 and the largest exploration bonus: 2 × sqrt(2.397895 / 1) = 3.097028.
    c = tree.add(root, kind="think", point=(3, 3))
    assert uct(c, root, 2.0, 1.0) == pytest.approx(3.097028, abs=1e-6)
    # Virtual loss: one pending simulation through b counts as a visit of value 0.
    before = uct(b, root, 2.0, 1.0)
    b.pending = 1
    after = uct(b, root, 2.0, 1.0)
    assert after < before
    # by hand: Q = 2 / (4 + 1) = 0.4; 2 × sqrt(2.397895 / 6) = 2 × 0.632178 = 1.264356
    assert after == pytest.approx(1.664356, abs=1e-6)


def test_best_child_breaks_ties_by_age_and_select_stops_at_unexpanded():
    tree = Tree(sample_id="a", task="sat2", frame=FRAME)
    cfg = SearchConfig(children=2, max_children=0, widen_alpha=0.0)  # no widening: two children fill the budget
    assert [n.id for n in select_path(tree, cfg)] == [0]  # root not expanded yet
    a = tree.add(tree.root, kind="think", point=(1, 1))
    b = tree.add(tree.root, kind="think", point=(2, 2))
    assert best_child(tree, tree.root, 2.0, 1.0) is a  # a tie: the older child
    # distinct values: b (Q 1.0) beats a (Q 0.0) at the same visits; with more visits on b, a's bonus wins
    tree.root.visits, a.visits, a.value_sum, b.visits, b.value_sum = 2, 1, 0.0, 1, 1.0
    assert best_child(tree, tree.root, 2.0, 1.0) is b
    tree.root.visits, b.visits, b.value_sum = 21, 20, 10.0  # b: 0.5 + 2·sqrt(ln 22 / 21) = 1.2673; a: 0 + 2·sqrt(ln 22 / 2) = 2.4864
    assert best_child(tree, tree.root, 2.0, 1.0) is a
    a.visits = a.value_sum = b.visits = b.value_sum = tree.root.visits = 0
    # Two rollout children already fill the budget of 2: the root counts as expanded.
    path = select_path(tree, cfg)
    assert tree.root.expanded and [n.id for n in path] == [0, a.id]


def test_backup_adds_to_every_ancestor():
    tree = Tree(sample_id="a", task="sat2", frame=FRAME)
    a = tree.add(tree.root, kind="think", point=(1, 1))
    leaf = tree.add(a, kind="answer", answer="left")
    backup(tree, leaf, 1.0)
    backup(tree, a, 0.0)
    assert (tree.root.visits, tree.root.value_sum) == (2, 1.0)
    assert (a.visits, a.q) == (2, 0.5)
    assert (leaf.visits, leaf.q) == (1, 1.0)


def test_check_step_rejections():
    tree = Tree(sample_id="a", task="sat2", frame=FRAME)
    a = tree.add(tree.root, kind="think", point=(5, 5))
    ok = parse_step("<think> fine (6, 6). </think>")
    assert check_step(tree, a, ok, "stop", True) is None
    assert check_step(tree, a, parse_step("<think> same (5, 5). </think>"), "stop", True) == "repeated_point"
    assert check_step(tree, a, parse_step("<think> edge (280, 10). </think>"), "stop", True) == "out_of_frame"
    assert check_step(tree, a, parse_step("<think> no point here. </think>"), "stop", True) == "no_point"
    assert check_step(tree, a, parse_step("<think> no point here. </think>"), "stop", False) is None
    assert check_step(tree, a, parse_step("rambling"), "stop", True) == "invalid"
    assert check_step(tree, a, parse_step("<think> cut (1, 2"), "length", True) == "truncated"
    assert check_step(tree, a, parse_step("<answer> left </answer>"), "stop", True) is None


# ------------------------------------------------------------------------------------------ search


def test_search_keeps_every_generated_step_and_backs_up_visits():
    teacher = ScriptedTeacher(distinct_steps)
    tree, search = run_search(teacher, simulations=4, children=3, rollouts=2, parallel_simulations=1)
    # Every choice the teacher returned is a node or a recorded rejection (here none are rejected).
    returned = sum(n for _, n, _ in teacher.calls)
    assert len(tree.nodes) - 1 + len(tree.rejected) + search.counters.merged == returned
    # Expansion asks `children` continuations in ONE request; rollouts start with n = rollouts.
    assert teacher.calls[0] == (0, 3, False)
    assert teacher.calls[1][1] == 2
    assert {n.source for n in tree.nodes[1:]} == {"expand", "rollout"}
    # Visits at the root equal the number of leaf evaluations backed up.
    evaluations = sum(1 for n in tree.nodes if n.terminal for _ in range(n.visits))
    assert tree.root.visits == evaluations > 0
    for node in tree.nodes:  # no rejections here: every backup passes through exactly one child
        if node.children:
            assert node.visits == sum(tree.nodes[c].visits for c in node.children)
    assert tree.solved
    assert tree.stats["calls"] == len(teacher.calls)


def test_max_depth_forces_a_final_answer():
    def never_answers(state, i, k):
        if state.force_answer:
            return "<answer> left </answer>"
        return f"<think> step ({k % 200}, {(i * 31 + len(state.turns) * 7) % 200}). </think>"

    teacher = ScriptedTeacher(never_answers)
    tree, _ = run_search(teacher, simulations=3, children=2, rollouts=1, max_depth=3)
    assert max(n.depth for n in tree.nodes) <= 3
    forced_calls = [c for c in teacher.calls if c[2]]
    assert forced_calls and all(depth == 2 for depth, _, _ in forced_calls)
    assert all(n.terminal for n in tree.nodes if n.depth == 3)
    assert all(n.forced for n in tree.nodes if n.depth == 3)


def test_rejected_steps_are_recorded_and_counted():
    def bad(state, i, k):
        if len(state.turns) >= 1:
            return "<answer> left </answer>"
        return ["<think> outside (999, 5). </think>", "<think> fine (10, 10). </think>", "nothing"][i]

    tree, search = run_search(ScriptedTeacher(bad), simulations=1, children=3, rollouts=1)
    reasons = sorted(r["reason"] for r in tree.rejected)
    assert reasons == ["invalid", "out_of_frame"]
    assert search.counters.rejected == {"invalid": 1, "out_of_frame": 1}
    assert len(tree.root.children) == 1


def test_repeated_point_rollout_step_is_retried():
    def repeats_once(state, i, k):
        if len(state.turns) == 0:
            return "<think> first (10, 10). </think>"
        if len(state.turns) == 1 and k == 1:
            return "<think> again (10, 10). </think>"  # the rollout's first step repeats the point
        return "<answer> left </answer>"

    teacher = ScriptedTeacher(repeats_once)
    tree, search = run_search(teacher, simulations=1, children=1, rollouts=1, step_retries=2)
    assert search.counters.rejected["repeated_point"] == 1
    assert teacher.calls[2] == (1, 1, False)  # the retry asks one continuation
    assert tree.solved


def test_budget_and_early_stop():
    teacher = ScriptedTeacher(distinct_steps)
    tree, search = run_search(teacher, simulations=50, max_calls=7)
    assert len(teacher.calls) == 7 and search.counters.calls == 7 and tree.stats["stop"] == "max_calls"
    teacher2 = ScriptedTeacher(lambda s, i, k: "<answer> left </answer>")
    _, search2 = run_search(teacher2, simulations=8, early_stop="solved")
    assert search2.counters.simulations == 1 and len(teacher2.calls) == 1


def test_parallel_simulations_use_virtual_loss_to_spread():
    teacher = ScriptedTeacher(distinct_steps, delay=0.01)
    tree, _ = run_search(teacher, simulations=6, children=3, rollouts=1, parallel_simulations=3)
    assert teacher.max_in_flight > 1
    assert all(n.pending == 0 for n in tree.nodes)
    # Simulations that reach a leaf being expanded wait for it instead of expanding it again.
    assert sum(1 for depth, _, _ in teacher.calls if depth == 0) == 1
    assert len(tree.root.children) == 3
    # Different simulations went down different root children.
    assert sum(1 for c in tree.root.children if tree.nodes[c].expanded) >= 2


def test_teacher_errors_fail_the_sample_after_max_errors():
    teacher = ScriptedTeacher(distinct_steps, fail_on=set(range(100)))
    ctx = make_ctx()
    tree = Tree(sample_id="s1", task="sat2", frame=FRAME)
    search = TreeSearch(tree, PromptState(ctx), teacher, SearchConfig(simulations=8), lambda a: ctx.task.verify(a, ctx.truth))
    with pytest.raises(TeacherError, match="HTTP 500"):
        asyncio.run(search.run())
    # One transient error does not fail the sample.
    teacher = ScriptedTeacher(distinct_steps, fail_on={0})
    tree, search = run_search(teacher, simulations=4)
    assert search.counters.errors == 1 and tree.root.visits > 0
