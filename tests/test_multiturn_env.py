"""Multi-turn zoom: tool-call parsing, crop geometry, observation messages, search with tool calls."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from mcts_engine.cli import app
from mcts_engine.config import MultiTurnConfig
from mcts_engine.frame import Frame
from mcts_engine.grounding import parse_step
from mcts_engine.samples import encode_image
from mcts_engine.search.tree import Tree
from mcts_engine.teachers.base import PromptContext, PromptState, StepObservation, Turn, build_messages
from mcts_engine.zoom.environment import check_tool_step, crop_box, format_tool_call, observe, zoom

FRAME = Frame(width=560, height=420, orig_width=1120, orig_height=840)


def step(call: str) -> str:
    return f"<think> the sign is here (100, 120). </think>\n<tool_call>\n{call}\n</tool_call>"


@pytest.mark.parametrize(
    "call, reason",
    [
        ('{"name": "search_coordinate", "arguments": {"coordinate": [100, 120]}}', None),
        ('{"name": "search_coordinate", "arguments": {"coordinate": [100, 120]', "not valid JSON"),
        ('{"name": "search_coordinate", "arguments": {"coordinate": [100.5, 120]}}', "two integers"),
        ('{"name": "search_coordinate", "arguments": {"coordinate": ["100", 120]}}', "two integers"),
        ('{"name": "search_coordinate", "arguments": {"coordinate": [100]}}', "two integers"),
        ('{"name": "search_coordinate", "arguments": {"coordinate": [600, 120]}}', "out_of_frame"),
        ('{"name": "zoom_everything", "arguments": {"coordinate": [100, 120]}}', "unknown tool"),
        ('{"name": "search_coordinate", "arguments": {}}', "no coordinate"),
    ],
)
def test_tool_call_checks(call, reason):
    point, err = check_tool_step(parse_step(step(call)), FRAME)
    if reason is None:
        assert err is None and point == (100, 120)
    else:
        assert point is None and reason in err


def test_missing_tool_call_is_a_failed_step():
    assert check_tool_step(parse_step("<think> only a thought (3, 4). </think>"), FRAME) == (None, "no_tool_call")


def test_format_tool_call_round_trips():
    parsed = parse_step("<think> x (7, 9). </think>\n" + format_tool_call((7, 9)))
    assert parsed.tool_call is not None and parsed.tool_call.point == (7, 9)


@pytest.mark.parametrize(
    "point, expect",
    [
        ((280, 210), (98, 28, 462, 392)),  # centred
        ((0, 0), (0, 0, 364, 364)),  # top-left corner: shifted inside, not shrunk
        ((559, 419), (196, 56, 560, 420)),  # bottom-right corner
        ((10, 400), (0, 56, 364, 420)),
    ],
)
def test_crop_box_stays_inside_the_frame(point, expect):
    assert crop_box(point, 560, 420, 182) == expect


def test_crop_box_clips_when_the_frame_is_smaller_than_the_region():
    assert crop_box((50, 40), 200, 100, 182) == (0, 0, 200, 100)


def test_zoom_resizes_to_crop_size_on_the_28_grid_and_draws_the_dot():
    img = Image.new("RGB", (560, 420), "white")
    cfg = MultiTurnConfig(enabled=True, crop_offset=100, crop_size=512, draw_dot=True)
    crop, box = zoom(img, (300, 200), cfg)
    assert box == (200, 100, 400, 300)
    assert crop.size == (504, 504)  # 512 rounded to the 28-pixel grid
    assert crop.getpixel((252, 252))[:3] == (255, 0, 0)  # the point sits at the crop centre
    plain, _ = zoom(img, (300, 200), MultiTurnConfig(crop_offset=100, crop_size=512))
    assert plain.getpixel((252, 252))[:3] == (255, 255, 255)
    # A clipped region keeps its aspect ratio.
    wide, _ = zoom(Image.new("RGB", (700, 100)), (350, 50), MultiTurnConfig(crop_offset=182, crop_size=672))
    assert wide.size[0] == 672 and wide.size[1] % 28 == 0 and wide.size[1] < 672


def test_observe_returns_observation_text_with_image_marker():
    img = Image.new("RGB", (560, 420), "white")
    res, err = observe(img, parse_step(step('{"name": "search_coordinate", "arguments": {"coordinate": [100, 120]}}')), FRAME, MultiTurnConfig())
    assert err is None and res.point == (100, 120)
    assert res.text.startswith("<observation>") and res.text.endswith("</observation>") and res.text.count("<image>") == 1
    res, err = observe(img, parse_step("<think> no call (1, 2). </think>"), FRAME, MultiTurnConfig())
    assert res is None and err == "no_tool_call"


def _ctx() -> PromptContext:
    enc, _ = encode_image(Image.new("RGB", (560, 420)), max_pixels=560 * 420)
    from mcts_engine.samples import Sample

    s = Sample(id="a", images=["a.png"], question="q", answer="x")
    return PromptContext(sample=s, system="sys", user_text="Where?", images=(enc,), truth={}, multiturn=True)


def test_observation_message_shape_in_both_prompt_styles():
    ctx = _ctx()
    crop, _ = encode_image(Image.new("RGB", (672, 672)), max_pixels=672 * 672)
    text = step('{"name": "search_coordinate", "arguments": {"coordinate": [100, 120]}}')
    obs = StepObservation(text="<observation>\nZoomed view around (100, 120):\n<image>\n</observation>", images=(crop,))
    state = PromptState(ctx).child(Turn(text, obs))
    for style in ("continue", "plain"):
        msgs, cont, _ = build_messages(state, style)
        assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
        assert msgs[2]["content"] == text
        parts = msgs[3]["content"]
        assert [p["type"] for p in parts] == ["text", "image_url", "text"]
        assert parts[0]["text"].startswith("<observation>") and parts[2]["text"].strip() == "</observation>"
        assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
        assert cont is False  # the model starts a new assistant turn after an observation
    # The forced final turn after an observation pre-fills <answer> in continue style.
    msgs, cont, prefill = build_messages(state.forced(), "continue")
    assert cont and prefill == "<answer>" and msgs[-1] == {"role": "assistant", "content": "<answer>"}


def test_generate_multiturn_with_sim_teacher(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["generate", "--no-progress", "--limit", "2", "--out", str(out),
                                   "--set", "multiturn.enabled=true", "--set", "multiturn.crop_offset=100",
                                   "--set", "multiturn.crop_size=512", "--set", "search.simulations=3"])
    assert res.exit_code == 0, res.output
    for line in (out / "trees.jsonl").read_text().splitlines():
        rec = json.loads(line)
        assert "search_coordinate" in rec["prompt"]["system"]
        tree = Tree.from_dict(rec)
        thoughts = [n for n in tree.nodes if n.kind == "think"]
        assert thoughts
        for n in thoughts:
            assert n.observation is not None and n.observation["point"] == list(n.point)
            crop = Image.open(out / n.observation["image"]["file"])
            assert crop.size == (504, 504)
            x1, y1, x2, y2 = n.observation["box"]
            assert x1 <= n.point[0] <= x2 and y1 <= n.point[1] <= y2
        # Expansion stays batched: several children per request.
        assert rec["stats"]["choices"] > rec["stats"]["calls"]


def test_multiturn_recipes_extend_their_task_recipe():
    from mcts_engine.config import build_run_config, load_recipe

    for name, offset, size, dot in (("vstar_multiturn", 182, 672, False), ("screenspot_multiturn", 100, 512, True)):
        rec = load_recipe(name, "sat2")
        base = load_recipe(None, rec["task"])
        cfg = build_run_config(rec, [])
        assert cfg.multiturn.enabled and (cfg.multiturn.crop_offset, cfg.multiturn.crop_size, cfg.multiturn.draw_dot) == (offset, size, dot)
        assert cfg.teacher.max_pixels == base["teacher"]["max_pixels"]  # inherited
        assert cfg.search.children == build_run_config(base, []).search.children  # inherited
        assert cfg.search.max_depth == 6  # overridden


def test_recipe_extends_cycle_is_a_clear_error(tmp_path):
    from mcts_engine.config import ConfigError, load_recipe

    (tmp_path / "a.yaml").write_text(f"extends: {tmp_path / 'b.yaml'}\n")
    (tmp_path / "b.yaml").write_text(f"extends: {tmp_path / 'a.yaml'}\n")
    with pytest.raises(ConfigError, match="too deep"):
        load_recipe(str(tmp_path / "a.yaml"), "sat2")
