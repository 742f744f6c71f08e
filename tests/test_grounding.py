"""The step protocol: parsing teacher output, tool calls, chains, frames and Qwen's resize rule."""

from __future__ import annotations

import math

import pytest

from mcts_engine.frame import Frame, frame_for, smart_resize
from mcts_engine.grounding import (
    STEP_STOPS,
    check_chain,
    complete_response,
    extract_answer,
    find_points,
    format_answer,
    format_chain,
    format_point,
    format_step,
    parse_step,
    parse_tool_call,
)

# --------------------------------------------------------------------------------------------
# parse_step
# --------------------------------------------------------------------------------------------


def test_think_step_with_point() -> None:
    s = parse_step("<think> The red chair stands near the wall (120, 245). </think>")
    assert s.kind == "think"
    assert s.thought == "The red chair stands near the wall (120, 245)."
    assert s.points == ((120, 245),)
    assert s.point == (120, 245)
    assert s.answer is None
    assert not s.non_integer
    assert s.tool_call is None and s.tool_error is None


def test_answer_only() -> None:
    s = parse_step("<answer> left </answer>")
    assert s.kind == "answer"
    assert s.answer == "left"
    assert s.thought == ""
    assert s.point is None


def test_think_and_answer_in_one_response_is_an_answer() -> None:
    s = parse_step("<think> the box is left of the ball (30, 40). </think>\n<answer> left </answer>")
    assert s.kind == "answer"
    assert s.answer == "left"
    assert s.point == (30, 40)


@pytest.mark.parametrize(
    "text, kind",
    [
        ("<think> look at the ball (5, 6).", "think"),  # server stripped the stop string </think>
        ("<answer> right", "answer"),
        ("<think> the lamp is tall (7, 8). </think> <answer> right", "answer"),
    ],
)
def test_missing_closing_tag_is_tolerated(text: str, kind: str) -> None:
    s = parse_step(text)
    assert s.kind == kind
    if kind == "think":
        assert s.point == (5, 6)
    else:
        assert s.answer == "right"


@pytest.mark.parametrize("text", ["the chair is on the left (1, 2)", "", "   ", "<think></think>", "<answer>  </answer>"])
def test_no_usable_tags_is_invalid(text: str) -> None:
    s = parse_step(text)
    assert s.kind == "invalid"
    assert s.answer in (None, "")


def test_raw_text_is_kept() -> None:
    text = "<think> a (1, 2). </think>"
    assert parse_step(text).raw == text


def test_decimal_coordinates_are_rounded_and_flagged() -> None:
    s = parse_step("<think> the ball (10.6, 20.2). </think>")
    assert s.non_integer
    assert s.point == (11, 20)
    s2 = parse_step("<think> the ball (10, 20.5). </think>")
    assert s2.non_integer


def test_negative_coordinates_parse_and_fall_outside_any_frame() -> None:
    s = parse_step("<think> off the edge (-5, 12). </think>")
    assert s.point == (-5, 12)
    assert not s.non_integer
    assert not Frame(100, 100, 100, 100).contains(s.point)


def test_multiple_points_last_is_the_steps_point() -> None:
    s = parse_step("<think> from the chair (10, 20) to the box (30,40) and finally the lamp ( 50 , 60 ). </think>")
    assert s.points == ((10, 20), (30, 40), (50, 60))
    assert s.point == (50, 60)


def test_points_outside_the_thought_are_ignored() -> None:
    # A point in the answer is not a grounding point of the step.
    s = parse_step("<answer> (3, 4) </answer>")
    assert s.points == ()
    assert s.answer == "(3, 4)"


def test_find_points_ignores_non_points() -> None:
    pts, non_int = find_points("a (1, 2) b (x, 3) c (4) d [5, 6] e (7, 8, 9)")
    assert pts == ((1, 2),)
    assert not non_int


# --------------------------------------------------------------------------------------------
# Tool calls
# --------------------------------------------------------------------------------------------


