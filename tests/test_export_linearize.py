"""Linearization on hand-built trees: strategies, edge cases, DPO pairs, PRM labels, rescaling."""

from __future__ import annotations

import pytest

from mcts_engine.export.config import ExportConfig
from mcts_engine.export.items import rescale_text
from mcts_engine.export.linearize import Linearizer
from mcts_engine.frame import Frame
from mcts_engine.grounding import check_chain, format_chain
from mcts_engine.search.tree import Tree
from mcts_engine.testing.synthetic_runs import TRUTH, answer, frame, rich_tree, sample_record, think

BT = "Wait, let me look again."


def verify_left(ans: str | None) -> bool:
    return (ans or "").strip().lower() == "left"


def lin(tree: Tree, **cfg) -> Linearizer:
    return Linearizer(tree, ExportConfig(**cfg), verify_left, BT)


def bare_tree() -> Tree:
    t = Tree(sample_id="x", task="sat2", frame=frame(), truth=dict(TRUTH), sample=sample_record("x", "i.png"))
    t.root.visits, t.root.expanded = 1, True
    return t


def test_best_chain_is_highest_value_correct_path() -> None:
    t = rich_tree()
    c = lin(t).best_chain()
    assert c is not None and c.strategy == "best"
    assert c.points == ((50, 40), (120, 80))
    assert c.answer == "left"
    assert c.text == format_chain(["I look at region 50-40 (50, 40).", "I look at region 120-80 (120, 80)."], "left")
    chk = check_chain(c.text)
    assert chk.well_formed and chk.answer == "left" and chk.points == c.points
    assert c.text.startswith("<think>\n") and c.text.endswith("</think>\n<answer> left </answer>")


def test_all_correct_ranked_deduplicated_and_capped() -> None:
    t = rich_tree()
    chains = lin(t, max_correct_per_sample=5).all_correct_chains()
    assert [c.points for c in chains] == [((50, 40), (120, 80)), ((30, 170),)]
    assert [c.strategy for c in chains] == ["all_correct", "all_correct"]
    assert len(lin(t, max_correct_per_sample=1).all_correct_chains()) == 1
    # a second, textually identical correct path is emitted once
    a = t.nodes[1]
    b2 = think(t, a, 120, 80, visits=1, value=1.0)
    answer(t, b2, "left", True)
    li = lin(t, max_correct_per_sample=5, allow_repeated_points=True)
    assert len(li.all_correct_chains()) == 2
    assert li.skips.counts.get("duplicate correct chain") == 1


def test_combined_strategies_never_repeat_a_text() -> None:
    t = rich_tree()
    chains = lin(t, max_correct_per_sample=5, max_backtrack_per_sample=1, strategies="best,all_correct,backtrack").sft_chains()
    texts = [c.text for c in chains]
    assert len(texts) == len(set(texts))
    assert [c.strategy for c in chains] == ["best", "all_correct", "backtrack"]


def test_ties_prefer_fewer_steps_then_earlier_leaf() -> None:
    t = bare_tree()
    r = t.root
    long1 = think(t, r, 10, 10, value=1.0)
    long2 = think(t, long1, 20, 20, value=1.0)
    answer(t, long2, "left", True)
    short = think(t, r, 30, 30, value=1.0)
    answer(t, short, "left", True)
    other = think(t, r, 40, 40, value=1.0)
    answer(t, other, "left", True)
    best = lin(t).best_chain()
    assert best is not None and best.points == ((30, 30),)  # equal value: fewer steps, then lower id


def test_no_correct_leaf_gives_no_positive() -> None:
    t = bare_tree()
    a = think(t, t.root, 10, 10)
    answer(t, a, "right", False)
    li = lin(t, strategies="best,all_correct,backtrack")
    assert li.best_chain() is None
    assert li.sft_chains() == []
    assert li.dpo_pairs() == []
    assert not li.difficulty().solved
    assert li.prm_rows()  # still labelled for a PRM
    assert li.prm_rows()[0].labels[-1] is False


def test_unverified_leaf_is_neither_positive_nor_negative() -> None:
    t = bare_tree()
    a = think(t, t.root, 10, 10)
    answer(t, a, "left", None)
    li = Linearizer(t, ExportConfig(), None, BT)  # no re-verification: trust stored flags
    assert li.best_chain() is None and li.wrong_paths() == []
    assert li.difficulty().verified == 0


def test_reverification_overrides_a_stale_flag() -> None:
    t = bare_tree()
    a = think(t, t.root, 10, 10)
    answer(t, a, "right", True)  # stored as correct, but the verifier says wrong
    li = lin(t)
    assert li.best_chain() is None and li.verdict_changed == 1
    assert Linearizer(t, ExportConfig(reverify=False), verify_left, BT).best_chain() is not None


def test_repeated_point_invalidates_path() -> None:
    t = bare_tree()
    a = think(t, t.root, 10, 10)
    b = think(t, a, 10, 10, text="Looking again at (10, 10).")
    answer(t, b, "left", True)
    li = lin(t)
    assert li.best_chain() is None
    assert li.skips.counts == {"path invalid: repeated point": 1}
    ok = lin(t, allow_repeated_points=True).best_chain()
    assert ok is not None and ok.points == ((10, 10), (10, 10))


