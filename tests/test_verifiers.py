"""Verifiers (mcts_engine.verifiers): strict multiple choice (text or letter, never a substring), points,
numbers and web actions, against hand-written known answers."""

from __future__ import annotations

import pytest

from mcts_engine.verifiers import (
    Verdict,
    match_choice,
    match_numeric,
    match_text,
    match_web_action,
    normalize_text,
    parse_number,
    parse_point_answer,
    parse_web_action,
    point_distance,
    point_in_box,
    point_near,
    resolve_choice,
)

LR = ["left", "right"]
GOAL = ["turn left", "go straight ahead", "turn right"]

# --------------------------------------------------------------------------------------------
# Multiple choice
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pred",
    ["right", "Right", "RIGHT", "right.", " Right! ", "B", "b", "(B)", "( b )", "B.", "B:", "B)", "B) right",
     "(B) Right", "B. right", "B: RIGHT.", "B right"],
)
def test_choice_accepts_text_or_letter(pred: str) -> None:
    v = match_choice(pred, "right", LR)
    assert v.correct, (pred, v)
    assert v.score == 1.0


@pytest.mark.parametrize(
    "pred",
    ["left", "A", "(A)", "A. left", "B) left", "A) right", "C", "(C)", "right side", "the right", "option B",
     "I think right", "rightward", "Bright", "Bleft", "(B)x", ""],
)
def test_choice_rejects_other_or_unnamed_options(pred: str) -> None:
    v = match_choice(pred, "right", LR)
    assert not v.correct, (pred, v)
    assert v.score == 0.0


def test_choice_multi_word_options_with_punctuation() -> None:
    assert match_choice("Go straight-ahead.", "go straight ahead", GOAL).correct
    assert match_choice("(c) Turn Right", "turn right", GOAL).correct
    assert not match_choice("turn", "turn right", GOAL).correct
    assert not match_choice("straight", "go straight ahead", GOAL).correct


def test_no_substring_false_positive_numbers() -> None:
    opts = ["1", "10", "100"]
    assert not match_choice("1", "10", opts).correct
    assert not match_choice("10", "1", opts).correct
    assert not match_choice("100", "10", opts).correct
    assert match_choice("10", "10", opts).correct
    assert match_choice("B", "10", opts).correct
    # "1" is not among the options at all: it names nothing, whatever it is a substring of.
    v = match_choice("1", "10", ["10", "2"])
    assert not v.correct and v.reason == "prediction names no option"


def test_no_substring_false_positive_left_and_right() -> None:
    both = ["left", "left and right", "right"]
    assert not match_choice("left", "left and right", both).correct
    assert not match_choice("left and right", "left", both).correct
    assert match_choice("Left and Right", "left and right", both).correct
    # When only the longer option exists, its prefix still names nothing.
    only_long = ["left and right", "neither"]
    v = match_choice("left", "left and right", only_long)
    assert not v.correct and v.reason == "prediction names no option"
    # And the longer text does not match the shorter option it contains.
    assert not match_choice("left and right", "left", ["left", "right"]).correct


def test_answer_given_as_letter_in_the_data() -> None:
    assert match_choice("right", "B", LR).correct
    assert match_choice("right", "(B)", LR).correct
    assert match_choice("B", "b", LR).correct
    assert not match_choice("left", "B", LR).correct


def test_ground_truth_not_among_options() -> None:
    v = match_choice("up", "up", LR)
    assert not v.correct
    assert "not one of the options" in v.reason and "'up'" in v.reason
    v2 = match_choice("C", "C", LR)  # a letter past the last option
    assert not v2.correct and "not one of the options" in v2.reason


def test_wrong_choice_reason_names_the_letter() -> None:
    v = match_choice("turn left", "turn right", GOAL)
    assert not v.correct and v.reason == "chose option A"


@pytest.mark.parametrize("pred", [None, "", "   "])
def test_missing_prediction(pred: str | None) -> None:
    v = match_choice(pred, "left", LR)
    assert not v.correct and v.reason == "no answer"


def test_option_text_wins_over_letter_when_an_option_is_a_letter() -> None:
    # Options that are themselves letters resolve by text first.
    assert resolve_choice("A", ["b", "A"]) == 1
    assert resolve_choice("b", ["b", "A"]) == 0


