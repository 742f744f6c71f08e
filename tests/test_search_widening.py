"""Full expansion with merged siblings, progressive widening and the answer probe (known answers on scripted trees)."""

from __future__ import annotations

import pytest
from test_search_mcts import FRAME, ScriptedTeacher, run_search

from mcts_engine.config import ConfigError, SearchConfig, from_dict
from mcts_engine.search.select import child_limit, select_path
from mcts_engine.search.tree import Tree


def three_kids(visits: int) -> Tree:
    t = Tree(sample_id="s", task="sat2", frame=FRAME)
    for i in range(3):
        t.add(t.root, kind="think", point=(10 + 50 * i, 10), text=f"<think> k{i} ({10 + 50 * i}, 10). </think>")
    t.root.visits = visits
    return t


def test_child_limit_is_coulom_widening_capped() -> None:
    node = three_kids(0).root
    assert child_limit(node, 3) == 3  # no widening: always `children`
    node.visits = 16
    assert child_limit(node, 3, max_children=8, widen_c=1.0, widen_alpha=0.5) == 4  # ceil(1 * 16^0.5)
    node.visits = 100
    assert child_limit(node, 3, max_children=8, widen_c=1.0, widen_alpha=0.5) == 8  # capped
    assert child_limit(node, 3, max_children=0, widen_c=1.0, widen_alpha=0.5) == 3  # max_children 0: off


def test_selection_widens_a_much_visited_node_and_descends_otherwise() -> None:
    t = three_kids(16)
    assert [n.id for n in select_path(t, 3, 1.0, 1.0, "puct", max_children=8, widen_alpha=0.5)] == [0]
    t = three_kids(4)
    path = select_path(t, 3, 1.0, 1.0, "puct", max_children=8, widen_alpha=0.5)
    assert len(path) == 2 and path[-1].parent == 0
    # without widening three children fill the node: it counts as fully expanded
    t = three_kids(16)
    assert len(select_path(t, 3, 1.0, 1.0, "puct")) == 2 and t.root.expanded


def test_merged_siblings_leave_the_node_expandable_instead_of_closing_it() -> None:
    # the root's first request gives three copies of one step (one distinct child, whose answer closes it);
    # the root must be asked again for the two children it lacks, not closed after one child
    def script(state, i, k):
        if state.force_answer or len(state.turns) >= 1:
            return "<answer> left </answer>"
        if k == 0:
            return "<think> same (10, 10). </think>"
        return f"<think> new ({100 + 10 * k + i}, 100). </think>"

    teacher = ScriptedTeacher(script)
    tree, search = run_search(teacher, simulations=4, children=3, rollouts=0)
    root_calls = [c for c in teacher.calls if c[0] == 0]
    assert root_calls[0][1] == 3 and root_calls[1][1] == 2  # asked again for the two it lacks
    assert len(tree.root.children) == 3 and search.counters.simulations == 4  # not closed after ~one child


def test_a_node_whose_asks_bring_nothing_new_is_fully_expanded_after_expand_asks() -> None:
    # every continuation is the same answer: one child, then `expand_asks` fruitless asks close the root
    for asks in (1, 2):
        teacher = ScriptedTeacher(lambda s, i, k: "<answer> left </answer>")
        tree, _ = run_search(teacher, simulations=8, children=3, expand_asks=asks)
        assert len(teacher.calls) == 1 + asks
        assert tree.root.expanded and tree.root.closed and tree.stats["stop"] == "closed"


def test_answer_probe_asks_each_new_thought_child_for_its_answer_once() -> None:
    def script(state, i, k):
        if state.force_answer or len(state.turns) >= 2:
            return "<answer> left </answer>"
        return f"<think> s ({10 + 40 * i + 7 * k}, {10 + 3 * len(state.turns)}). </think>"

    teacher = ScriptedTeacher(script)
    tree, _ = run_search(teacher, simulations=1, children=2, rollouts=0, answer_probe=True)
    assert [c for c in teacher.calls if c[2]] == [(1, 1, True), (1, 1, True)]  # one forced request per child
    for cid in tree.root.children:
        kid = tree.nodes[cid]
        assert [tree.nodes[g].kind for g in kid.children] == ["answer"] and kid.visits == 1


def test_widening_config_is_checked() -> None:
    for bad in ({"expand_asks": 0}, {"widen_alpha": -1}, {"widen_c": 0}, {"max_children": -1}, {"prior_temperature": 0}):
        with pytest.raises(ConfigError, match="search."):
            from_dict(SearchConfig, bad, "search")  # how recipes and --set build a section


def test_widening_descends_a_little_visited_rollout_chain_and_asks_a_fresh_node_for_children() -> None:
    t = Tree(sample_id="s", task="sat2", frame=FRAME)
    t.root.expanded = True
    a = t.add(t.root, kind="think", point=(10, 10), source="rollout")
    b = t.add(a, kind="think", point=(60, 60), source="rollout")
    t.root.visits, a.visits, b.visits = 1, 1, 1
    assert child_limit(a, 3, max_children=6, widen_c=1.0, widen_alpha=0.5) == 1  # ceil(1 * 1^0.5)
    assert child_limit(b, 3, max_children=6, widen_c=1.0, widen_alpha=0.5) == 3  # fresh: `children`
    assert [n.id for n in select_path(t, 3, 1.0, 1.0, "puct", max_children=6, widen_alpha=0.5)] == [0, a.id, b.id]
    # without widening the chain's first node (one child of three) is expanded first
    assert [n.id for n in select_path(t, 3, 1.0, 1.0, "puct")] == [0, a.id]


def test_prior_temperature_sharpens_the_softmax() -> None:
    from mcts_engine.search.select import priors

    t = Tree(sample_id="s", task="sat2", frame=FRAME)
    a = t.add(t.root, kind="think", point=(1, 1), logprob=-6.0, completion_tokens=10)  # mean -0.6
    b = t.add(t.root, kind="think", point=(2, 2), logprob=-9.0, completion_tokens=10)  # mean -0.9
    import math

    assert priors([a, b])[0][0] / priors([a, b])[0][1] == pytest.approx(math.exp(0.3))
    assert priors([a, b], 0.1)[0][0] / priors([a, b], 0.1)[0][1] == pytest.approx(math.exp(3.0))
    with pytest.raises(ConfigError, match="search.prior_temperature"):
        from_dict(SearchConfig, {"prior_temperature": 0}, "search")