def test_out_of_frame_or_missing_point_invalidates_path() -> None:
    t = bare_tree()
    f = t.frame
    a = think(t, t.root, f.width, 5)  # x == width is outside
    answer(t, a, "left", True)
    b = t.add(t.root, kind="think", thought="No point here.", point=None, visits=1, value_sum=1.0)
    answer(t, b, "left", True)
    li = lin(t)
    assert li.best_chain() is None
    assert li.skips.counts == {"path invalid: point outside the frame": 1, "path invalid: step has no point": 1}


def test_depth_one_answer_needs_min_steps_zero() -> None:
    t = bare_tree()
    answer(t, t.root, "left", True)
    assert lin(t).best_chain() is None
    c = lin(t, min_steps=0).best_chain()
    assert c is not None and c.points == () and c.text == "<think>\n\n</think>\n<answer> left </answer>"


def test_answer_node_thought_becomes_a_step_only_when_grounded() -> None:
    t = bare_tree()
    a = think(t, t.root, 10, 10)
    answer(t, a, "left", True)
    t.nodes[-1].thought, t.nodes[-1].point = "The cup is at the left (15, 12).", (15, 12)
    c = lin(t).best_chain()
    assert c is not None and c.points == ((10, 10), (15, 12))
    t.nodes[-1].point = (9999, 12)  # ungrounded: the thought is left out, the answer stays
    t2 = Tree.from_dict(t.to_dict())
    c2 = lin(t2).best_chain()
    assert c2 is not None and c2.points == ((10, 10),)


def test_point_text_is_added_when_thought_lacks_it() -> None:
    t = bare_tree()
    a = think(t, t.root, 10, 12, text="The cup handle")
    answer(t, a, "left", True)
    c = lin(t).best_chain()
    assert c is not None and c.thoughts == ("The cup handle (10, 12)",)
    assert check_chain(c.text).points == ((10, 12),)


def test_backtrack_chain_shares_prefix_once() -> None:
    t = rich_tree()
    chains = lin(t, max_backtrack_per_sample=1).backtrack_chains()
    assert len(chains) == 1
    c = chains[0]
    # wrong path A→C (shares A with the best path A→B): A, C, sentence, B
    assert c.points == ((50, 40), (200, 150), (120, 80))
    assert c.thoughts[2] == BT and c.answer == "left" and c.wrong_leaf is not None
    assert c.text.count("<think>") == 1 and BT in c.text
    assert check_chain(c.text).well_formed
    two = lin(t, max_backtrack_per_sample=2).backtrack_chains()
    assert len(two) == 2
    assert two[1].points == ((250, 30), (50, 40), (120, 80))  # D, sentence, then the whole correct path


def test_backtrack_needs_a_wrong_step_of_its_own() -> None:
    t = bare_tree()
    a = think(t, t.root, 10, 10, value=1.0, visits=2)
    answer(t, a, "left", True)
    answer(t, a, "right", False)  # wrong answer right after the shared step: nothing to backtrack from
    li = lin(t)
    assert li.backtrack_chains() == []
    assert li.skips.counts.get("wrong path has no step of its own to backtrack from") == 1


def test_dpo_pairs_from_siblings_with_margin() -> None:
    t = rich_tree()
    pairs = lin(t, dpo_margin=0.3).dpo_pairs()
    assert pairs, "expected sibling pairs"
    top = pairs[0]
    assert top.chosen_q - top.rejected_q >= 0.3
    assert top.chosen.answer == "left" and top.rejected.answer == "right"
    assert check_chain(top.chosen.text).well_formed and check_chain(top.rejected.text).well_formed
    # the B vs C pair under A shares one step
    under_a = [p for p in pairs if p.node == 1]
    assert under_a and under_a[0].prefix_steps == 1
    assert under_a[0].chosen.points[0] == under_a[0].rejected.points[0] == (50, 40)
    assert lin(t, dpo_margin=1.01).dpo_pairs() == []
    assert len(lin(t, dpo_margin=0.0, max_dpo_pairs_per_sample=1).dpo_pairs()) == 1


def test_prm_rows_cover_every_valid_prefix() -> None:
    t = rich_tree()
    rows = lin(t).prm_rows()
    prefixes = {r.nodes[:k] for r in rows for k in range(1, len(r.nodes) + 1)}
    expected = {tuple(n.id for n in t.path(n)) for n in t.nodes[1:]}
    assert prefixes == expected
    for r in rows:
        assert len(r.steps) == len(r.values) == len(r.visits) == len(r.labels) == len(r.nodes)
        assert r.steps[-1].startswith("<answer>")
        assert r.labels[-1] == (r.answer == "left")
    row_b = next(r for r in rows if r.answer == "left" and len(r.nodes) == 3)
    assert row_b.values[0] == pytest.approx(0.5) and row_b.visits[0] == 2
    assert row_b.labels[0] is True  # Q 0.5 >= threshold 0.5


