"""``mcts-engine demo``: one image through the turn loop → one self-contained HTML page of turns and crops."""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

import typer
from PIL import Image
from typer.testing import CliRunner

from mcts_engine.commands.demo import demo
from mcts_engine.testing.refused_port import refused_url
from mcts_engine.zoom.environment import format_tool_call

runner = CliRunner()
DATA = Path(__file__).resolve().parent.parent / "mcts_engine" / "sample_data"
VSTAR_IMAGE = DATA / "vstar_sample" / "direct_attributes" / "sa_1000.jpg"
SCREEN = DATA / "screenspot_sample" / "screenspotv2_image" / "web_shop_0.png"

_app = typer.Typer()
_app.command("demo")(demo)


@_app.callback()
def _root() -> None:
    """Test app (the command is registered the same way in mcts_engine.cli)."""


def run_demo(*args: str):
    return runner.invoke(_app, ["demo", *args])


def embedded(page: str, mime: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(b))) for b in re.findall(rf"data:{mime};base64,([A-Za-z0-9+/=]+)", page)]


def crop_images(page: str) -> list[tuple[str, Image.Image]]:
    """(mime, image) of every crop shown beside a turn."""
    found = re.findall(r"<div class='crop'><img src='data:(image/[a-z]+);base64,([A-Za-z0-9+/=]+)'", page)
    return [(mime, Image.open(io.BytesIO(base64.b64decode(b)))) for mime, b in found]


def test_demo_sim_on_an_image_without_annotations_still_zooms(tmp_path):
    out = tmp_path / "page.html"
    res = run_demo("--image", str(VSTAR_IMAGE), "--query", "What is the colour of the cup?", "--choices", "red|blue|green",
                   "--teacher", "sim", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "not a model" in res.output and "zoom on (" in res.output  # turns printed as they arrive
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")
    shown = crop_images(page)
    assert shown and all(mime == "image/jpeg" for mime, _ in shown)  # a JPEG source: crops sent as JPEG (image_format auto)
    crops = [c for _, c in shown]
    assert all(c.size == (672, 672) for c in crops)  # vstar_multiturn: 364-px regions shown at 672 px
    assert len(re.findall(r"<circle ", page)) == len(crops)  # one numbered point per zoom on the full image
    assert "What is the colour of the cup?" in page and "(A) red" in page
    assert re.search(r"<b>Answer:</b> (red|blue|green)</div>", page)


def screen_replies(body: dict, i: int, rng) -> str:
    msgs = body["messages"]
    turn = sum(1 for m in msgs if m["role"] == "assistant")
    if turn == 0:
        return f"<think> The close icon & the title bar are near (30, 25). </think>\n{format_tool_call((30, 25))}"
    if turn == 1:
        return f"<think> Zoomed: the x icon is at (28, 27). </think>\n{format_tool_call((28, 27))}"
    return "<answer> (28, 27) </answer>"


def test_demo_against_a_served_model_writes_turns_crops_and_verdict(tmp_path):
    from mcts_engine.testing.stub_server import StubServer

    out = tmp_path / "demo.html"
    with StubServer(keep_bodies=True, replies=screen_replies) as server:
        res = run_demo("--image", str(SCREEN), "--query", "close this window", "--task", "screenspot",
                       "--base-url", server.url, "--model", "stub-model", "--answer", "(12, 12, 44, 44)", "--out", str(out))
        assert res.exit_code == 0, res.output
        bodies = [r["body"] for r in server.stats.records]
    assert len(bodies) == 3 and all(b["stop"] == ["</tool_call>", "</answer>"] for b in bodies)
    page = out.read_text()
    for text in ("<think> The close icon & the title bar are near (30, 25). </think>", "<think> Zoomed: the x icon is at (28, 27). </think>",
                 "<answer> (28, 27) </answer>"):
        assert html.escape(text) in page  # every turn's text, escaped
    shown = crop_images(page)
    assert [m for m, _ in shown] == ["image/png", "image/png"]  # a PNG screenshot: lossless crops
    crops = [c for _, c in shown]
    assert [c.size for c in crops] == [(504, 504), (504, 504)]  # screenspot_multiturn: crop 512 → 504 on the 28 grid
    red = crops[0].convert("RGB").getpixel((round(30 * 504 / 200), round(25 * 504 / 200)))  # region (0, 0, 200, 200)
    assert red[0] > 200 and red[1] < 60  # the recipe draws the point on the crop
    full = embedded(page, "image/jpeg")
    assert len(full) == 1 and full[0].size == (1288, 728)
    assert "correct (right answer: (12, 12, 44, 44)" in page and "zoom on (30, 25)" in page
    assert 'stroke="#10a040"' in page  # the target box and the answer point


def test_demo_single_turn_and_a_malformed_tool_call(tmp_path):
    from mcts_engine.testing.stub_server import StubServer

    chain = "<think>\nThe cup is at (100, 120). Its rim is at (104, 118).\n</think>\n<answer> blue </answer>"
    out = tmp_path / "one.html"
    with StubServer(keep_bodies=True, replies=lambda body, i, rng: chain) as server:
        res = run_demo("--image", str(VSTAR_IMAGE), "--query", "What colour is the cup?", "--choices", "red|blue",
                       "--base-url", server.url, "--model", "stub-model", "--single-turn", "--answer", "blue", "--out", str(out))
        assert res.exit_code == 0, res.output
        assert server.stats.records[0]["body"]["stop"] == ["</answer>"]
    page = out.read_text()
    assert html.escape(chain) in page and len(re.findall(r"<circle ", page)) == 2 and "correct" in page
    assert not crop_images(page)  # no crops in single-turn mode

    bad = '<think> here (5, 5). </think>\n<tool_call>\n{"name": "search_coordinate", "arguments": {"coordinate": [5, 5]\n</tool_call>'
    out = tmp_path / "bad.html"
    with StubServer(replies=lambda body, i, rng: bad) as server:
        res = run_demo("--image", str(VSTAR_IMAGE), "--query", "What colour is the cup?", "--base-url", server.url,
                       "--model", "stub-model", "--out", str(out), "--quiet")
        assert res.exit_code == 0, res.output
    page = out.read_text()
    assert "bad_tool_call: tool call is not valid JSON" in page and "no answer (bad_tool_call)" in page


def test_demo_bad_input_is_a_one_line_error(tmp_path):
    res = run_demo("--image", str(tmp_path / "missing.png"), "--query", "q", "--teacher", "sim", "--out", str(tmp_path / "x.html"))
    assert res.exit_code == 2 and "image not found" in res.output and "Traceback" not in res.output
    res = run_demo("--image", str(VSTAR_IMAGE), "--query", "q", "--task", "nope", "--teacher", "sim")
    assert res.exit_code == 2 and "unknown task" in res.output
    res = run_demo("--image", str(VSTAR_IMAGE), "--query", "q", "--choices", "red|blue", "--answer", "purple", "--teacher", "sim",
                   "--out", str(tmp_path / "x.html"))
    assert res.exit_code == 2 and "--answer" in res.output
    with refused_url() as dead:
        res = run_demo("--image", str(VSTAR_IMAGE), "--query", "q", "--base-url", dead, "--model", "m",
                       "--out", str(tmp_path / "x.html"))
    assert res.exit_code == 2 and "error:" in res.output and not (tmp_path / "x.html").exists()
