"""Known answers for the search's pure parts: UCT/PUCT scores and argmax with distinct Q values, virtual
loss ≠ 1 (on a child and on the parent alone), an exact visit/value trace, sibling merging.

Every expected number below is a literal worked out by hand (the arithmetic is in the comments), never
the formula retyped: a change to the rule, the virtual-loss accounting or the backup changes a number.
"""

from __future__ import annotations

import asyncio

import pytest
from test_search_mcts import FRAME, ScriptedTeacher, make_ctx

from mcts_engine.config import SearchConfig
from mcts_engine.search.mcts import TreeSearch
from mcts_engine.search.select import backup, best_child, priors, puct, select_path, uct
from mcts_engine.search.tree import Tree
from mcts_engine.teachers.base import PromptState


def three_children() -> Tree:
    """root (N=10) with A (N=4, W=3.0, Q=0.75), B (N=5, W=2.0, Q=0.4), C (N=1, W=0.0, Q=0.0).

    Log-probs for PUCT: A −30 over 10 tokens (mean −3.0), B −0.5 over 10 (−0.05), C −1.0 over 1 (−1.0).
    """
    tree = Tree(sample_id="s", task="sat2", frame=FRAME)
    root = tree.root
    root.expanded, root.visits, root.value_sum = True, 10, 5.0
    for name, visits, value_sum, logprob, tokens in (("A", 4, 3.0, -30.0, 10), ("B", 5, 2.0, -0.5, 10), ("C", 1, 0.0, -1.0, 1)):
        tree.add(root, text=name, kind="think", thought=name, point=(10 * len(root.children) + 10, 10), source="expand",
                 visits=visits, value_sum=value_sum, logprob=logprob, completion_tokens=tokens)
    return tree


def names(tree: Tree) -> dict[str, object]:
    return {tree.nodes[c].text: tree.nodes[c] for c in tree.root.children}


def assert_uct(tree: Tree, c: float, vl: float, expected: dict[str, float], winner: str) -> None:
    """Each root child's UCT score is the hand-computed one, and the argmax is ``winner``."""
    kids = names(tree)
    for name, score in expected.items():
        assert uct(kids[name], tree.root, c, vl) == pytest.approx(score, abs=2e-6), name
    assert best_child(tree, tree.root, c, vl, "uct").text == winner


# --------------------------------------------------------------------------------------------
# UCT
# --------------------------------------------------------------------------------------------

# UCT = Q + c·sqrt(ln(N_parent + 1) / (N_child + 1)); ln 11 = 2.397895
#   c = 1: A 0.75 + sqrt(2.397895/5) = 0.75 + 0.692516 = 1.442516
#          B 0.40 + sqrt(2.397895/6) = 0.40 + 0.632178 = 1.032178
#          C 0.00 + sqrt(2.397895/2) =        1.094965 = 1.094965   -> A (exploitation wins)
#   c = 2: A 0.75 + 1.385033 = 2.135033, B 0.40 + 1.264356 = 1.664356, C 2.189929  -> C (exploration wins)
@pytest.mark.parametrize("c,expected,winner", [
    (1.0, {"A": 1.442516, "B": 1.032178, "C": 1.094965}, "A"),
    (2.0, {"A": 2.135033, "B": 1.664356, "C": 2.189929}, "C"),
])
def test_uct_scores_and_argmax_with_distinct_q(c, expected, winner):
    tree = three_children()
    assert_uct(tree, c, 1.0, expected, winner)
    assert [n.text for n in select_path(tree, children=3, c=c, virtual_loss=1.0, rule="uct")] == ["", winner]


# One simulation in flight through A (A.pending = root.pending = 1), c = 1:
#   virtual_loss = 1: N_A = 5, Q_A = 3/5 = 0.6, N_root = 11, ln 12 = 2.484907
#       A 0.6 + sqrt(2.484907/6) = 0.6 + 0.643546 = 1.243546
#       B 0.4 + sqrt(2.484907/6) = 0.4 + 0.643546 = 1.043546
#       C       sqrt(2.484907/2) =                  1.114654   -> A still
#   virtual_loss = 3: N_A = 7, Q_A = 3/7 = 0.428571, N_root = 13, ln 14 = 2.639057
#       A 0.428571 + sqrt(2.639057/8) = 0.428571 + 0.574353 = 1.002925
#       B 0.4      + sqrt(2.639057/6) = 0.4      + 0.663207 = 1.063207
#       C            sqrt(2.639057/2) =                       1.148707   -> C
@pytest.mark.parametrize("vl,expected,winner", [
    (1.0, {"A": 1.243546, "B": 1.043546, "C": 1.114654}, "A"),
    (3.0, {"A": 1.002925, "B": 1.063207, "C": 1.148707}, "C"),
])
def test_virtual_loss_on_the_child_lowers_its_score_by_its_weight(vl, expected, winner):
    tree = three_children()
    names(tree)["A"].pending = tree.root.pending = 1
    assert_uct(tree, 1.0, vl, expected, winner)