def test_tool_call_valid() -> None:
    text = (
        '<think> zoom on the chair (10, 20). </think>\n'
        '<tool_call>{"name": "search_coordinate", "arguments": {"coordinate": [10, 20]}}</tool_call>'
    )
    s = parse_step(text)
    assert s.tool_error is None
    assert s.tool_call is not None
    assert s.tool_call.name == "search_coordinate"
    assert s.tool_call.point == (10, 20)
    assert s.tool_call.arguments == {"coordinate": [10, 20]}
    assert s.kind == "think"


def test_tool_call_without_closing_tag() -> None:
    s = parse_step('<think> zoom (1, 2). </think><tool_call>{"name": "search_coordinate", "arguments": {"coordinate": [1, 2]}}')
    assert s.tool_call is not None and s.tool_call.point == (1, 2)


def test_tool_call_malformed_json() -> None:
    s = parse_step('<think> zoom (1, 2). </think><tool_call>{"name": "search_coordinate", "arguments": {</tool_call>')
    assert s.tool_call is None
    assert s.tool_error is not None and "JSON" in s.tool_error


@pytest.mark.parametrize(
    "body",
    [
        '{"name": "search_coordinate", "arguments": {"coordinate": [1.5, 2]}}',
        '{"name": "search_coordinate", "arguments": {"coordinate": ["1", 2]}}',
        '{"name": "search_coordinate", "arguments": {"coordinate": [1, 2, 3]}}',
        '{"name": "search_coordinate", "arguments": {"coordinate": [true, 2]}}',
        '{"name": "search_coordinate", "arguments": {"coordinate": {"x": 1, "y": 2}}}',
    ],
)
def test_tool_call_non_integer_coordinate_is_an_error(body: str) -> None:
    call, err = parse_tool_call(body)
    assert call is None
    assert err is not None and "coordinate" in err


@pytest.mark.parametrize(
    "body, needle",
    [("[1, 2]", "name"), ('{"arguments": {}}', "name"), ('{"name": "x", "arguments": [1, 2]}', "arguments")],
)
def test_tool_call_bad_shape(body: str, needle: str) -> None:
    call, err = parse_tool_call(body)
    assert call is None and err is not None and needle in err


def test_tool_call_without_coordinate_has_no_point() -> None:
    call, err = parse_tool_call('{"name": "done", "arguments": {}}')
    assert err is None and call is not None and call.point is None


# --------------------------------------------------------------------------------------------
# complete_response / formatting / chains
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, stop, expected",
    [
        ("<think> a (1, 2).", "</think>", "<think> a (1, 2). </think>"),
        ("<think> a (1, 2).   ", "</think>", "<think> a (1, 2). </think>"),
        ("<think> a (1, 2). </think>", "</think>", "<think> a (1, 2). </think>"),
        ("<answer> left", None, "<answer> left </answer>"),
        ("<think> x (1, 2). </think> <answer> left", None, "<think> x (1, 2). </think> <answer> left </answer>"),
        ('<tool_call>{"name": "a"}', None, '<tool_call>{"name": "a"} </tool_call>'),
        ("<think> x (1, 2).", None, "<think> x (1, 2). </think>"),
        ("<answer> left </answer>", None, "<answer> left </answer>"),
    ],
)
def test_complete_response(text: str, stop: str | None, expected: str) -> None:
    out = complete_response(text, stop)
    assert out == expected
    # Completing is idempotent and the result parses to the same step.
    assert complete_response(out, stop) == out
    assert parse_step(out).kind == parse_step(text).kind


def test_step_stops_are_the_closing_tags() -> None:
    assert "</think>" in STEP_STOPS and "</answer>" in STEP_STOPS


def test_format_step_and_answer_parse_back() -> None:
    step = format_step(f"the red ball is near the door {format_point((12, 34))}.")
    s = parse_step(step)
    assert s.kind == "think" and s.point == (12, 34)
    a = parse_step(format_answer(" turn left "))
    assert a.kind == "answer" and a.answer == "turn left"


def test_format_chain_check_chain_round_trip() -> None:
    thoughts = ["The red chair is here (100, 200)", "The blue box is there (300, 210).", "  "]
    text = format_chain(thoughts, "left")
    assert text.startswith("<think>\n") and text.endswith("<answer> left </answer>")
    c = check_chain(text)
    assert c.well_formed
    assert c.answer == "left"
    assert c.points == ((100, 200), (300, 210))
    assert c.thought == "The red chair is here (100, 200). The blue box is there (300, 210)."
    assert extract_answer(text) == "left"


