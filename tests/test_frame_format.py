"""teacher.image_format: auto (JPEG source → JPEG frame, else PNG), png, jpeg; checked up front."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from mcts_engine.cli import app
from mcts_engine.config import ConfigError, build_run_config, load_recipe
from mcts_engine.samples import FrameCache, Sample, frame_format, load_frame
from mcts_engine.tasks import get_task
from mcts_engine.teachers.base import PromptContext
from mcts_engine.zoom.episode import as_multiturn
from mcts_engine.zoom.observer import make_observer

MAXP, MINP = 1280 * 28 * 28, 56 * 56


def _photo(path: Path, fmt: str, size: tuple[int, int] = (320, 240)) -> Path:
    img = Image.linear_gradient("L").resize(size).convert("RGB")
    img.save(path, format=fmt)
    return path


def test_frame_format_rules():
    assert frame_format("auto", "JPEG") == "jpeg"
    assert frame_format("auto", "MPO") == "jpeg"  # camera JPEGs Pillow opens as MPO
    assert frame_format("auto", "PNG") == "png"
    assert frame_format("auto", "WEBP") == "png"
    assert frame_format("auto", None) == "png"  # unknown source (a crop, bytes without a format): lossless
    assert frame_format("png", "JPEG") == "png" and frame_format("jpeg", "PNG") == "jpeg"
    with pytest.raises(ValueError, match="unknown image format 'gif'"):
        frame_format("gif", "PNG")


def test_auto_keeps_jpeg_sources_jpeg_and_the_rest_png(tmp_path):
    jpg = _photo(tmp_path / "a.jpg", "JPEG")
    png = _photo(tmp_path / "b.png", "PNG")
    enc_j, _ = load_frame(str(jpg), None, MAXP, MINP, "auto")
    enc_p, _ = load_frame(str(png), None, MAXP, MINP, "auto")
    assert enc_j.mime == "image/jpeg" and Image.open(io.BytesIO(enc_j.data)).format == "JPEG"
    assert enc_p.mime == "image/png" and Image.open(io.BytesIO(enc_p.data)).format == "PNG"
    # bytes sources carry their format too
    enc_b, _ = load_frame(jpg.read_bytes(), None, MAXP, MINP, "auto")
    assert enc_b.mime == "image/jpeg"
    # forced formats win over the source's
    assert load_frame(str(jpg), None, MAXP, MINP, "png")[0].mime == "image/png"
    assert load_frame(str(png), None, MAXP, MINP, "jpeg")[0].mime == "image/jpeg"


def test_jpeg_quality_is_used_and_keys_the_cache(tmp_path):
    jpg = _photo(tmp_path / "a.jpg", "JPEG", size=(640, 480))
    cache = FrameCache()
    low = cache.get(str(jpg), None, MAXP, MINP, "auto", 30)[0]
    high = cache.get(str(jpg), None, MAXP, MINP, "auto", 95)[0]
    assert cache.misses == 2 and low.key != high.key
    assert len(low.data) < len(high.data)


def test_config_rejects_unknown_format_and_quality():
    rec = load_recipe(None, "sat2")
    assert build_run_config(rec, []).teacher.image_format == "auto"
    with pytest.raises(ConfigError, match=r"teacher.image_format: 'webp' is not one of auto, png, jpeg"):
        build_run_config(rec, ["teacher.image_format=webp"])
    with pytest.raises(ConfigError, match=r"teacher.jpeg_quality: 0 is out of range \(allowed: 1..100\)"):
        build_run_config(rec, ["teacher.jpeg_quality=0"])


def test_cli_reports_a_bad_format_in_one_line_before_any_work(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["generate", "--task", "sat2", "--limit", "1", "--out", str(out),
                                   "--set", "teacher.image_format=webp", "--no-progress"])
    assert res.exit_code != 0
    assert "teacher.image_format: 'webp'" in res.output and "Traceback" not in res.output
    assert not out.exists()


def _ctx(enc, resized, task_name: str = "vstar") -> PromptContext:
    task = get_task(task_name)
    sample = Sample(id="s", images=["x"], question="What color is the cup?", answer="red",
                    choices=["red", "blue"], task=task_name)
    ctx = PromptContext(sample=sample, system=task.teacher_system(True), user_text=task.user_text(sample),
                        images=(enc,), truth=task.ground_truth(sample, enc.frame), task=task)
    return as_multiturn(ctx, [resized])


@pytest.mark.parametrize("fmt, source, crop_mime", [("auto", "JPEG", "image/jpeg"), ("auto", "PNG", "image/png"),
                                                     ("png", "JPEG", "image/png"), ("jpeg", "PNG", "image/jpeg")])
def test_multiturn_crops_follow_the_frame_under_auto(tmp_path, fmt, source, crop_mime):
    src = _photo(tmp_path / f"a.{source.lower()}", source, size=(640, 480))
    enc, resized = load_frame(str(src), None, MAXP, MINP, fmt)
    cfg = build_run_config(load_recipe(None, "vstar"), []).multiturn
    observe = make_observer(_ctx(enc, resized), cfg, tmp_path / "images", fmt)
    (tmp_path / "images").mkdir()
    obs, record = observe((320, 240))
    assert obs.images[0].mime == crop_mime
    assert record["image"]["mime"] == crop_mime
    assert (tmp_path / record["image"]["file"]).exists()


def test_generate_on_jpeg_data_stores_jpeg_frames(tmp_path):
    rows = []
    for i in range(2):
        img = _photo(tmp_path / f"im{i}.jpg", "JPEG", size=(300 + 20 * i, 200))
        rows.append({"id": f"q{i}", "image": img.name, "question": "Is the red box left of the blue box?",
                     "choices": ["yes", "no"], "answer": "yes"})
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["generate", "--task", "sat2", "--data", str(data), "--image-root", str(tmp_path),
                                   "--teacher", "sim", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    trees = [json.loads(line) for line in (out / "trees.jsonl").read_text().splitlines()]
    assert len(trees) == 2
    for tree in trees:
        (image,) = tree["images"]
        assert image["mime"] == "image/jpeg" and image["file"].endswith(".jpg")
        assert Image.open(out / image["file"]).format == "JPEG"