# Three simulations pending on the root alone (expanding it, say), none on a child, c = 1.7:
#   virtual_loss = 1: N_root = 13, ln 14 = 2.639057, sqrt = 1.624517
#       A 0.75 + 1.7·1.624517/sqrt(5) = 0.75 + 1.235061 = 1.985061
#       B 0.40 + 1.7·1.624517/sqrt(6) = 0.40 + 1.127451 = 1.527451
#       C        1.7·1.624517/sqrt(2) =                  1.952803   -> A
#   virtual_loss = 4: N_root = 22, ln 23 = 3.135494, sqrt = 1.770733
#       A 0.75 + 1.346223 = 2.096223, B 0.40 + 1.228928 = 1.628928, C 2.128565   -> C
@pytest.mark.parametrize("vl,expected,winner", [
    (1.0, {"A": 1.985061, "B": 1.527451, "C": 1.952803}, "A"),
    (4.0, {"A": 2.096223, "B": 1.628928, "C": 2.128565}, "C"),
])
def test_virtual_loss_pending_on_the_parent_alone_changes_the_choice(vl, expected, winner):
    tree = three_children()
    tree.root.pending = 3
    assert_uct(tree, 1.7, vl, expected, winner)


def test_closed_child_is_never_selected_even_with_the_best_score():
    tree = three_children()
    kids = names(tree)
    kids["A"].closed = True  # A has the best UCT at c = 1 (1.442516); next best is C (1.094965)
    assert best_child(tree, tree.root, 1.0, 1.0, "uct").text == "C"


# --------------------------------------------------------------------------------------------
# PUCT
# --------------------------------------------------------------------------------------------

# Priors: softmax of the mean token log-probs (−3.0, −0.05, −1.0), shifted by the max −0.05:
#   exp(−2.95) = 0.052340, exp(0) = 1, exp(−0.95) = 0.386741; sum 1.439081
#   P = (0.036370, 0.694888, 0.268742)    (raw sums −30, −0.5, −1.0 would give C ≈ 0.38, not 0.27)
# PUCT = Q + c·P·sqrt(N_parent)/(1 + N_child), sqrt(10) = 3.162278, c = 3:
#   A 0.75 + 3·0.036370·3.162278/5 = 0.75 + 0.069008 = 0.819008
#   B 0.40 + 3·0.694888·3.162278/6 = 0.40 + 1.098714 = 1.498714
#   C 0.00 + 3·0.268742·3.162278/2 =                  1.274754   -> B (the teacher's favourite, not the best Q)
# Uniform priors (one sibling without a log-prob), P = 1/3:
#   A 0.75 + 0.632456 = 1.382456, B 0.40 + 0.527046 = 0.927046, C 1.581139   -> C
def test_puct_priors_are_length_normalized_and_steer_the_choice():
    tree = three_children()
    kids = names(tree)
    ps, have = priors([kids["A"], kids["B"], kids["C"]])
    assert have and ps == pytest.approx([0.036370, 0.694888, 0.268742], abs=2e-6)
    for name, p, score in (("A", ps[0], 0.819008), ("B", ps[1], 1.498714), ("C", ps[2], 1.274754)):
        assert puct(kids[name], tree.root, p, 3.0, 1.0) == pytest.approx(score, abs=2e-6)
    assert best_child(tree, tree.root, 3.0, 1.0, "puct").text == "B"
    assert best_child(tree, tree.root, 2.0, 1.0, "uct").text == "C"  # UCT at a like c picks otherwise

    kids["B"].logprob = None
    ps, have = priors([kids["A"], kids["B"], kids["C"]])
    assert not have and ps == [1 / 3, 1 / 3, 1 / 3]
    for name, score in (("A", 1.382456), ("B", 0.927046), ("C", 1.581139)):
        assert puct(kids[name], tree.root, 1 / 3, 3.0, 1.0) == pytest.approx(score, abs=2e-6)
    assert best_child(tree, tree.root, 3.0, 1.0, "puct").text == "C"


# --------------------------------------------------------------------------------------------
# Backup and an exact trace of the search
# --------------------------------------------------------------------------------------------


def test_backup_adds_one_visit_and_the_value_to_the_path_only():
    tree = three_children()
    kids = names(tree)
    leaf = tree.add(kids["B"], text="ans", kind="answer", answer="left", reward=1.0)
    backup(tree, leaf, 0.25)
    backup(tree, leaf, 1.0)
    got = {n.text or "root": (n.visits, n.value_sum) for n in tree.nodes}
    assert got == {"root": (12, 6.25), "A": (4, 3.0), "B": (7, 3.25), "C": (1, 0.0), "ans": (2, 1.25)}


STEP_A = "<think> The chair is at (10, 10). </think>"
STEP_B = "<think> The lamp is at (20, 20). </think>"
LEFT, RIGHT = "<answer> left </answer>", "<answer> right </answer>"
# call number -> the texts of that request's choices
SCRIPT = {0: [STEP_A, LEFT], 1: [RIGHT], 2: [STEP_B], 3: [LEFT], 4: [RIGHT]}