@pytest.mark.parametrize(
    "text",
    [
        "<answer> left </answer>",  # no thought
        "<think> a (1, 2) </think>",  # no answer
        "<think> a (1, 2) </think><answer> left </answer> trailing",
        "preamble <think> a (1, 2) </think><answer> left </answer>",
        "<answer> left </answer><think> a (1, 2) </think>",
    ],
)
def test_check_chain_rejects_malformed(text: str) -> None:
    assert not check_chain(text).well_formed


def test_check_chain_malformed_still_reports_answer_and_points() -> None:
    c = check_chain("I think (1, 2) <answer> right </answer>")
    assert not c.well_formed
    assert c.answer == "right"
    assert c.points == ((1, 2),)


def test_extract_answer_takes_last_and_rejects_empty() -> None:
    assert extract_answer("<answer> a </answer> <answer> b </answer>") == "b"
    assert extract_answer("<answer>   </answer>") is None
    assert extract_answer("no answer") is None


# --------------------------------------------------------------------------------------------
# smart_resize and frames
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "h, w, max_pixels",
    [(480, 640, 1280 * 28 * 28), (4000, 3000, 200_000), (3000, 4000, 512 * 28 * 28), (100, 1000, 100_000),
     (1080, 1920, 1003520), (28, 28, 1280 * 28 * 28), (57, 91, 5000), (999, 1001, 256 * 28 * 28)],
)
def test_smart_resize_invariants(h: int, w: int, max_pixels: int) -> None:
    rh, rw = smart_resize(h, w, max_pixels=max_pixels)
    assert rh % 28 == 0 and rw % 28 == 0
    assert rh * rw <= max_pixels
    assert rh * rw >= 56 * 56 or max_pixels < 56 * 56
    # Aspect kept within what rounding each side to a multiple of 28 allows.
    assert math.isclose(rw / rh, w / h, rel_tol=28 / rh + 28 / rw)


def test_smart_resize_small_image_is_scaled_up_to_min_pixels() -> None:
    rh, rw = smart_resize(10, 10)
    assert rh * rw >= 56 * 56 and rh % 28 == 0 and rw % 28 == 0


def test_smart_resize_exact_multiple_is_unchanged() -> None:
    assert smart_resize(476, 644) == (476, 644)


@pytest.mark.parametrize("h, w", [(0, 10), (10, -1), (1, 500)])
def test_smart_resize_rejects_bad_sizes(h: int, w: int) -> None:
    with pytest.raises(ValueError):
        smart_resize(h, w)


def test_frame_for_records_both_sizes() -> None:
    f = frame_for(640, 480, max_pixels=1280 * 28 * 28)
    assert (f.orig_width, f.orig_height) == (640, 480)
    assert (f.height, f.width) == smart_resize(480, 640)


def test_frame_scale_round_trip() -> None:
    f = Frame(width=320, height=240, orig_width=640, orig_height=480)
    assert f.scale_x == 2.0 and f.scale_y == 2.0
    assert f.to_original((100, 50)) == (200, 100)
    assert f.from_original((200, 100)) == (100, 50)
    assert f.box_from_original((0, 0, 640, 480)) == (0, 0, 320, 240)
    g = frame_for(1001, 777, max_pixels=200_000)
    for p in [(0, 0), (17, 33), (g.width - 1, g.height - 1)]:
        back = g.from_original(g.to_original(p))
        assert abs(back[0] - p[0]) <= 1 and abs(back[1] - p[1]) <= 1


def test_frame_contains_edges() -> None:
    f = Frame(width=100, height=50, orig_width=200, orig_height=100)
    assert f.contains((0, 0))
    assert f.contains((99, 49))
    assert not f.contains((100, 10))
    assert not f.contains((10, 50))
    assert not f.contains((-1, 10))
    assert not f.contains((10, -1))


def test_frame_dict_round_trip() -> None:
    f = Frame(width=644, height=476, orig_width=640, orig_height=480)
    assert Frame.from_dict(f.to_dict()) == f
    assert Frame.from_dict({k: str(v) for k, v in f.to_dict().items()}) == f  # type: ignore[misc]
