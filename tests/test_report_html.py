"""The offline HTML report: statistics, failures grouped by kind, an index of every tree, and each sample's card
as embedded compact JSON (rendered by the page's script when opened), images inlined for small runs."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from mcts_engine.cli import app
from mcts_engine.export.report import MARK, build_report, draw_points, question_type, read_page_data, search_pick
from mcts_engine.testing.synthetic_runs import make_image, make_run, rich_tree


def _run(tmp: Path) -> Path:
    data = tmp / "data"
    make_image(data / "img0.png")
    make_image(data / "img1.png", seed=1)
    t0 = rich_tree("s0", "img0.png")
    t0.stats = {"calls": 5, "completion_tokens": 120, "rejections": {"point outside the frame": 2}}
    t0.rejected = [{"parent": 0, "text": "<think> x (999, 1). </think>", "reason": "point outside the frame"}]
    t0.sample["metadata"] = {"question_type": "relative_depth"}
    t1 = rich_tree("s1", "img1.png")
    t1.stats = {"calls": 7, "completion_tokens": 80}
    t2 = rich_tree("s2", "gone.png")
    for n in t2.nodes:
        if n.kind == "answer":
            n.answer, n.correct = "right", False
    trees = [t0, t1, t2, '{"broken": ']
    return make_run(tmp, trees, data=str(data / "x.jsonl"),
                    failures=[("s9", "s9: teacher error: HTTP 500"), ("s10", "teacher error: HTTP 500"),
                              ("s11", "x.jsonl:12: field 'image' is missing")])


def _b64_image(uri: str) -> Image.Image:
    assert uri.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB")


def test_report_renders_stats_failures_and_cards(tmp_path: Path) -> None:
    run = _run(tmp_path)
    res = build_report(run, tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert res.trees == 3 and res.solved == 2 and res.samples_shown == 3 and res.self_contained
    assert "http://" not in html and "https://" not in html and "<script src" not in html and "<link" not in html
    assert "66.7%" in html  # solve rate
    assert ">calls</td><td class=num>12<" in html and ">completion_tokens</td><td class=num>200<" in html
    # failures grouped by kind: an old record prefixed with its id groups with a new one
    # the example is the group's smallest sample id ("s10" < "s9")
    assert "<td>teacher error: HTTP 500</td><td class=num>2</td><td class=num>s10</td>" in html
    assert "<td>x.jsonl:N: field &#x27;image&#x27; is missing</td><td class=num>1</td>" in html
    assert "point outside the frame" in html and "not valid JSON" in html
    assert "depth of answer nodes" in html and "branching" in html and "Solve rate per question type" in html
    assert "<td>relative_depth</td><td class=num>1</td><td class=num>1</td><td class=num>100.0%</td>" in html
    assert "numbered disc" in html and "cyan box" in html  # the colour legend
    index, cards = read_page_data(html)
    assert [r[0] for r in index] == ["s0", "s1", "s2"] and index[0][1] == "relative_depth" and index[1][1] == "sat2"
    assert [r[2] for r in index] == [True, True, False]
    c0 = cards["s0"]
    assert c0["chain"] == "<think>\nI look at region 50-40 (50, 40). I look at region 120-80 (120, 80).\n</think>\n<answer> left </answer>"
    assert c0["ok"] is True and c0["points"] == [[50, 40], [120, 80]] and c0["label"] == "best verified-correct chain"
    assert len(c0["tree"]) == 10 and [1, 0, "think", 50, 40, 2, 0.5, -1] == c0["tree"][1][:8]
    assert c0["rejected"] == 1 and len(c0["boxes"]) == 1 and len(c0["boxes"][0]) == 4  # the annotated cup, frame px
    c2 = cards["s2"]
    assert c2["img"] is None and "image not found" in c2["img_error"]
    assert c2["label"] == "no verified-correct chain: highest-value valid path" and c2["ok"] is False
    assert html.count("<details") < 10  # cards are not pre-rendered as HTML


def test_card_image_is_the_teachers_frame(tmp_path: Path) -> None:
    run = _run(tmp_path)
    build_report(run, tmp_path / "r.html", limit=1)
    index, cards = read_page_data((tmp_path / "r.html").read_text())
    assert len(index) == len(cards) == 1  # --limit 1
    img = _b64_image(cards["s0"]["img"])
    assert img.size == (308, 196)  # the teacher's frame: the points (frame pixels) are drawn over it as SVG
    assert cards["s0"]["frame"] == [308, 196]


def test_linked_images_point_into_the_run_directory(tmp_path: Path) -> None:
    from mcts_engine.testing.synthetic_runs import add_cache

    src = make_image(tmp_path / "data" / "a.png")
    t = rich_tree("c", "a.png")
    add_cache(t, tmp_path / "run", src)
    run = make_run(tmp_path, [t])
    out = tmp_path / "pages" / "r.html"
    res = build_report(run, out, self_contained=False)
    _, cards = read_page_data(out.read_text())
    href = cards["c"]["img"]
    assert not res.self_contained and href.startswith("../run/images/") and (out.parent / href).resolve().is_file()


def test_search_pick_and_question_type() -> None:
    t = rich_tree("s0")
    pick = search_pick(t)
    assert pick is not None and pick.answer == "left"  # most visited: A (2 visits) → B → left
    assert question_type(t) == "sat2"
    t.sample["metadata"] = {"category": "direct_attributes"}
    assert question_type(t) == "direct_attributes"


def test_draw_points_marks_exact_pixels() -> None:
    img = Image.new("RGB", (100, 80), (0, 0, 255))
    out = draw_points(img, [(10, 10), (70, 60)])
    assert out.getpixel((10, 10)) == MARK and out.getpixel((70, 60)) == MARK
    assert img.getpixel((10, 10)) == (0, 0, 255)  # the input is not modified


def test_report_cli(tmp_path: Path) -> None:
    run = _run(tmp_path)
    res = CliRunner().invoke(app, ["report", "--run", str(run), "--out", str(tmp_path / "o.html"), "--limit", "2"])
    assert res.exit_code == 0, res.output
    assert "3 trees, 2 solved, 2 shown; images inlined" in res.output
    linked = CliRunner().invoke(app, ["report", "--run", str(run), "--out", str(tmp_path / "l.html"), "--linked"])
    assert linked.exit_code == 0 and "images linked" in linked.output
    bad = CliRunner().invoke(app, ["report", "--run", str(tmp_path / "nope")])
    assert bad.exit_code == 2 and "not a run directory" in bad.output


def test_report_uses_the_cached_frame_image(tmp_path: Path) -> None:
    from mcts_engine.testing.synthetic_runs import add_cache

    src = make_image(tmp_path / "data" / "a.png")
    t = rich_tree("c", "a.png")
    add_cache(t, tmp_path / "run", src)
    t.sample["images"] = ["bytes:" + "ef" * 20]  # only the cache has the image
    run = make_run(tmp_path, [t])
    build_report(run, tmp_path / "r.html")
    _, cards = read_page_data((tmp_path / "r.html").read_text())
    assert cards["c"]["img"] and _b64_image(cards["c"]["img"]).size == (308, 196)
