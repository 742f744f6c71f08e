"""Prompt protocols: system prompt sources, presets, observation template, crop geometry, final turn, frame cap."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from mcts_engine.cli import app
from mcts_engine.config import ConfigError, MultiTurnConfig, RunConfig, build_run_config, load_recipe
from mcts_engine.frame import Frame, capped_frame, capped_size
from mcts_engine.protocol import (
    PROTOCOLS,
    final_turn,
    load_with_protocol,
    protocol_recipe,
    protocol_tasks,
    read_setting_file,
    resolve_system_prompt,
    user_text,
)
from mcts_engine.samples import DownscaleWatch, Sample, encode_image, load_frame
from mcts_engine.tasks import get_task
from mcts_engine.teachers.base import PromptContext, PromptState, Turn, build_messages
from mcts_engine.zoom.environment import crop_box, crop_output_size, observation_text, zoom

runner = CliRunner()


# --------------------------------------------------------------------------------------------
# System prompt sources
# --------------------------------------------------------------------------------------------


def test_resolve_system_prompt_sources(tmp_path: Path) -> None:
    f = tmp_path / "sys.txt"
    text = "  You answer in turns.\n\nKeep {braces} and <tags>.\n"
    f.write_bytes(text.encode())
    assert resolve_system_prompt("task", "TASK TEXT") == "TASK TEXT"
    assert resolve_system_prompt("model", "TASK TEXT") is None  # no system message at all
    assert resolve_system_prompt("none", "TASK TEXT") == ""  # an empty system message
    assert resolve_system_prompt(f"@{f}", "TASK TEXT") == text  # exact, nothing stripped
    with pytest.raises(ConfigError, match=r"^system_prompt: cannot read .*missing\.txt") as err:
        resolve_system_prompt(f"@{tmp_path / 'missing.txt'}", "x")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="not one of task, model, none or @FILE"):
        resolve_system_prompt("default", "x")


def test_read_setting_file_rereads_a_changed_file(tmp_path: Path) -> None:
    f = tmp_path / "t.txt"
    f.write_text("one")
    assert read_setting_file(f"@{f}", "k") == "one"
    f.write_text("two words")
    assert read_setting_file(f"@{f}", "k") == "two words"
    assert read_setting_file("plain text", "k") == "plain text"


def test_config_checks_sources_and_geometry_in_one_line() -> None:
    for over, key in (("system_prompt=default", "system_prompt"), ("teacher.system_prompt=x", "teacher.system_prompt"),
                      ("multiturn.crop_shape=round", "multiturn.crop_shape"), ("multiturn.crop_border=wrap", "multiturn.crop_border"),
                      ("multiturn.dot_space=page", "multiturn.dot_space"), ("user_text=raw", "user_text")):
        with pytest.raises(ConfigError, match=rf"^{key}: ") as err:
            build_run_config({}, [over])
        assert "\n" not in str(err.value)
    cfg = build_run_config({}, ["system_prompt=@prompt.txt", "user_text=Q: {question}"])
    assert cfg.system_prompt == "@prompt.txt" and cfg.user_text == "Q: {question}"


def test_hash_unchanged_by_new_keys_at_their_defaults() -> None:
    base = RunConfig().hash()
    assert build_run_config({}, ["teacher.warn_downscale=2"]).hash() == base  # a warning computes nothing
    for over in ("system_prompt=model", "teacher.system_prompt=none", "multiturn.crop_shape=square",
                 "multiturn.observation_text=<image>", "eval.max_long_side=1260", "multiturn.final_think=done"):
        assert build_run_config({}, [over]).hash() != base, over


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------


def test_protocol_presets_and_their_errors() -> None:
    assert "vigorl" in PROTOCOLS
    assert {"vstar", "screenspot", "sat2", "blink"} <= set(protocol_tasks("vigorl"))
    with pytest.raises(ConfigError, match=r"^--protocol 'nope': unknown protocol \(known: vigorl\)$"):
        protocol_recipe("nope", "vstar")
    with pytest.raises(ConfigError, match=r"^--protocol vigorl: no preset for task 'web_action' \(presets for: .*vstar"):
        protocol_recipe("vigorl", "web_action")
    vs = build_run_config(load_with_protocol(None, "vstar", "vigorl"), [])
    assert vs.task == "vstar" and vs.protocol == "vigorl" and vs.system_prompt == "model" and vs.teacher.system_prompt == "task"
    m = vs.multiturn
    assert m.enabled and (m.crop_offset, m.crop_size, m.crop_shape, m.crop_border, m.draw_dot) == (182, 672, "square", "clip", False)
    assert "{x}" in m.observation_text and "<image>" in m.observation_text and m.final_think
    ss = build_run_config(load_with_protocol(None, "screenspot", "vigorl"), [])
    assert (ss.multiturn.crop_offset, ss.multiturn.crop_size, ss.multiturn.draw_dot, ss.multiturn.dot_radius) == (100, 512, True, 7)
    assert ss.multiturn.dot_space == "region" and ss.user_text == "question"
    sat = build_run_config(load_with_protocol(None, "sat2", "vigorl"), [])
    assert sat.eval.max_long_side == 1260 and not sat.multiturn.enabled
    # a user's recipe and --set go on top of the preset
    over = build_run_config(load_with_protocol("vstar_multiturn", "vstar", "vigorl"), ["system_prompt=task"])
    assert over.system_prompt == "task" and over.multiturn.crop_shape == "square"


def test_every_preset_builds_and_raises_the_teacher_frame() -> None:
    for task in protocol_tasks("vigorl"):
        cfg = build_run_config(load_recipe(f"{task}_vigorl", task), [])
        assert cfg.protocol == "vigorl" and cfg.task == task
    for name in ("vstar", "screenspot"):  # V* and ScreenSpot-Pro: teacher frames near native resolution
        t = build_run_config(load_recipe(name, name), []).teacher
        assert t.max_pixels >= 8_294_400 and t.warn_downscale > 1


def test_cli_unknown_protocol_is_one_line() -> None:
    for cmd in (["eval", "--task", "vstar"], ["demo", "--image", "x.png", "--query", "q"], ["generate", "--task", "vstar"]):
        res = runner.invoke(app, [*cmd, "--protocol", "bogus"])
        assert res.exit_code != 0
        msg = [ln for ln in res.output.splitlines() if "bogus" in ln]
        assert msg and "unknown protocol" in msg[0] and len(msg) == 1, res.output


# --------------------------------------------------------------------------------------------
# The environment: observation template and crop geometry
# --------------------------------------------------------------------------------------------


def test_observation_template_replaces_only_x_and_y() -> None:
    t = '<observation>\nAt {x},{y} {"k": 1} {z}<image>\n</observation>'
    assert observation_text((7, 9), t) == '<observation>\nAt 7,9 {"k": 1} {z}<image>\n</observation>'
    assert observation_text((3, 4)) == "<observation>\nZoomed view around (3, 4):\n<image>\n</observation>"


def _frame(w: int = 800, h: int = 600) -> Image.Image:
    img = Image.new("RGB", (w, h), (0, 128, 0))
    return img


def test_square_and_clip_geometry() -> None:
    img = _frame()
    shift = MultiTurnConfig(crop_offset=100, crop_size=512)
    clip = MultiTurnConfig(crop_offset=100, crop_size=512, crop_shape="square", crop_border="clip")
    assert crop_box((10, 300), 800, 600, 100) == (0, 200, 200, 400)  # shifted: still 200 wide
    assert crop_box((10, 300), 800, 600, 100, "clip") == (0, 200, 110, 400)  # clipped at the edge
    assert zoom(img, (10, 300), shift)[0].size == (504, 504)
    crop, box = zoom(img, (10, 300), clip)
    assert box == (0, 200, 110, 400) and crop.size == (504, 504)  # squashed to the fixed square
    aspect_clip = MultiTurnConfig(crop_offset=100, crop_size=512, crop_border="clip")
    assert zoom(img, (10, 300), aspect_clip)[0].size == (280, 504)  # aspect kept: 110x200 → longer side 504
    assert crop_output_size(800, 600, clip) == (504, 504)
    assert crop_output_size(800, 600, MultiTurnConfig(crop_offset=182, crop_size=672)) == (672, 672)


def test_dot_drawn_on_the_region_scales_with_the_zoom() -> None:
    img = _frame()
    region = MultiTurnConfig(crop_offset=100, crop_size=512, crop_shape="square", draw_dot=True, dot_radius=7,
                             dot_space="region", dot_outline="#ffffff", dot_outline_width=2)
    crop, _ = zoom(img, (400, 300), region)
    scale = 504 / 200
    cx = cy = round(100 * scale)
    assert crop.getpixel((cx, cy))[0] > 200 and crop.getpixel((cx, cy))[1] < 60  # red at the point
    inside = round(4.5 * scale)  # inside the region-px radius 7 (outline excluded), scaled with the crop
    assert crop.getpixel((cx + inside, cy))[0] > 200
    assert crop.getpixel((cx + round(12 * scale), cy)) == (0, 128, 0)  # beyond the dot: the frame
    small = MultiTurnConfig(crop_offset=100, crop_size=512, crop_shape="square", draw_dot=True, dot_radius=7)
    crop2, _ = zoom(img, (400, 300), small)
    assert crop2.getpixel((cx + inside, cy)) == (0, 128, 0)  # radius 7 in crop px: the same offset is outside


# --------------------------------------------------------------------------------------------
# Rendering: the system message and the final turn
# --------------------------------------------------------------------------------------------


def _ctx(system: str | None, **kw: object) -> PromptContext:
    enc, _ = encode_image(_frame(112, 112), max_pixels=112 * 112)
    sample = Sample(id="s", images=["x"], question="q", answer="a")
    return PromptContext(sample=sample, system=system, user_text="Question?", images=(enc,), truth={}, **kw)  # type: ignore[arg-type]


def test_head_messages_per_system_source() -> None:
    msgs, _, _ = build_messages(PromptState(_ctx(None)), "continue")
    assert [m["role"] for m in msgs] == ["user"]
    msgs, _, _ = build_messages(PromptState(_ctx("")), "continue")
    assert msgs[0] == {"role": "system", "content": ""}
    msgs, _, _ = build_messages(PromptState(_ctx("S")), "continue")
    assert msgs[0] == {"role": "system", "content": "S"}


def test_final_turn_prefill_and_user_text(tmp_path: Path) -> None:
    assert final_turn(MultiTurnConfig()) == ("<answer>", None)
    f = tmp_path / "final.txt"
    f.write_text("Enough seen.")
    prefill, user = final_turn(MultiTurnConfig(final_think=f"@{f}", final_user_text="Answer now."))
    assert prefill == "<think> Enough seen. </think>\n<answer>" and user == "Answer now."
    ctx = _ctx(None, final_prefill=prefill, final_user_text=user)
    state = PromptState(ctx).child(Turn("<think> a (1, 2). </think>", None)).forced()
    msgs, cont, pre = build_messages(state, "continue")
    assert cont and pre == prefill and msgs[-1]["content"].endswith(prefill)
    msgs, cont, _ = build_messages(state, "plain")
    assert not cont and msgs[-1] == {"role": "user", "content": "Answer now."}


def test_user_text_sources() -> None:
    task = get_task("vstar")
    listed = Sample(id="a", images=["x"], question="What color?\n(A) red\n(B) blue", answer="red", choices=["red", "blue"])
    bare = Sample(id="b", images=["x"], question="What color?", answer="red", choices=["red", "blue"])
    assert user_text(task, listed, "question") == listed.question
    assert "(A) red" in user_text(task, bare, "question")  # options the question lacks are not lost
    assert user_text(task, bare, "Q: {question} Go.") == "Q: What color? Go."
    with pytest.raises(ConfigError, match="user_text"):
        user_text(task, bare, "no placeholder")
    point = get_task("screenspot")
    s = Sample(id="c", images=["x"], question="Description: the menu", answer="(0, 0, 5, 5)")
    assert user_text(point, s, "question") == "Description: the menu"


# --------------------------------------------------------------------------------------------
# Frames: the evaluation cap on the longer side, the downscale warning
# --------------------------------------------------------------------------------------------


def test_capped_frame_keeps_original_coordinates(tmp_path: Path) -> None:
    assert capped_size(2520, 1260, 1260) == (1260, 630) and capped_size(800, 600, 1260) == (800, 600)
    assert capped_size(3001, 1000, 1260) == (1260, 419)  # truncated, as resize((int(w*s), int(h*s)))
    f = capped_frame(2520, 1260, 1260, 12_845_056, 3136)
    assert (f.orig_width, f.orig_height) == (2520, 1260) and max(f.width, f.height) <= 1260 + 14
    assert f.width % 28 == 0 and f.height % 28 == 0
    path = tmp_path / "wide.png"
    Image.new("RGB", (2520, 1260), (9, 9, 9)).save(path)
    enc, img = load_frame(str(path), None, 12_845_056, 3136, "png", max_long_side=1260)
    assert img.size == (f.width, f.height) == (enc.frame.width, enc.frame.height) and enc.frame == f
    assert Image.open(io.BytesIO(enc.data)).size == img.size
    box = f.box_from_original((1260.0, 630.0, 2520.0, 1260.0))
    assert box[2] == pytest.approx(f.width) and box[3] == pytest.approx(f.height)


def test_downscale_warning_once_per_run(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    Image.new("RGB", (1400, 1400)).save(big)
    small = tmp_path / "small.png"
    Image.new("RGB", (300, 300)).save(small)
    out = io.StringIO()
    watch = DownscaleWatch(1.5, 200_000, stream=out)
    watch.get(str(small), None, 200_000, 3136, "png")
    assert out.getvalue() == ""
    for _ in range(3):
        watch.get(str(big), None, 200_000, 3136, "png")
    text = out.getvalue()
    assert text.count("warning:") == 1 and "1400x1400" in text and "teacher.max_pixels" in text
    quiet = DownscaleWatch(0, 200_000, stream=out)
    quiet.get(str(big), None, 200_000, 3136, "png")
    assert out.getvalue().count("warning:") == 1
    assert isinstance(watch.get(str(big), None, 200_000, 3136, "png")[0].frame, Frame)


def test_model_and_none_differ_where_a_template_has_a_default() -> None:
    """Rows as export writes them, rendered by a Qwen2-VL-style chat template (the tiny test model's): ``model``
    gets the template's default system prompt, ``none`` an empty system block, ``@FILE``/task their text."""
    import jinja2

    from mcts_engine.export.rows import SampleContext as RowContext
    from mcts_engine.testing.tiny_model import CHAT_TEMPLATE

    def render(system: str | None) -> str:
        ctx = RowContext(id="s", task="vstar", system=system, user_text="Q?", images=[], frame=Frame(28, 28, 28, 28),
                         coord_space="frame", image_hash="", reference="a", truth={}, task_options={})
        return jinja2.Template(CHAT_TEMPLATE).render(messages=ctx.parts_prompt(), add_generation_prompt=True)

    assert render(resolve_system_prompt("model", "T")).startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
    assert render(resolve_system_prompt("none", "T")).startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user")
    assert render(resolve_system_prompt("task", "T")).startswith("<|im_start|>system\nT<|im_end|>")
