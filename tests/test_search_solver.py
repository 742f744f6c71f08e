"""MCTS-Solver closing, stopping conditions, failed requests and resumed trees."""

from __future__ import annotations

import asyncio

import pytest
from test_search_mcts import FRAME, ScriptedTeacher, distinct_steps, make_ctx, run_search

from mcts_engine.config import ConfigError, SearchConfig, from_dict
from mcts_engine.search.mcts import TreeSearch, select_path
from mcts_engine.search.select import close_all, refresh_closed
from mcts_engine.search.stopping import distinct_correct, early_stop_reached, enough
from mcts_engine.search.tree import Tree
from mcts_engine.teachers.base import PromptState


def hand_tree() -> Tree:
    """root ─ a(10,10) ─ ans left ✓ / ans right ✗ ;  root ─ b(100,100) (unexpanded)"""
    t = Tree(sample_id="s", task="sat2", frame=FRAME)
    t.root.expanded = True
    a = t.add(t.root, kind="think", point=(10, 10), text="<think> a (10, 10). </think>")
    t.add(a, kind="answer", answer="left", reward=1.0, correct=True, text="<answer> left </answer>")
    t.add(a, kind="answer", answer="right", reward=0.0, correct=False, text="<answer> right </answer>")
    t.add(t.root, kind="think", point=(100, 100), text="<think> b (100, 100). </think>")
    return t


# ------------------------------------------------------------------------------------ solver rules


def test_judged_answers_close_and_a_fully_expanded_parent_takes_the_best_exact_value() -> None:
    t = hand_tree()
    a, left, right, b = t.nodes[1], t.nodes[2], t.nodes[3], t.nodes[4]
    close_all(t)
    assert left.closed and left.exact == 1.0 and right.closed and right.exact == 0.0
    assert not a.closed  # its expansion was never asked: more may come
    a.expanded = True
    refresh_closed(t, a)
    assert a.closed and a.exact == 1.0  # single agent: the best child's exact value
    assert not t.root.closed  # b is still open
    # selection never descends into a closed node: it goes to b even though a has the higher Q
    a.visits, a.value_sum = 5, 5.0
    assert [n.id for n in select_path(t, SearchConfig(children=2))] == [0, b.id]
    # a dead end (expanded, every continuation rejected) closes with exact value 0, and the root with it
    b.expanded = True
    refresh_closed(t, b)
    assert b.closed and b.exact == 0.0 and t.root.closed and t.root.exact == 1.0


def test_solver_flags_are_derived_not_stored() -> None:
    t = hand_tree()
    t.nodes[1].expanded = True
    rec = t.to_dict()
    assert all("closed" not in n and "exact" not in n for n in rec["nodes"])
    back = Tree.from_dict(rec)
    assert back.nodes[1].closed and back.nodes[1].exact == 1.0 and not back.root.closed


def test_a_closed_root_ends_the_search_and_no_answer_leaf_is_reselected() -> None:
    teacher = ScriptedTeacher(lambda s, i, k: ["<answer> left </answer>", "<answer> right </answer>"][i % 2])
    tree, search = run_search(teacher, simulations=8, children=2)
    assert tree.root.closed and tree.stats["stop"] == "closed"
    assert len(teacher.calls) == 1 and search.counters.simulations == 1


def test_rollout_stops_at_a_closed_node_and_takes_its_exact_value() -> None:
    # the rollout's first step repeats an existing, closed sibling's text: it merges into it and stops
    def script(state, i, k):
        if k == 0:
            return "<think> look (10, 10). </think>"
        if k == 1:
            return "<answer> left </answer>"
        return "<think> look (10, 10). </think>"

    tree = Tree(sample_id="s", task="sat2", frame=FRAME)
    ctx = make_ctx()
    search = TreeSearch(tree, PromptState(ctx), ScriptedTeacher(script), SearchConfig(children=1, rollouts=1, simulations=1,
                        min_point_distance=0.0), lambda a: ctx.task.verify(a, ctx.truth))
    asyncio.run(search.run())
    a = tree.nodes[1]
    assert a.children and tree.nodes[a.children[0]].terminal
    a.expanded = True
    refresh_closed(tree, a)
    # a second rollout from the root whose step merges into the closed node `a` stops there
    from mcts_engine.teachers.base import Continuation

    async def one_rollout() -> None:
        node = await search._attach(tree.root, Continuation("<think> look (10, 10). </think>", "stop", 3), "rollout", False)
        await search._rollout(tree.root, node, False)

    before = a.visits
    asyncio.run(one_rollout())
    assert search.counters.rollouts_closed == 1 and a.visits == before + 1 and a.value_sum == pytest.approx(a.visits * 1.0)