def test_resolve_choice_index() -> None:
    assert resolve_choice("(C) turn right", GOAL) == 2
    assert resolve_choice("nothing", GOAL) is None
    assert resolve_choice("", GOAL) is None


def test_free_form_without_choices_is_exact_normalized_text() -> None:
    assert match_choice("The Chair.", "the chair", []).correct
    assert not match_choice("the red chair", "chair", []).correct
    assert not match_text(None, "x").correct
    assert match_text("  LEFT!! ", "left").correct


def test_normalize_text() -> None:
    assert normalize_text("  The   Left.\n") == "the left"
    assert normalize_text("(B)") == "b"


def test_verdict_to_dict() -> None:
    assert Verdict(1.0, "match").to_dict() == {"score": 1.0, "correct": True, "reason": "match"}
    assert Verdict(0.5).correct is False


# --------------------------------------------------------------------------------------------
# Points
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("point", [(10, 10), (20, 20), (10, 20), (20, 10), (15, 10), (15.5, 19.999)])
def test_point_in_box_inclusive_edges(point: tuple[float, float]) -> None:
    assert point_in_box(point, (10, 10, 20, 20)).correct


@pytest.mark.parametrize("point", [(9, 15), (21, 15), (15, 9), (15, 21), (9.999, 10), (-15, -15)])
def test_point_outside_box(point: tuple[float, float]) -> None:
    v = point_in_box(point, (10, 10, 20, 20))
    assert not v.correct and v.reason == "point outside box"


@pytest.mark.parametrize("box", [(20, 20, 10, 10), (20, 10, 10, 20), (10, 20, 20, 10)])
def test_point_in_reversed_box(box: tuple[float, float, float, float]) -> None:
    assert point_in_box((15, 15), box).correct
    assert point_in_box((10, 20), box).correct
    assert not point_in_box((21, 15), box).correct


def test_point_in_box_no_point() -> None:
    v = point_in_box(None, (0, 0, 1, 1))
    assert not v.correct and v.reason == "no point"


def test_point_in_degenerate_box() -> None:
    assert point_in_box((5, 5), (5, 5, 5, 5)).correct
    assert not point_in_box((5, 6), (5, 5, 5, 5)).correct


def test_point_near() -> None:
    assert point_distance((0, 0), (3, 4)) == 5.0
    assert point_near((3, 4), (0, 0), 5).correct  # on the circle counts
    v = point_near((3, 4), (0, 0), 4.99)
    assert not v.correct and "5.0px" in v.reason
    assert not point_near(None, (0, 0), 100).correct


def test_parse_point_answer() -> None:
    assert parse_point_answer("(120, 45)") == (120.0, 45.0)
    assert parse_point_answer("click at 12.5,7") == (12.5, 7.0)
    assert parse_point_answer("nowhere") is None
    assert parse_point_answer(None) is None


# --------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [("1,024", 1024.0), ("3.5 m", 3.5), ("-2", -2.0), ("about 12,345.6 meters", 12345.6), (".5", 0.5), ("1e3", 1000.0),
     ("There are 7 chairs.", 7.0)],
)
def test_parse_number(text: str, value: float) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["two or 3 or 4", "1 and 2", "3-4", "none", "", "between 2 and 3 m"])
def test_parse_number_none_or_several(text: str) -> None:
    assert parse_number(text) is None


def test_match_numeric() -> None:
    assert match_numeric("1,024", "1024").correct
    assert match_numeric("3.5 m", 3.5).correct
    assert match_numeric("3", 3).correct
    assert not match_numeric("3.6", 3.5).correct
    assert match_numeric("3.6", 3.5, rel_tol=0.05).correct
    v = match_numeric("2 or 3", "3")
    assert not v.correct and "single number" in v.reason
    v = match_numeric("3", "three")
    assert not v.correct and "not a number" in v.reason
    assert not match_numeric(None, "3").correct
    assert not match_numeric("10", "1").correct


