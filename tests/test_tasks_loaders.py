"""Benchmark loaders on hand-written rows in each benchmark's REAL field layout (no bundled data used)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mcts_engine.samples import Sample, SampleError, compose_side_by_side, load_samples, to_xyxy


def png(w: int, h: int, color=(200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: Path, w: int, h: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png(w, h))


def split(items):
    items = list(items)
    return [i for i in items if isinstance(i, Sample)], [i for i in items if isinstance(i, SampleError)]


# --------------------------------------------------------------------------------------------
# Coordinates
# --------------------------------------------------------------------------------------------


def test_to_xyxy_conventions():
    assert to_xyxy([10, 20, 30, 40]) == [10, 20, 30, 40]
    assert to_xyxy([10, 20, 30, 40], fmt="xywh") == [10, 20, 40, 60]
    assert to_xyxy([0.1, 0.2, 0.5, 0.4], normalized=True, size=(200, 100)) == pytest.approx([20, 20, 100, 40])
    assert to_xyxy([30, 40, 10, 20]) == [10, 20, 30, 40]  # corners ordered
    for bad in ([1, 2, 3], [1, 1, 1, 5], ["a", 1, 2, 3], None):
        with pytest.raises(ValueError):
            to_xyxy(bad)
    with pytest.raises(ValueError, match="size"):
        to_xyxy([0.1, 0.1, 0.2, 0.2], normalized=True)


def test_compose_side_by_side_layout():
    a, b = Image.new("RGB", (100, 50), (255, 0, 0)), Image.new("RGB", (60, 80), (0, 0, 255))
    canvas, panels = compose_side_by_side([a, b], gap=16)
    assert canvas.size == (176, 80)
    assert panels == [[0, 15, 100, 65], [116, 0, 176, 80]]
    assert canvas.getpixel((50, 40)) == (255, 0, 0) and canvas.getpixel((150, 40)) == (0, 0, 255)
    assert canvas.getpixel((108, 40)) == (128, 128, 128)  # the gray bar


# --------------------------------------------------------------------------------------------
# BLINK (parquet, BLINK-Benchmark/BLINK columns)
# --------------------------------------------------------------------------------------------

IMAGE_T = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def write_blink(path: Path, rows: list[dict]) -> None:
    schema = pa.schema([
        ("idx", pa.string()), ("question", pa.string()), ("sub_task", pa.string()),
        ("image_1", IMAGE_T), ("image_2", IMAGE_T), ("image_3", IMAGE_T), ("image_4", IMAGE_T),
        ("choices", pa.list_(pa.string())), ("answer", pa.string()), ("prompt", pa.string()), ("explanation", pa.string()),
    ])
    full = [{"image_2": None, "image_3": None, "image_4": None, "prompt": "", "explanation": "", **r} for r in rows]
    pq.write_table(pa.Table.from_pylist(full, schema=schema), path)


def test_blink_rows_letters_and_multi_image(tmp_path):
    p = tmp_path / "val-00000-of-00001.parquet"
    write_blink(p, [
        {"idx": "val_Counting_1", "question": "How many blue floats are there?", "sub_task": "Counting",
         "image_1": {"bytes": png(40, 30), "path": None}, "choices": ["0", "3", "2", "1"], "answer": "(C)"},
        {"idx": "val_Multi-view_Reasoning_1", "question": "Is the camera moving left or right?", "sub_task": "Multi-view_Reasoning",
         "image_1": {"bytes": png(40, 30), "path": None}, "image_2": {"bytes": png(20, 50, (0, 0, 200)), "path": None},
         "choices": ["left", "right"], "answer": "(B)"},
        {"idx": "test_Counting_9", "question": "How many?", "sub_task": "Counting",
         "image_1": {"bytes": png(40, 30), "path": None}, "choices": ["1", "2"], "answer": "hidden"},
        {"idx": "val_bad_letter", "question": "Which?", "sub_task": "Jigsaw",
         "image_1": {"bytes": png(40, 30), "path": None}, "choices": ["a", "b"], "answer": "(D)"},
    ])
    ok, bad = split(load_samples(p, task="blink"))
    assert [s.id for s in ok] == ["val_Counting_1", "val_Multi-view_Reasoning_1"]
    one, two = ok
    assert one.answer == "2" and one.choices == ["0", "3", "2", "1"] and len(one.images) == 1
    assert one.metadata["sub_task"] == "Counting" and one.metadata["source_answer"] == "(C)"
    assert "composite" not in one.metadata
    # Two images → one side-by-side PNG; layout recorded.
    assert two.answer == "right" and len(two.images) == 1 and isinstance(two.images[0], bytes)
    comp = two.metadata["composite"]
    assert comp["n"] == 2 and comp["panels"] == [[0, 10, 40, 40], [56, 0, 76, 50]]
    assert Image.open(io.BytesIO(two.images[0])).size == (76, 50)
    reasons = {e.id: e.reason for e in bad}
    assert "hidden" in reasons["test_Counting_9"] and "row 2" in reasons["test_Counting_9"]
    assert "field 'answer'" in reasons["val_bad_letter"] and "row 3" in reasons["val_bad_letter"]


def test_blink_saved_with_datasets(tmp_path):
    """The HF layout (``Image`` features, ``None`` for absent images) through ``save_to_disk``."""
    import datasets

    feats = datasets.Features({
        "idx": datasets.Value("string"), "question": datasets.Value("string"), "sub_task": datasets.Value("string"),
        **{f"image_{k}": datasets.Image() for k in range(1, 5)},
        "choices": datasets.Sequence(datasets.Value("string")), "answer": datasets.Value("string"),
        "prompt": datasets.Value("string"), "explanation": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({
        "idx": ["val_Jigsaw_1", "val_Jigsaw_2"], "question": ["Which piece fits?", "Which piece fits?"],
        "sub_task": ["Jigsaw", "Jigsaw"], "image_1": [{"bytes": png(30, 20), "path": None}] * 2,
        "image_2": [None, {"bytes": png(30, 20), "path": None}], "image_3": [None, None], "image_4": [None, None],
        "choices": [["a", "b"], ["c", "d"]], "answer": ["(A)", "(B)"], "prompt": ["", ""], "explanation": ["", ""]},
        features=feats)
    datasets.DatasetDict({"val": ds}).save_to_disk(str(tmp_path / "blink"))
    ok, bad = split(load_samples(tmp_path / "blink"))
    assert not bad and [(s.id, s.answer) for s in ok] == [("val_Jigsaw_1", "a"), ("val_Jigsaw_2", "d")]
    assert "composite" not in ok[0].metadata and ok[1].metadata["composite"]["n"] == 2


# --------------------------------------------------------------------------------------------
# SAT (array/SAT parquet: image_bytes, answers as a string, two frames)
# --------------------------------------------------------------------------------------------


def test_sat_image_bytes_two_frames_and_string_answers(tmp_path):
    p = tmp_path / "SAT_static.parquet"
    rows = [
        {"image_bytes": [png(64, 48)], "question": "Is the chair left or right of the table?",
         "answers": "['left', 'right']", "correct_answer": "left", "question_type": "obj_pos"},
        {"image_bytes": [png(64, 48), png(64, 48, (0, 200, 0))], "question": "Did the camera rotate left or right?",
         "answers": "[rotated left, rotated right]", "correct_answer": "rotated right", "question_type": "ego_movement"},
    ]
    pq.write_table(pa.Table.from_pylist(rows), p)
    ok, bad = split(load_samples(p, task="sat2"))
    assert not bad and len(ok) == 2
    single, double = ok
    assert single.choices == ["left", "right"] and single.answer == "left" and "composite" not in single.metadata
    assert double.choices == ["rotated left", "rotated right"] and double.metadata["question_type"] == "ego_movement"
    assert double.metadata["composite"]["panels"] == [[0, 0, 64, 48], [80, 0, 144, 48]]
    assert Image.open(io.BytesIO(double.images[0])).size == (144, 48)
    from mcts_engine.tasks import get_task

    text = get_task("sat2").user_text(double)
    assert text.startswith("The picture shows 2 images side by side") and "Image 1, Image 2" in text


def test_sat_images_column_still_read_by_the_generic_rows(tmp_path):
    p = tmp_path / "sat.parquet"
    rows = [{"images": [{"bytes": png(32, 32), "path": None}], "question": "Q?", "answers": ["a", "b"],
             "correct_answer": "b", "question_type": "t"}]
    pq.write_table(pa.Table.from_pylist(rows), p)
    ok, bad = split(load_samples(p))
    assert not bad and ok[0].id == "sat-0" and ok[0].answer == "b"


# --------------------------------------------------------------------------------------------
# V*Bench (per-image JSON annotations, and test_questions.jsonl)
# --------------------------------------------------------------------------------------------


def test_vstar_folder_layout_boxes_xywh_and_shuffled_options(tmp_path):
    root = tmp_path / "vstar_bench"
    save_png(root / "direct_attributes" / "sa_4690.jpg", 300, 200)
    (root / "direct_attributes" / "sa_4690.json").write_text(json.dumps({
        "target_object": ["glove"], "bbox": [[100, 50, 20, 10]], "question": "What is the material of the glove?",
        "options": ["rubber", "cotton", "leather", "wool"], "height": 200, "width": 300}))
    save_png(root / "relative_position" / "sa_10.jpg", 300, 200)
    (root / "relative_position" / "sa_10.json").write_text(json.dumps({
        "target_object": ["cup", "dog"], "bbox": [[10, 10, 5, 5], [200, 100, 30, 40]],
        "question": "Is the cup on the left or right side of the dog?", "options": ["left", "right"]}))
    save_png(root / "relative_position" / "sa_11.jpg", 300, 200)  # annotation missing
    ok, bad = split(load_samples(root, task="vstar"))
    by = {s.id: s for s in ok}
    glove = by["direct_attributes/sa_4690"]
    assert glove.answer == "rubber" and sorted(glove.choices) == sorted(["rubber", "cotton", "leather", "wool"])
    assert glove.boxes == [{"label": "glove", "bbox": [100.0, 50.0, 120.0, 60.0], "source_bbox": [100, 50, 20, 10]}]
    assert glove.metadata["category"] == "direct_attributes"
    assert [glove.choices[i] for i in range(4)] == [["rubber", "cotton", "leather", "wool"][j] for j in glove.metadata["option_order"]]
    cup = by["relative_position/sa_10"]
    assert cup.boxes[1]["bbox"] == [200.0, 100.0, 230.0, 140.0] and cup.answer == "left"
    assert [e.id for e in bad] == ["relative_position/sa_11"] and "annotation file is missing" in bad[0].reason
    # Deterministic order: loading twice gives the same choices.
    again = {s.id: s for s in split(load_samples(root))[0]}
    assert again["direct_attributes/sa_4690"].choices == glove.choices


def test_vstar_test_questions_jsonl(tmp_path):
    root = tmp_path / "vstar"
    save_png(root / "direct_attributes" / "sa_1.jpg", 100, 100)
    (root / "direct_attributes" / "sa_1.json").write_text(json.dumps({"target_object": ["bag"], "bbox": [[1, 2, 3, 4]]}))
    rows = [
        {"image": "direct_attributes/sa_1.jpg", "text": "What is the color of the bag?\n(A) red\n(B) blue\n(C) white\n(D) black\n"
         "Answer with the option's letter from the given choices directly.", "category": "direct_attributes",
         "question_id": 0, "label": "B"},
        {"image": "direct_attributes/sa_1.jpg", "text": "No options here", "category": "direct_attributes", "question_id": 1, "label": "A"},
    ]
    (root / "test_questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ok, bad = split(load_samples(root / "test_questions.jsonl"))
    assert len(ok) == 1 and ok[0].id == "0"
    s = ok[0]
    assert s.question == "What is the color of the bag?" and s.choices == ["red", "blue", "white", "black"] and s.answer == "blue"
    assert s.boxes[0]["bbox"] == [1.0, 2.0, 4.0, 6.0]
    assert "test_questions.jsonl:2" in bad[0].reason and "options" in bad[0].reason
    assert [x.id for x in split(load_samples(root))[0]] == ["0"]  # the directory prefers test_questions.jsonl


# --------------------------------------------------------------------------------------------
# ScreenSpot v2 / Pro, OS-ATLAS
# --------------------------------------------------------------------------------------------


def test_screenspot_v2_xywh_and_platform_from_file(tmp_path):
    save_png(tmp_path / "screenspotv2_image" / "mobile_1.png", 100, 200)
    (tmp_path / "screenspot_mobile_v2.json").write_text(json.dumps([
        {"img_filename": "mobile_1.png", "bbox": [10, 20, 30, 40], "instruction": "open settings", "data_type": "icon", "data_source": "ios"},
        {"img_filename": "mobile_1.png", "bbox": [10, 20, 0, 40], "instruction": "empty box", "data_type": "text", "data_source": "ios"},
        {"img_filename": "mobile_1.png", "bbox": [1, 2, 3, 4], "instruction": "", "data_type": "text", "data_source": "ios"},
    ]))
    ok, bad = split(load_samples(tmp_path, task="screenspot"))
    assert len(ok) == 1
    s = ok[0]
    assert s.boxes == [{"label": "target", "bbox": [10.0, 20.0, 40.0, 60.0]}] and s.answer == "(25, 40)"
    assert s.metadata["platform"] == "mobile" and s.metadata["ui_type"] == "icon" and s.metadata["benchmark"] == "screenspot_v2"
    assert s.image_root == str(tmp_path / "screenspotv2_image") and s.question == "open settings"
    reasons = sorted(e.reason for e in bad)
    assert "row 1: field 'bbox'" in reasons[0] and "empty" in reasons[0]
    assert "row 2: field 'instruction' is missing" in reasons[1]


def test_screenspot_pro_annotations_xyxy(tmp_path):
    save_png(tmp_path / "images" / "vscode_macos" / "shot.png", 400, 300)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "vscode_macos.json").write_text(json.dumps([
        {"img_filename": "vscode_macos/shot.png", "bbox": [100, 50, 140, 70], "instruction": "refresh the explorer",
         "instruction_cn": "刷新", "id": "vscode_macos_0", "application": "vscode", "platform": "macos",
         "img_size": [400, 300], "ui_type": "icon", "group": "Dev"}]))
    ok, bad = split(load_samples(tmp_path))
    assert not bad and ok[0].id == "vscode_macos_0"
    assert ok[0].boxes[0]["bbox"] == [100.0, 50.0, 140.0, 70.0]
    assert {k: ok[0].metadata[k] for k in ("group", "ui_type", "application", "benchmark")} == {
        "group": "Dev", "ui_type": "icon", "application": "vscode", "benchmark": "screenspot_pro"}


def test_osatlas_normalized_boxes_use_the_image_size(tmp_path):
    save_png(tmp_path / "images" / "web_1.png", 200, 100)
    (tmp_path / "web_domain.json").write_text(json.dumps([
        {"img_filename": "web_1.png", "elements": [
            {"instruction": "the login button", "bbox": [0.1, 0.2, 0.3, 0.6]},
            {"instruction": "bad", "bbox": [0.5, 0.5, 0.5, 0.9]}]},
        {"img_filename": "missing.png", "elements": [{"instruction": "x", "bbox": [0.1, 0.1, 0.2, 0.2]}]},
    ]))
    ok, bad = split(load_samples(tmp_path / "web_domain.json", task="osatlas"))
    assert len(ok) == 1 and ok[0].id == "web_domain-00000-00"
    assert ok[0].boxes[0]["bbox"] == pytest.approx([20.0, 20.0, 60.0, 60.0])
    assert ok[0].metadata["source_bbox"] == [0.1, 0.2, 0.3, 0.6]
    reasons = " | ".join(e.reason for e in bad)
    assert "row 0 element 1: field 'bbox'" in reasons and "image not found" in reasons


# --------------------------------------------------------------------------------------------
# Web actions (set-of-marks JSONL)
# --------------------------------------------------------------------------------------------


def test_web_action_rows(tmp_path):
    save_png(tmp_path / "s.png", 100, 100)
    rows = [
        {"id": "w1", "image": "s.png", "intent": "Search for red shoes", "url": "http://x", "previous_actions": ["click [2]"],
         "action": "type [3] [red shoes] [1]",
         "elements": [{"id": 3, "bbox": [10, 10, 90, 20], "role": "textbox", "text": "Search"}, {"id": 2, "bbox": [0, 0, 5, 5]}]},
        {"id": "w2", "image": "s.png", "intent": "Go back", "action": "go_back"},
        {"id": "w3", "image": "s.png", "intent": "Click it", "action": "click [9]", "elements": [{"id": 3, "bbox": [1, 1, 2, 2]}]},
        {"id": "w4", "image": "s.png", "intent": "Do", "action": "dance [1]"},
    ]
    (tmp_path / "vwa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ok, bad = split(load_samples(tmp_path / "vwa.jsonl", task="web_action"))
    assert [s.id for s in ok] == ["w1", "w2"]
    s = ok[0]
    assert s.answer == "type [3] [red shoes] [1]" and s.boxes[0]["bbox"] == [10.0, 10.0, 90.0, 20.0]
    assert s.metadata["action_type"] == "type" and s.metadata["previous_actions"] == ["click [2]"]
    assert [e["id"] for e in s.metadata["elements"]] == ["3", "2"]
    assert ok[1].boxes == []
    reasons = {e.id: e.reason for e in bad}
    assert "element 9" in reasons["w3"] and "vwa.jsonl:3" in reasons["w3"]
    assert "not a web action" in reasons["w4"]


def test_plain_jsonl_is_left_to_the_generic_loader(tmp_path):
    save_png(tmp_path / "a.png", 10, 10)
    (tmp_path / "p.jsonl").write_text(json.dumps({"id": "x", "image": "a.png", "question": "q?", "answer": "a", "choices": ["a", "b"]}) + "\n")
    ok, bad = split(load_samples(tmp_path / "p.jsonl"))
    assert [s.id for s in ok] == ["x"] and not bad