def test_virtual_loss_still_spreads_parallel_simulations_with_the_solver() -> None:
    teacher = ScriptedTeacher(distinct_steps, delay=0.01)
    tree, _ = run_search(teacher, simulations=6, children=3, rollouts=1, parallel_simulations=3)
    assert teacher.max_in_flight > 1 and all(n.pending == 0 for n in tree.nodes)
    assert sum(1 for c in tree.root.children if tree.nodes[c].expanded) >= 2


# ------------------------------------------------------------------------------------ stopping


def two_answers_per_step(state, i, k):
    """Every request: a fresh point, then answers alternate right/wrong by call."""
    if len(state.turns) >= 1 or state.force_answer:
        return "<answer> left </answer>" if (k + i) % 3 else "<answer> right </answer>"
    return f"<think> look ({10 + 9 * k + 3 * i}, {20 + 5 * i}). </think>"


def deep_steps(state, i, k):
    if state.force_answer:
        return "<answer> left </answer>"
    return f"<think> look ({(7 * k + i) % 270}, {(3 * k + 11 * i) % 220}). </think>"


def test_early_stop_none_runs_the_whole_budget() -> None:
    _, search = run_search(ScriptedTeacher(deep_steps), simulations=6, early_stop="none", max_depth=4)
    assert search.counters.simulations == 6 and search.tree.stats["stop"] == "simulations"


def test_early_stop_solved_stops_at_the_first_correct_leaf() -> None:
    tree, search = run_search(ScriptedTeacher(two_answers_per_step), simulations=20, early_stop="solved", parallel_simulations=1)
    assert tree.solved and tree.stats["stop"] == "solved" and search.counters.simulations < 20


def test_early_stop_enough_needs_distinct_correct_paths_and_one_wrong_path() -> None:
    tree, search = run_search(ScriptedTeacher(two_answers_per_step), simulations=40, early_stop="enough", target_correct=3,
                              parallel_simulations=1)
    assert tree.stats["stop"] == "enough" and search.counters.simulations < 40
    assert distinct_correct(tree) >= 3 and enough(tree, 3)
    # only correct paths: never enough, whatever their number
    t = hand_tree()
    t.nodes[3].correct = True
    assert not enough(t, 1) and not early_stop_reached(t, "enough", 1)
    assert early_stop_reached(t, "solved", 1) and not early_stop_reached(t, "none", 1)


def test_distinct_correct_paths_ignore_rewording_of_the_same_walk() -> None:
    t = hand_tree()
    a = t.nodes[1]
    t.add(a, kind="answer", answer=" Left ", reward=1.0, correct=True, text="<answer> Left </answer>")
    assert distinct_correct(t) == 1


def test_max_calls_budget_stops_the_search() -> None:
    teacher = ScriptedTeacher(distinct_steps)
    tree, _ = run_search(teacher, simulations=50, max_calls=7)
    assert len(teacher.calls) <= 7 and tree.stats["stop"] == "max_calls"


def test_search_config_checks_new_values() -> None:
    for bad in ({"selection": "ucb"}, {"early_stop": "never"}, {"min_point_distance": 1.5}, {"target_correct": 0},
                {"max_consecutive_errors": 0}):
        with pytest.raises(ConfigError, match="search."):
            from_dict(SearchConfig, bad, "search")  # how recipes and --set build a section (checked once)


# ------------------------------------------------------------------------------------ failures


def test_a_failed_request_costs_one_expansion_not_the_tree() -> None:
    teacher = ScriptedTeacher(distinct_steps, fail_on={0, 3})
    tree, search = run_search(teacher, simulations=6, parallel_simulations=1)
    assert search.counters.errors == 2 and tree.stats["errors"] == 2
    assert tree.stats["error_texts"] == ["HTTP 500 after retries"] * 2
    assert tree.root.expanded and len(tree.nodes) > 1 and tree.solved  # the root was expanded on the next try
    assert search.counters.simulations == 6  # the failed ones count against the budget


def test_consecutive_failures_end_the_tree_early_keeping_what_it_found() -> None:
    teacher = ScriptedTeacher(distinct_steps, fail_on=set(range(4, 100)))
    tree, search = run_search(teacher, simulations=30, parallel_simulations=1, max_consecutive_errors=3)
    # one simulation's rollouts fail together: the tree stops after that simulation
    assert tree.stats["stop"] == "errors" and search.counters.errors >= 3 and search.counters.simulations < 3
    assert len(tree.nodes) > 1 and 3 <= len(tree.stats["error_texts"]) <= 5  # the first few messages only