# --------------------------------------------------------------------------------------------
# Web actions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, kind, element, arg",
    [
        ("click [12]", "click", "12", None),
        ("  CLICK [ 012 ] ", "click", "12", None),
        ("```\nclick [7]\n```", "click", "7", None),
        ("`hover [3]`.", "hover", "3", None),
        ("type [7] [new york city] [1]", "type", "7", "new york city"),
        ("type [7] [a [b] c]", "type", "7", "a [b] c"),
        ("type [7] [  spaced   out  ]", "type", "7", "spaced   out"),
        ("scroll [down]", "scroll", None, "down"),
        ("scroll [direction=up]", "scroll", None, "up"),
        ("go_back", "go_back", None, None),
        ("stop [$25.99]", "stop", None, "$25.99"),
        ("stop [N/A]", "stop", None, "N/A"),
    ],
)
def test_parse_web_action(text, kind, element, arg):
    a = parse_web_action(text)
    assert a is not None and (a.kind, a.element, a.text) == (kind, element, arg)


@pytest.mark.parametrize("text", ["", "click", "click [x]", "click [12] please", "I will click [12]", "scroll [left]",
                                  "go_back [3]", "type [4] hello", "jump [3]", None])
def test_parse_web_action_rejects(text):
    assert parse_web_action(text) is None


def test_web_action_partial_credit():
    gold = "type [7] [new york city] [1]"
    assert match_web_action("type [7] [New York  City]", gold).correct  # case, spacing, enter flag ignored
    assert match_web_action("type [7] [new york, city!]", gold).correct  # punctuation normalized
    v = match_web_action("type [8] [new york city]", gold)
    assert v.score == pytest.approx(2 / 3) and not v.correct and "element" in v.reason
    v = match_web_action("type [7] [new york]", gold)  # a prefix is NOT a match (no substring credit)
    assert v.score == pytest.approx(2 / 3) and "typed text" in v.reason
    assert match_web_action("type [9] [boston]", gold).score == pytest.approx(1 / 3)
    assert match_web_action("click [7]", gold).score == 0.0
    assert match_web_action("click [12]", "click [12]").correct
    assert match_web_action("click [1]", "click [12]").score == 0.5  # "1" is not "12"
    assert match_web_action("click [12]", "click [1]").score == 0.5
    assert match_web_action("scroll [up]", "scroll [down]").score == 0.5
    assert match_web_action("go_back", "go_back").correct
    assert match_web_action("stop [25.99]", "stop [$25.99]").correct
    assert match_web_action("stop [2]", "stop [20]").score == 0.5
    assert match_web_action(None, "go_back").score == 0.0
    assert match_web_action("the answer is go_back", "go_back").score == 0.0
    assert "not a web action" in match_web_action("go_back", "fly [1]").reason


@pytest.mark.parametrize(
    "pred, gold, score, reason",
    [
        # every action family, right and wrong, with the exact partial credit and reason
        ("hover [3]", "hover [3]", 1.0, "match"),
        ("hover [3]", "hover [4]", 0.5, "element 3 != 4"),
        ("click [1]", "click [12]", 0.5, "element 1 != 12"),
        ("type [3] [x]", "type [3] [y]", 2 / 3, "typed text differs"),
        ("type [4] [y]", "type [3] [y]", 2 / 3, "element differs"),
        ("type [3] [x]", "type [4] [y]", 1 / 3, "element and typed text differ"),
        ("type [3] [Y] [0]", "type [3] [y] [1]", 1.0, "match"),  # the enter flag is recorded, never scored
        ("press [Enter]", "press [enter]", 1.0, "match"),
        ("press [Tab]", "press [enter]", 0.5, "press argument differs"),
        ("goto [http://a.com/b]", "goto [http://a.com/b]", 1.0, "match"),
        ("goto [http://a.com]", "goto [http://b.com]", 0.5, "goto argument differs"),
        ("tab_focus [2]", "tab_focus [2]", 1.0, "match"),
        ("tab_focus [1]", "tab_focus [2]", 0.5, "tab_focus argument differs"),
        ("scroll [down]", "scroll [direction=down]", 1.0, "match"),
        ("stop []", "stop [N/A]", 0.5, "stop argument differs"),
        ("new_tab", "new_tab", 1.0, "match"),
        ("go_forward", "go_forward", 1.0, "match"),
        ("close_tab", "new_tab", 0.0, "action close_tab != new_tab"),
        ("click [2]", "type [2] [a]", 0.0, "action click != type"),
        ("stop", "stop [x]", 0.0, "prediction is not a web action"),
        ("click me", "click [1]", 0.0, "prediction is not a web action"),
        ("  ", "click [1]", 0.0, "no answer"),
        ("click [1]", "click here", 0.0, "ground truth 'click here' is not a web action"),
    ],
)
def test_web_action_known_scores(pred: str, gold: str, score: float, reason: str) -> None:
    v = match_web_action(pred, gold)
    assert v.score == pytest.approx(score, abs=1e-12) and v.reason == reason
    assert v.correct == (score == 1.0)


