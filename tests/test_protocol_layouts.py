"""ViGoRL's released dataset layouts (``samples/vigorl.py``): fixtures in those layouts, built in the test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mcts_engine.samples import Sample, SampleError, load_samples, open_image
from mcts_engine.samples.vigorl import benchmark_of, parse_options
from mcts_engine.tasks import get_task


def released(root: Path, rel: str, rows: list[dict], images: dict[str, tuple[int, int]]) -> Path:
    """A released-layout JSONL under DATA_ROOT ``root`` and its images (paths relative to ``root``)."""
    for path, size in images.items():
        p = root / path
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (120, 120, 120)).save(p)
    f = root / rel
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


def conv(query: str, answer: str) -> list[dict]:
    return [{"from": "human", "value": query}, {"from": "gpt", "value": answer}]


def samples_of(path: Path, task: str, image_root: str | None = None) -> tuple[list[Sample], list[SampleError]]:
    out = list(load_samples(path, image_root, task))
    return [s for s in out if isinstance(s, Sample)], [e for e in out if isinstance(e, SampleError)]


def test_sat2_layout_options_and_truth(tmp_path: Path) -> None:
    root = tmp_path / "DATA"
    f = released(root, "spatial_reasoning/sat2_test/sat2_test.jsonl", [
        {"id": 0, "image": "spatial_reasoning/sat2_test/images/0.png",
         "conversations": conv("<image>Is the chair left or right of the table? Answer choices: ['left', 'right']", "right")},
        {"id": 1, "image": "spatial_reasoning/sat2_test/images/1.png",
         "conversations": conv("<image>\nHow did the camera move?\nA. turned left\nB. turned right\nC. moved forward", "C")},
        {"id": 2, "image": "spatial_reasoning/sat2_test/images/0.png",
         "conversations": conv("<image>Which is closer?\n(A) the lamp\n(B) the sofa", "<answer> (B) </answer>")},
    ], {"spatial_reasoning/sat2_test/images/0.png": (64, 48), "spatial_reasoning/sat2_test/images/1.png": (32, 32)})
    got, errors = samples_of(f, "sat2")  # no --image-root: DATA_ROOT is found above the file
    assert not errors
    s0, s1, s2 = got
    assert s0.id == "0" and s0.choices == ["left", "right"] and s0.answer == "right"
    assert s0.question == "Is the chair left or right of the table? Answer choices: ['left', 'right']"
    assert s1.choices == ["turned left", "turned right", "moved forward"] and s1.answer == "moved forward"
    assert s2.choices == ["the lamp", "the sofa"] and s2.answer == "the sofa"
    assert all(s.metadata.get("benchmark") == "SAT-2" for s in got)
    assert open_image(s1.images[0], s1.image_root).size == (32, 32)
    task = get_task("sat2")
    truth = task.ground_truth(s1, None)
    assert truth == {"answer": "moved forward", "choices": ["turned left", "turned right", "moved forward"]}
    assert task.verify("moved forward", truth).correct and not task.verify("forward", truth).correct  # exact, never a substring


def test_blink_layout_sub_task_from_the_id(tmp_path: Path) -> None:
    root = tmp_path / "DATA"
    f = released(root, "spatial_reasoning/blink/blink_validation.jsonl", [
        {"id": "val_Relative_Depth_7", "image": "spatial_reasoning/blink/images/a.png",
         "conversations": conv("<image>Which point is closer? (A) A (B) B", "(A)")},
        {"id": "val_Art_Style_12", "image": "spatial_reasoning/blink/images/a.png",
         "conversations": conv("<image>Which image shares the style? (A) the second image (B) the third image", "the third image")},
    ], {"spatial_reasoning/blink/images/a.png": (40, 40)})
    got, errors = samples_of(f, "blink", str(root))
    assert not errors
    assert [s.metadata["sub_task"] for s in got] == ["Relative_Depth", "Art_Style"]
    assert got[0].choices == ["A", "B"] and got[0].answer == "A"
    assert got[1].answer == "the third image"


def test_vstar_layout_category_from_the_path(tmp_path: Path) -> None:
    root = tmp_path / "DATA"
    f = released(root, "visual_search/vstar/vstarbench_test.jsonl", [
        {"id": "direct_attributes/sa_1", "image": "visual_search/vstar/direct_attributes/sa_1.jpg",
         "conversations": conv("<image>\nWhat is the color of the umbrella?\n(A) green\n(B) red\n(C) white\n(D) black", "red")},
        {"id": "relative_position/sa_2", "image": "visual_search/vstar/relative_position/sa_2.jpg",
         "conversations": conv("<image>\nIs the cat on the left or right side of the dog?\n(A) left\n(B) right", "A")},
    ], {"visual_search/vstar/direct_attributes/sa_1.jpg": (50, 40), "visual_search/vstar/relative_position/sa_2.jpg": (50, 40)})
    got, errors = samples_of(f, "vstar")
    assert not errors
    assert [s.metadata["category"] for s in got] == ["direct_attributes", "relative_position"]
    assert got[0].choices == ["green", "red", "white", "black"] and got[0].answer == "red"
    assert got[1].answer == "left"
    task = get_task("vstar")
    assert task.user_text(got[0]) == got[0].question  # the query already lists its options: shown as written


def test_web_grounding_layouts_box_answers(tmp_path: Path) -> None:
    root = tmp_path / "DATA"
    pro = released(root, "web_grounding/ScreenSpot-Pro/screenspot_pro_test.jsonl", [
        {"id": "pro_1", "image": "web_grounding/ScreenSpot-Pro/images/a.png",
         "conversations": conv("<image>the export button", "(100, 40, 160, 70)")},
    ], {"web_grounding/ScreenSpot-Pro/images/a.png": (400, 300)})
    v2 = released(root, "web_grounding/ScreenSpot-V2/screenspot_v2_test.jsonl", [
        {"id": "v2_1", "image": "web_grounding/ScreenSpot-V2/images/b.png",
         "conversations": conv("<image>close the dialog", "(10, 12, 30, 28)")},
    ], {"web_grounding/ScreenSpot-V2/images/b.png": (200, 100)})
    (s,), errors = samples_of(pro, "screenspot")
    assert not errors
    assert s.question == "the export button" and s.boxes == [{"label": "target", "bbox": [100.0, 40.0, 160.0, 70.0]}]
    assert s.metadata["benchmark"] == "ScreenSpot-Pro" and s.metadata["source_bbox"] == [100.0, 40.0, 160.0, 70.0]
    task = get_task("screenspot")
    truth = task.ground_truth(s, None)
    assert task.verify("(130, 55)", truth).correct and not task.verify("(170, 55)", truth).correct
    (t,), _ = samples_of(v2, "screenspot")
    assert t.metadata["benchmark"] == "ScreenSpot-V2" and t.boxes[0]["bbox"] == [10.0, 12.0, 30.0, 28.0]


def test_a_folder_of_released_files_and_bad_rows(tmp_path: Path) -> None:
    root = tmp_path / "DATA"
    released(root, "mix/a.jsonl", [
        {"id": "a", "image": "img/x.png", "conversations": conv("Left or right? (A) left (B) right", "left")},
        {"id": "b", "image": "img/x.png", "conversations": [{"from": "human", "value": "only a question"}]},
        {"id": "c", "image": "img/x.png", "conversations": conv("Up or down? (A) up (B) down", "sideways")},
    ], {"img/x.png": (20, 20)})
    got, errors = samples_of(root / "mix", "sat2", str(root))
    assert [s.id for s in got] == ["a", "c"]
    assert len(errors) == 1 and "a.jsonl:2" in errors[0].reason and "'conversations'" in errors[0].reason
    bad = got[1]
    with pytest.raises(ValueError, match="not one of the options"):  # kept as written; refused by the task's check
        get_task("sat2").check_sample(bad)


@pytest.mark.parametrize("query, options", [
    ("Q? Answer choices: ['a b', 'c']", ["a b", "c"]),
    ("Q?\nA. one\nB. two", ["one", "two"]),
    ("Q?\nA) one\nB) two\nC) three", ["one", "two", "three"]),
    ("Q? (A) x (B) y", ["x", "y"]),
    ("Q? Choices: red, blue", ["red", "blue"]),
    ("Describe the scene.", []),
    ("Q?\nB. one\nA. two", []),
])
def test_parse_options(query: str, options: list[str]) -> None:
    assert parse_options(query) == options


def test_benchmark_of_names_the_released_files() -> None:
    assert benchmark_of(Path("/d/web_grounding/ScreenSpot-Pro/screenspot_pro_test.jsonl")) == "ScreenSpot-Pro"
    assert benchmark_of(Path("/d/spatial_reasoning/blink/blink_validation.jsonl")) == "BLINK"
    assert benchmark_of(Path("/d/other/x.jsonl")) == ""