def test_run_raises_only_when_the_teacher_gave_nothing() -> None:
    from mcts_engine.teachers.base import TeacherError

    teacher = ScriptedTeacher(distinct_steps, fail_on=set(range(100)))
    with pytest.raises(TeacherError, match="gave nothing usable"):
        run_search(teacher, simulations=8)
    assert len(teacher.calls) == 3  # max_consecutive_errors (default 3), not the whole budget


def test_a_failing_expansion_with_another_simulation_waiting_on_it_is_asked_once_at_a_time() -> None:
    """Regression: a simulation that waited on the root's failed expansion went on to expand the root while
    another simulation's request was in flight (KeyError in the expansion bookkeeping)."""
    from mcts_engine.teachers.base import TeacherError

    teacher = ScriptedTeacher(distinct_steps, fail_on=set(range(100)), delay=0.01)
    with pytest.raises(TeacherError, match="gave nothing usable"):
        run_search(teacher, simulations=8, parallel_simulations=2)
    assert teacher.max_in_flight == 1  # one request for the root at a time


# ------------------------------------------------------------------------------------ resumed trees


def test_a_tree_handed_over_with_nodes_continues_its_budgets() -> None:
    ctx = make_ctx()
    tree = Tree(sample_id="s1", task="sat2", frame=FRAME)
    cfg = SearchConfig(simulations=3, parallel_simulations=1, min_point_distance=0.0)
    first = TreeSearch(tree, PromptState(ctx), ScriptedTeacher(distinct_steps), cfg, lambda a: ctx.task.verify(a, ctx.truth))
    asyncio.run(first.run())
    nodes, calls = len(tree.nodes), tree.stats["calls"]
    assert tree.stats["simulations"] == 3
    # a checkpoint round trip, then a new search with a larger budget on the same record
    again = Tree.from_dict(tree.to_dict())
    cfg2 = SearchConfig(simulations=5, parallel_simulations=1, min_point_distance=0.0)
    second = TreeSearch(again, PromptState(ctx), ScriptedTeacher(distinct_steps), cfg2, lambda a: ctx.task.verify(a, ctx.truth))
    second.states.update(first.states)  # the resuming caller rebuilds prompt states keyed by node id
    asyncio.run(second.run())
    assert again.stats["simulations"] == 5 and again.stats["calls"] > calls and len(again.nodes) > nodes
    assert again.nodes[:nodes] and [n.text for n in again.nodes[:nodes]] == [n.text for n in tree.nodes[:nodes]]


# ------------------------------------------------------------------------------------ rollout economy


def test_rollout_depth_forces_the_rollout_answer_after_that_many_steps() -> None:
    def never_answers(state, i, k):
        if state.force_answer:
            return "<answer> left </answer>"
        return f"<think> step ({(13 * k + 5 * i) % 270}, {(7 * k + 3 * i) % 220}). </think>"

    teacher = ScriptedTeacher(never_answers)
    tree, _ = run_search(teacher, simulations=1, children=1, rollouts=1, rollout_depth=2, max_depth=10)
    # root → child (depth 1) → rollout step (depth 2) → forced answer (depth 3)
    assert [c for c in teacher.calls] == [(0, 1, False), (1, 1, False), (2, 1, True)]
    assert max(n.depth for n in tree.nodes) == 3 and tree.nodes[-1].forced


def test_rollouts_after_solved_and_adaptive_rollouts_change_the_rollout_count() -> None:
    ctx = make_ctx()
    tree = hand_tree()  # solved: `left` under a
    a, b = tree.nodes[1], tree.nodes[4]
    search = TreeSearch(tree, PromptState(ctx), ScriptedTeacher(distinct_steps),
                        SearchConfig(rollouts=3, rollouts_after_solved=1), lambda x: ctx.task.verify(x, ctx.truth))
    assert search._rollout_count(b) == 1
    search.cfg = SearchConfig(rollouts=3, adaptive_rollouts=True)
    tree.root.visits, tree.root.value_sum = 4, 2.0  # root Q 0.5
    a.visits, a.value_sum = 2, 0.0  # a child of `a` sits under a below-average node
    child = tree.add(a, kind="think", point=(20, 20))
    assert search._rollout_count(child) == 1
    a.value_sum = 2.0
    assert search._rollout_count(child) == 3
    assert search._rollout_count(b) == 3  # under the root itself
