"""Eval scoring against hand-computed values: intervals, circular evaluation, per-group and macro means."""

from __future__ import annotations

import pytest

from mcts_engine.evaluation.scoring import (
    EvalSpec,
    estimate,
    format_counts,
    group_value,
    item_accuracy,
    macro_estimate,
    render_markdown,
    summarize,
    wilson,
)


def rec(sid, groups, *variants, scores=None):
    """A record whose variants list per-sample correctness (True/False)."""
    vs = []
    for r, outs in enumerate(variants):
        vs.append({"rotation": r, "outputs": [
            {"correct": c, "score": (scores[r][j] if scores else float(c)), "answer": "x", "well_formed": True, "points": 1}
            for j, c in enumerate(outs)]})
    return {"sample_id": sid, "groups": groups, "variants": vs}


# --------------------------------------------------------------------------------------------
# Intervals (values computed by hand from the formulas in mcts_engine/evaluation/scoring.py)
# --------------------------------------------------------------------------------------------


def test_wilson_by_hand():
    # 7/10: center (0.7 + z²/20)/(1 + z²/10) = 0.644497; half 0.247715 (z = 1.959964)
    lo, hi = wilson(7, 10)
    assert lo == pytest.approx(0.396780, abs=1e-5) and hi == pytest.approx(0.892209, abs=1e-5)
    lo, hi = wilson(0, 8)
    assert lo == 0.0 and hi == pytest.approx(0.324408, abs=1e-5)  # z²/(n+z²) = 3.841459/11.841459
    lo, hi = wilson(8, 8)
    assert hi == 1.0 and lo == pytest.approx(0.675592, abs=1e-5)