def test_prm_stops_at_unvisited_or_invalid_nodes() -> None:
    t = bare_tree()
    a = think(t, t.root, 10, 10, visits=1, value=1.0)
    think(t, a, 20, 20, visits=0)  # never evaluated
    bad = think(t, a, 9999, 20, visits=1)
    answer(t, bad, "left", True)
    rows = lin(t).prm_rows()
    assert [r.nodes for r in rows] == [(1,)]
    assert rows[0].answer is None and rows[0].correct is None


def test_difficulty_figures() -> None:
    d = lin(rich_tree()).difficulty()
    assert d.solved and d.answers == 4 and d.verified == 4 and d.correct == 2
    assert d.root_value == pytest.approx(0.5) and d.pass_rate == pytest.approx(0.5)
    li = lin(rich_tree(), grpo_min_value=0.6)
    assert li.keep_for_grpo()[0] is False


def test_rescale_to_original_maps_and_clamps_points() -> None:
    f = Frame(width=100, height=50, orig_width=200, orig_height=100)
    assert rescale_text("look (10, 20). then (99, 49).", f) == "look (20, 40). then (198, 98)."
    up = Frame(width=100, height=100, orig_width=40, orig_height=40)  # upscaled frame: clamp into the image
    assert rescale_text("(99, 99)", up) == "(39, 39)"
    t = rich_tree(fr=Frame(width=308, height=196, orig_width=616, orig_height=392))
    c = lin(t, rescale_to_original=True).best_chain()
    assert c is not None and c.points == ((100, 80), (240, 160))
    assert "(100, 80)" in c.text and "(50, 40)" not in c.text


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="unknown strategy"):
        ExportConfig(strategies="best,nope").strategy_list()
    assert ExportConfig(strategies="all-correct, best").strategy_list() == ["all_correct", "best"]
    with pytest.raises(ValueError, match="val_fraction"):
        ExportConfig(val_fraction=1.0).validate()


def test_every_mentioned_point_must_be_in_frame() -> None:
    t = bare_tree()
    a = think(t, t.root, 10, 10, text="Compared with (5000, 3) the cup at (10, 10).")
    answer(t, a, "left", True)
    li = lin(t)
    assert li.best_chain() is None and li.skips.counts == {"path invalid: point outside the frame": 1}


# --------------------------------------------------------------------------------------------
# Export uses what the search found: every distinct correct chain, backtracks from several branches
# --------------------------------------------------------------------------------------------


def many_correct_tree() -> Tree:
    """root ─ six distinct correct walks, one rewording of the first walk, one walk repeated with
    another answer casing; two wrong branches (X, Y)."""
    t = bare_tree()
    for i in range(6):
        s = think(t, t.root, 20 + 30 * i, 30, value=1.0)
        answer(t, s, "left", True)
    # the first walk again, reworded: same points, same answer → a duplicate
    again = think(t, t.root, 20, 30, text="Another look at the same spot (20, 30).", value=1.0)
    answer(t, again, "Left", True)
    x = think(t, t.root, 250, 150, value=0.0)
    answer(t, x, "right", False)
    y = think(t, t.root, 280, 100, value=0.0)
    answer(t, y, "right", False)
    return t


def test_default_export_gives_every_distinct_correct_chain_deduplicated_by_points_and_text() -> None:
    t = many_correct_tree()
    cfg = ExportConfig()
    assert cfg.strategy_list() == ["all_correct", "backtrack"] and cfg.max_chains_per_sample >= 4
    li = Linearizer(t, cfg, verify_left, BT)
    correct = li.all_correct_chains()
    assert len(correct) == 6  # 7 correct paths, one of them a rewording of another walk
    assert len({c.points for c in correct}) == 6
    assert li.skips.counts.get("correct chain repeats another's points and answer") == 1
    assert len(lin(t, max_chains_per_sample=4).all_correct_chains()) == 4


def test_max_correct_per_sample_is_still_accepted_as_the_cap() -> None:
    assert ExportConfig(max_correct_per_sample=3).max_chains_per_sample == 3
    assert len(lin(many_correct_tree(), max_correct_per_sample=2).all_correct_chains()) == 2
    with pytest.raises(ValueError, match="disagree"):
        ExportConfig(max_correct_per_sample=3, max_chains_per_sample=5)


def test_backtracks_come_from_different_wrong_branches_first() -> None:
    t = bare_tree()
    a = think(t, t.root, 50, 40, value=1.0, visits=3)
    b = think(t, a, 120, 80, value=1.0)
    answer(t, b, "left", True)
    # two wrong leaves under the same wrong branch W1, one under W2
    w1 = think(t, a, 200, 150, value=0.0, visits=2)
    answer(t, w1, "right", False)
    w1b = think(t, w1, 210, 20, value=0.0)
    answer(t, w1b, "right", False)
    w2 = think(t, t.root, 250, 30, value=0.5, visits=2)
    answer(t, w2, "right", False)
    chains = lin(t, max_backtrack_per_sample=2).backtrack_chains()
    good = {n.id for n in t.path(b)}
    branches = {next(n.id for n in t.path(t.nodes[c.wrong_leaf]) if n.id not in good) for c in chains}
    assert len(chains) == 2 and branches == {w1.id, w2.id}  # not two chains from W1's two leaves