def test_exact_visit_and_value_trace_of_three_simulations():
    """children=2, rollouts=1, max_depth=3, UCT, one simulation at a time. By hand:

    sim 1: expand root (call 0, n=2) -> 1 A (think), 2 LEFT (=1); LEFT backed up (1);
           rollout from A (call 1, n=1) -> 3 RIGHT under A (=0) backed up (0)
    sim 2: root's open children: A only (LEFT is closed) -> A has 1 of 2 children: expand it with
           n = 2 − 1 = 1 (call 2) -> 4 B; rollout from B, forced at depth 3 (call 3) -> 5 LEFT (=1)
    sim 3: root -> A -> B (RIGHT under A is closed) -> expand B with n = 1, forced (call 4) -> 6 RIGHT (=0);
           B, A and the root close (MCTS-Solver), exact value 1
    """
    teacher = ScriptedTeacher(lambda state, i, k: SCRIPT[k][i])
    ctx = make_ctx()
    tree = Tree(sample_id="s1", task="sat2", frame=FRAME)
    cfg = SearchConfig(selection="uct", exploration=1.0, children=2, rollouts=1, max_depth=3, parallel_simulations=1,
                       simulations=3, min_point_distance=0.0, max_children=0, widen_alpha=0.0)  # no widening
    search = TreeSearch(tree, PromptState(ctx), teacher, cfg, lambda a: ctx.task.verify(a, ctx.truth))

    async def go():
        trace = []
        for _ in range(3):
            await search.simulate()
            trace.append([(n.visits, n.value_sum) for n in tree.nodes])
        return trace

    trace = asyncio.run(go())
    #            root      1 A       2 LEFT    3 RIGHT   4 B       5 LEFT    6 RIGHT
    assert trace == [
        [(2, 1.0), (1, 0.0), (1, 1.0), (1, 0.0)],
        [(3, 2.0), (2, 1.0), (1, 1.0), (1, 0.0), (1, 1.0), (1, 1.0)],
        [(4, 2.0), (3, 1.0), (1, 1.0), (1, 0.0), (2, 1.0), (1, 1.0), (1, 0.0)],
    ]
    assert [n.text for n in tree.nodes] == ["", STEP_A, LEFT, RIGHT, STEP_B, LEFT, RIGHT]
    assert [n.parent for n in tree.nodes] == [None, 0, 0, 1, 1, 4, 4]
    assert [n.source for n in tree.nodes[1:]] == ["expand", "expand", "rollout", "expand", "rollout", "expand"]
    # (turns so far, n, forced) per request: n is children − existing children every time
    assert teacher.calls == [(0, 2, False), (1, 1, False), (1, 1, False), (2, 1, True), (2, 1, True)]
    assert tree.root.closed and tree.root.exact == 1.0
    assert search.counters.calls == 5 and search.counters.simulations == 3 and search.counters.rollouts == 2


# --------------------------------------------------------------------------------------------
# Sibling merging
# --------------------------------------------------------------------------------------------


def test_identical_and_near_duplicate_siblings_merge_and_are_counted():
    """FRAME is 280×224 (diagonal 358.6 px); min_point_distance 0.05 -> 17.9 px. Of four choices, X twice
    (identical: merged), Y at (15, 12), 5.4 px from X (near: merged), Z at (100, 100), 127 px away (kept)."""
    x = "<think> The cup is at (10, 10). </think>"
    y = "<think> The cup is at (15, 12). </think>"
    z = "<think> The door is at (100, 100). </think>"
    teacher = ScriptedTeacher(lambda state, i, k: [x, x, y, z][i])
    ctx = make_ctx()
    tree = Tree(sample_id="s1", task="sat2", frame=FRAME)
    cfg = SearchConfig(selection="uct", children=4, rollouts=0, simulations=1, parallel_simulations=1,
                       min_point_distance=0.05)
    search = TreeSearch(tree, PromptState(ctx), teacher, cfg, lambda a: ctx.task.verify(a, ctx.truth))
    asyncio.run(search.run())
    assert teacher.calls == [(0, 4, False)]
    assert [tree.nodes[c].text for c in tree.root.children] == [x, z]
    assert tree.stats["merged"] == 1 and tree.stats["merged_near"] == 1
    assert tree.rejected == [] and tree.stats["choices"] == 4

    # with the radius at 0 only the identical pair merges
    teacher = ScriptedTeacher(lambda state, i, k: [x, x, y, z][i])
    tree = Tree(sample_id="s1", task="sat2", frame=FRAME)
    search = TreeSearch(tree, PromptState(ctx), teacher, SearchConfig(selection="uct", children=4, rollouts=0,
                        simulations=1, parallel_simulations=1, min_point_distance=0.0), lambda a: ctx.task.verify(a, ctx.truth))
    asyncio.run(search.run())
    assert [tree.nodes[c].text for c in tree.root.children] == [x, y, z]
    assert tree.stats["merged"] == 1 and tree.stats["merged_near"] == 0