@pytest.mark.parametrize(
    "text, kind, element, arg, enter, canonical",
    [
        ("type [7] [hello] [0]", "type", "7", "hello", False, "type [7] [hello]"),
        ("type [7] [hello]", "type", "7", "hello", None, "type [7] [hello]"),
        ("new_tab []", "new_tab", None, None, None, "new_tab"),
        ("press [ctrl+a]", "press", None, "ctrl+a", None, "press [ctrl+a]"),
        ("tab_focus [0]", "tab_focus", None, "0", None, "tab_focus [0]"),
        ("goto [https://x.org/?q=[1]]", "goto", None, "https://x.org/?q=[1]", None, "goto [https://x.org/?q=[1]]"),
        ("CLICK [003].", "click", "3", None, None, "click [3]"),
    ],
)
def test_parse_web_action_fields_and_canonical_form(text, kind, element, arg, enter, canonical) -> None:
    a = parse_web_action(text)
    assert a is not None and (a.kind, a.element, a.text, a.enter) == (kind, element, arg, enter)
    assert a.format() == canonical and parse_web_action(canonical).format() == canonical


# --------------------------------------------------------------------------------------------
# More known answers: numbers at the edges, tolerances, point answers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [("+5", 5.0), ("-0.5e-1", -0.05), ("5.", 5.0), ("$1,024.50", 1024.5), ("12,345,678", 12345678.0), ("50%", 50.0)],
)
def test_parse_number_edges(text: str, value: float) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["1,2", "1,0000", "1.2.3", "3/4", "0x10"])  # read as two numbers: refused
def test_parse_number_refuses_what_reads_as_several(text: str) -> None:
    assert parse_number(text) is None


def test_match_numeric_tolerances_by_hand() -> None:
    assert match_numeric("0.3", 0.1 + 0.2).correct  # float noise is inside abs_tol = 1e-9
    assert match_numeric("1e-10", "0").correct and not match_numeric("1e-8", "0").correct
    # rel_tol is relative to the larger magnitude (math.isclose): |3.68 - 3.5| = 0.18 <= 0.05 * 3.68 = 0.184
    assert match_numeric("3.68", "3.5", rel_tol=0.05).correct
    v = match_numeric("3.7", "3.5", rel_tol=0.05)  # 0.2 > 0.185
    assert not v.correct and v.reason == "3.7 != 3.5"
    assert match_numeric("-2", "-2.0").correct and not match_numeric("2", "-2").correct


@pytest.mark.parametrize(
    "text, point",
    [("(-3, 4.5)", (-3.0, 4.5)), ("(3 , 4)", (3.0, 4.0)), ("(3,4) and (5,6)", (3.0, 4.0)), ("x=3, y=4", None),
     ("3,4,5", (3.0, 4.0)), ("", None)],
)
def test_parse_point_answer_known(text: str, point: tuple[float, float] | None) -> None:
    assert parse_point_answer(text) == point  # the first point wins; a lone pair needs no parentheses


def test_point_near_radius_zero_and_reason() -> None:
    assert point_near((7, 7), (7, 7), 0).correct
    v = point_near((0, 0), (6, 8), 9.99)
    assert not v.correct and v.reason == "10.0px from target"


def test_option_letters_and_letter_past_26_options() -> None:
    from mcts_engine.verifiers import option_letter

    assert [option_letter(i) for i in (0, 1, 25)] == ["A", "B", "Z"]
    many = [f"opt{i}" for i in range(26)]
    assert resolve_choice("Z", many) == 25 and resolve_choice("(z) opt25", many) == 25
    assert resolve_choice("Z", many[:3]) is None