@pytest.mark.parametrize(
    "successes, n, low, high",
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion: comparison of seven
    # methods", Statistics in Medicine 17:857-872, worked examples, method 3 (score interval, no continuity
    # correction), printed to 4 decimals.
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_matches_published_values(successes, n, low, high):
    lo, hi = wilson(successes, n)
    assert round(lo, 4) == low and round(hi, 4) == high


def test_estimate_binary_uses_wilson_and_fractions_use_normal():
    e = estimate([1, 1, 1, 1, 1, 1, 1, 0, 0, 0])
    assert (e.n, e.mean, e.method) == (10, 0.7, "wilson") and e.low == pytest.approx(0.396780, abs=1e-5)
    # [1, .5, 0, .5]: mean .5, s² = 1/6, se = sqrt(1/24) = 0.204124, half = 0.400076
    e = estimate([1.0, 0.5, 0.0, 0.5])
    assert e.method == "normal" and e.mean == 0.5
    assert e.low == pytest.approx(0.099924, abs=1e-5) and e.high == pytest.approx(0.900076, abs=1e-5)
    assert estimate([]).n == 0


def test_macro_estimate_by_hand():
    # A=[1,1,0,0] (s²=1/3, n=4), B=[1,1] (s²=0), C=[0] (one item: s²=0.25)
    # mean (0.5+1+0)/3 = 0.5; Var = (1/12 + 0 + 0.25)/9 = 0.037037; half = 1.959964*0.192450 = 0.377193
    e = macro_estimate({"A": [1, 1, 0, 0], "B": [1, 1], "C": [0]})
    assert e.mean == pytest.approx(0.5) and e.n == 7 and e.method == "macro-normal"
    assert e.low == pytest.approx(0.122807, abs=1e-5) and e.high == pytest.approx(0.877193, abs=1e-5)


# --------------------------------------------------------------------------------------------
# Item scores
# --------------------------------------------------------------------------------------------


def test_circular_item_score_by_hand():
    # 3 rotations, K = 2: sample 0 right everywhere, sample 1 wrong under rotation 1.
    r = rec("a", {}, [True, True], [True, False], [True, True])
    assert item_accuracy(r, circular=True) == 0.5
    assert item_accuracy(r, circular=False) == 1.0  # the given order only
    assert item_accuracy(rec("b", {}, [False, True], [True, True]), circular=True) == 0.5
    assert item_accuracy(rec("c", {}, [False]), circular=True) == 0.0
    assert item_accuracy({"variants": []}) == 0.0


def test_group_value_crosses_keys():
    r = {"groups": {"platform": "mobile", "ui_type": "icon"}}
    assert group_value(r, "platform") == "mobile" and group_value(r, "platform+ui_type") == "mobile/icon"
    assert group_value(r, "group") is None and group_value(r, "group+ui_type") is None


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------


def test_blink_style_macro_headline_and_groups():
    recs = [rec("1", {"sub_task": "Counting"}, [True]), rec("2", {"sub_task": "Counting"}, [False]),
            rec("3", {"sub_task": "Counting"}, [False]), rec("4", {"sub_task": "Jigsaw"}, [True])]
    s = summarize(recs, EvalSpec(groups=("sub_task",), headline="macro:sub_task"), task="blink")
    assert s.headline == "mean over sub_task"
    assert s.overall.mean == pytest.approx((1 / 3 + 1) / 2)  # 0.6667, not the micro 0.5
    assert s.micro.mean == 0.5
    rows = dict(s.groups["sub_task"])
    assert rows["Counting"].mean == pytest.approx(1 / 3) and rows["Counting"].n == 3 and rows["Jigsaw"].mean == 1.0


def test_screenspot_style_groups_skip_missing_keys():
    recs = [rec("1", {"platform": "mobile", "ui_type": "text"}, [True]),
            rec("2", {"platform": "mobile", "ui_type": "icon"}, [False]),
            rec("3", {"platform": "web", "ui_type": "icon"}, [True]),
            rec("4", {"platform": "web", "ui_type": "icon"}, [True])]
    spec = EvalSpec(groups=("platform+ui_type", "platform", "ui_type", "group"))
    s = summarize(recs, spec)
    assert set(s.groups) == {"platform+ui_type", "platform", "ui_type"}
    assert dict(s.groups["platform+ui_type"])["web/icon"].mean == 1.0
    assert dict(s.groups["ui_type"])["icon"].mean == pytest.approx(2 / 3)
    assert s.overall.mean == 0.75 and s.headline == "micro"


def test_sat_style_circular_summary_and_vanilla():
    recs = [rec("1", {"question_type": "a"}, [True], [True]),  # right under both orders
            rec("2", {"question_type": "a"}, [True], [False]),  # right only in the given order
            rec("3", {"question_type": "b"}, [False], [True])]
    s = summarize(recs, EvalSpec(groups=("question_type",), circular=True))
    assert s.circular and s.overall.mean == pytest.approx(1 / 3) and s.vanilla.mean == pytest.approx(2 / 3)
    assert dict(s.groups["question_type"])["a"].mean == 0.5
    s2 = summarize(recs, EvalSpec(circular=True), circular=False)
    assert not s2.circular and s2.overall.mean == pytest.approx(2 / 3) and s2.vanilla is None


def test_k_samples_partial_credit_and_pass_at_k():
    recs = [rec("1", {}, [True, False, False, False], scores=[[1.0, 0.5, 0.5, 0.0]]),
            rec("2", {}, [False, False, False, False], scores=[[0.5, 0.5, 0.0, 0.0]])]
    s = summarize(recs, EvalSpec(partial_credit=True))
    assert s.samples_per_item == 4
    assert s.overall.mean == pytest.approx(0.125) and s.overall.method == "normal"  # items 0.25 and 0
    assert s.mean_score.mean == pytest.approx((0.5 + 0.25) / 2)
    assert s.pass_at_k.mean == 0.5


def test_format_counts_and_markdown():
    outs = [
        {"correct": True, "score": 1.0, "answer": "(3, 4)", "well_formed": True, "points": 2, "points_out_of_frame": 0,
         "answer_out_of_frame": False},
        {"correct": False, "score": 0.0, "answer": None, "well_formed": False, "points": 0, "points_out_of_frame": 0,
         "finish_reason": "length"},
        {"correct": False, "score": 0.0, "answer": "(900, 4)", "well_formed": True, "points": 1, "points_out_of_frame": 1,
         "answer_out_of_frame": True},
        {"correct": False, "score": 0.0, "answer": "x", "well_formed": True, "points": 0, "points_out_of_frame": 0},
    ]
    recs = [{"sample_id": "1", "groups": {}, "variants": [{"rotation": 0, "outputs": outs}]}]
    c = format_counts(recs)
    assert c == {"outputs": 4, "grammar_broken": 1, "no_answer": 1, "no_point": 1, "point_out_of_frame": 1,
                 "answer_point_out_of_frame": 1, "truncated": 1}
    s = summarize(recs, EvalSpec(groups=("sub_task",), headline="macro:sub_task"), task="t", format_check=True)
    assert s.headline == "micro"  # no record has the macro key: falls back to items
    md = render_markdown(s)
    assert "| **overall**" in md and "grammar broken 1" in md and "25.0" in md
    d = s.to_dict()
    # One item whose K = 4 samples are 1 of 4 right: item score 0.25, not 0/1, so the normal interval; with a
    # single item the sample deviation is taken as 0 (n < 2), so the interval is the point itself.
    assert d["format_check"]["outputs"] == 4
    assert d["overall"] == {"n": 1, "mean": 0.25, "ci95": [0.25, 0.25], "method": "normal"}


def test_summary_dict_carries_the_wilson_interval_of_the_items():
    recs = [rec(str(i), {}, [i < 7]) for i in range(10)]  # 7 of 10 items right
    d = summarize(recs, EvalSpec()).to_dict()
    assert d["overall"]["n"] == 10 and d["overall"]["mean"] == 0.7 and d["overall"]["method"] == "wilson"
    assert d["overall"]["ci95"] == pytest.approx([0.396780, 0.892209], abs=1e-5)  # test_wilson_by_hand's 7/10
