"""Sample loaders (bundled files and tmp fixtures), bad rows, image opening and encoding."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from mcts_engine.samples import (
    EncodedImage,
    Sample,
    SampleError,
    SampleLoadError,
    encode_image,
    image_hash,
    load_jsonl,
    load_samples,
    load_table,
    open_image,
    split_options,
)

REPO = Path(__file__).resolve().parent.parent
BUNDLED = REPO / "mcts_engine" / "sample_data" / "sat2_sample"


def png(w: int = 64, h: int = 48, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format="PNG")
    return buf.getvalue()


def write_jsonl(path: Path, rows: list[dict | str]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def split(items: list) -> tuple[list[Sample], list[SampleError]]:
    samples = [s for s in items if isinstance(s, Sample)]
    errors = [s for s in items if isinstance(s, SampleError)]
    assert len(samples) + len(errors) == len(items)
    return samples, errors


@pytest.fixture
def img_dir(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(png())
    (tmp_path / "images" / "b.png").write_bytes(png(32, 32, (0, 0, 255)))
    return tmp_path


# --------------------------------------------------------------------------------------------
# Bundled data
# --------------------------------------------------------------------------------------------


def test_bundled_plain_jsonl() -> None:
    samples, errors = split(list(load_samples(BUNDLED / "samples.jsonl", task="sat2")))
    assert not errors
    assert len(samples) >= 24
    assert len({s.id for s in samples}) == len(samples)
    kinds = {s.metadata.get("question_type") for s in samples}
    assert {"relative_position", "relative_depth"} <= kinds
    for s in samples:
        assert s.task == "sat2"
        assert s.choices and s.answer in s.choices
        assert len(s.images) == 1 and isinstance(s.images[0], str)
        img = open_image(s.images[0], s.image_root)
        assert s.boxes
        labels = [b["label"] for b in s.boxes]
        assert len(set(labels)) == len(labels)
        for b in s.boxes:
            x1, y1, x2, y2 = b["bbox"]
            assert 0 <= x1 < x2 <= img.width and 0 <= y1 < y2 <= img.height, (s.id, b)
        # The objects the question names are annotated.
        named = [lab for lab in labels if lab in s.question]
        assert named, s.id


def test_bundled_answers_are_balanced() -> None:
    samples = [s for s in load_samples(BUNDLED / "samples.jsonl") if isinstance(s, Sample)]
    for qtype in {s.metadata["question_type"] for s in samples}:
        of_type = [s for s in samples if s.metadata["question_type"] == qtype]
        positions = {s.choices.index(s.answer) for s in of_type}
        assert len(positions) > 1, f"{qtype}: every answer is option {positions}"


def test_bundled_vigorl_jsonl() -> None:
    samples, errors = split(list(load_samples(BUNDLED / "vigorl.jsonl")))
    assert not errors and len(samples) >= 4
    plain = {s.id: s for s in load_samples(BUNDLED / "samples.jsonl") if isinstance(s, Sample)}
    for s in samples:
        assert "<image>" not in s.question
        # Options are parsed back out of the question text and match the plain file's.
        assert s.choices == plain[s.id].choices
        assert s.answer == plain[s.id].answer
        assert open_image(s.images[0], s.image_root).size == open_image(plain[s.id].images[0], plain[s.id].image_root).size


def test_bundled_sat_parquet() -> None:
    samples, errors = split(list(load_samples(BUNDLED / "sat_schema.parquet")))
    assert not errors and len(samples) >= 4
    for s in samples:
        assert isinstance(s.images[0], bytes)
        assert open_image(s.images[0]).mode == "RGB"
        assert s.answer in s.choices
        assert s.metadata.get("question_type")
    assert len({s.id for s in samples}) == len(samples)


# --------------------------------------------------------------------------------------------
# ViGoRL JSONL
# --------------------------------------------------------------------------------------------


def test_vigorl_jsonl_fixture(img_dir: Path) -> None:
    f = write_jsonl(img_dir / "v.jsonl", [
        {"id": "q1", "image": "images/a.png", "conversations": [
            {"from": "human", "value": "<image>\nIs the ball left or right of the box?\n(A) left\n(B) right"},
            {"from": "gpt", "value": "<think> ... </think> <answer> right </answer>"}]},
        {"id": "q2", "image": "images/b.png", "conversations": [
            {"from": "human", "value": "<image>Which is closer? Choices: the red chair, the blue box"},
            {"from": "gpt", "value": "the blue box"}]},
        {"id": "q3", "image": "images/b.png", "conversations": [
            {"from": "human", "value": "How many chairs?"}, {"from": "gpt", "value": "3"}]},
    ])
    samples, errors = split(list(load_jsonl(f, task="sat2")))
    assert not errors
    s1, s2, s3 = samples
    assert s1.question.startswith("Is the ball") and "<image>" not in s1.question
    assert s1.choices == ["left", "right"] and s1.answer == "right"
    assert s2.choices == ["the red chair", "the blue box"] and s2.answer == "the blue box"
    assert s3.choices == [] and s3.answer == "3"
    # image paths resolve against the file's folder by default, or an explicit root.
    assert open_image(s1.images[0], s1.image_root).size == (64, 48)
    other = list(load_jsonl(f, image_root=str(img_dir / "nowhere")))
    with pytest.raises(ValueError, match="image not found"):
        open_image(other[0].images[0], other[0].image_root)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "question, options",
    [
        ("Where? (A) left (B) right", ["left", "right"]),
        ("Where?\n(A) turn left\n(B) go straight\n(C) turn right", ["turn left", "go straight", "turn right"]),
        ("Where? Options: left, right", ["left", "right"]),
        ("Where? choices: up; down.", ["up", "down"]),
        ("Is it left or right?", []),
        ("Where? (A) only one", []),
    ],
)
def test_split_options(question: str, options: list[str]) -> None:
    assert split_options(question) == options


# --------------------------------------------------------------------------------------------
# Plain JSONL
# --------------------------------------------------------------------------------------------


def test_plain_jsonl_image_images_bbox_boxes(img_dir: Path) -> None:
    f = write_jsonl(img_dir / "p.jsonl", [
        {"id": "a", "image": "images/a.png", "question": "q?", "answer": "left", "choices": ["left", "right"],
         "bbox": [1, 2, 30, 40], "question_type": "relative_position"},
        {"id": "b", "images": ["images/a.png", "images/b.png"], "question": "q?", "answer": "B", "choices": ["x", "y"],
         "boxes": [{"label": "red ball", "bbox": [0, 0, 5, 5]}, [1, 1, 2, 2]]},
        {"id": "c", "image": str(img_dir / "images" / "b.png"), "question": "free?", "answer": 7},
        {"question": "no id", "image": "images/a.png", "answer": "x", "options": ["x", "z"]},
    ])
    samples, errors = split(list(load_samples(f, task="t")))
    assert not errors
    a, b, c, d = samples
    assert a.images == ["images/a.png"]
    assert a.boxes == [{"label": "target", "bbox": [1.0, 2.0, 30.0, 40.0]}]
    assert a.metadata == {"question_type": "relative_position"}
    assert b.images == ["images/a.png", "images/b.png"]
    assert b.boxes == [{"label": "red ball", "bbox": [0.0, 0.0, 5.0, 5.0]}, {"label": "box1", "bbox": [1.0, 1.0, 2.0, 2.0]}]
    assert b.answer == "B"
    assert c.answer == "7" and c.choices == []
    assert open_image(c.images[0], c.image_root).size == (32, 32)  # absolute path ignores the root
    assert d.id == "p-4" and d.choices == ["x", "z"]
    rec = b.to_record()
    assert json.loads(json.dumps(rec)) == rec


def test_plain_jsonl_single_image_string_in_images_field(img_dir: Path) -> None:
    f = write_jsonl(img_dir / "p.jsonl", [{"id": "a", "images": "images/a.png", "question": "q?", "answer": "x"}])
    (s,) = list(load_jsonl(f))
    assert isinstance(s, Sample)
    assert s.images == ["images/a.png"]


def test_blank_lines_are_skipped(img_dir: Path) -> None:
    f = write_jsonl(img_dir / "p.jsonl", ["", json.dumps({"id": "a", "image": "images/a.png", "question": "q", "answer": "x"}), "  "])
    assert [s.id for s in load_jsonl(f)] == ["a"]


@pytest.mark.parametrize(
    "row, field",
    [
        ('{"id": "a", "image": "images/a.png", "question": "q", "answer": ', "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ({"id": "a", "image": "images/a.png", "question": "q"}, "'answer'"),
        ({"id": "a", "image": "images/a.png", "question": "q", "answer": "  "}, "'answer'"),
        ({"id": "a", "question": "q", "answer": "x"}, "'image'"),
        ({"id": "a", "images": [], "question": "q", "answer": "x"}, "'image'"),
        ({"id": "a", "images": ["images/a.png", None], "question": "q", "answer": "x"}, "'image'"),
        ({"id": "a", "images": 5, "question": "q", "answer": "x"}, "'images'"),
        ({"id": "a", "image": "images/a.png", "answer": "x"}, "'question'"),
        ({"id": "a", "image": "images/a.png", "question": "q", "answer": "x", "bbox": [1, 2, 3]}, "'boxes[0]'"),
        ({"id": "a", "image": "images/a.png", "question": "q", "answer": "x", "boxes": [{"bbox": [1, 2, "3", 4]}]}, "'boxes[0]'"),
        ({"id": "a", "image": "images/a.png", "question": "q", "answer": "x", "boxes": [{"label": "x"}]}, "'boxes[0]'"),
        ({"id": "a", "image": "images/a.png", "question": "q", "answer": "x", "choices": "left, right"}, "'choices'"),
        ({"id": "a", "image": "images/a.png", "conversations": [{"from": "human", "value": "q"}]}, "'conversations'"),
        ({"id": "a", "image": "images/a.png", "conversations": ["q", "a"]}, "'conversations'"),
        ({"id": "a", "conversations": [{"value": "q"}, {"value": "a"}]}, "'image'"),
    ],
)
def test_bad_rows_become_sample_errors_naming_file_row_and_field(img_dir: Path, row: dict | str, field: str) -> None:
    good = {"id": "ok", "image": "images/a.png", "question": "q", "answer": "x"}
    f = write_jsonl(img_dir / "bad.jsonl", [good, row, good | {"id": "ok2"}])
    out = list(load_jsonl(f))
    assert len(out) == 3
    assert isinstance(out[0], Sample) and isinstance(out[2], Sample)  # the run goes on after a bad row
    err = out[1]
    assert isinstance(err, SampleError)
    assert "bad.jsonl:2" in err.reason
    assert field in err.reason
    assert "\n" not in err.reason
    assert str(err).startswith(f"{err.id}: ")


def test_load_samples_dispatch_errors(tmp_path: Path) -> None:
    with pytest.raises(SampleLoadError, match="no such file"):
        load_samples(tmp_path / "missing.jsonl")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(SampleLoadError, match="unsupported"):
        load_samples(tmp_path / "x.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SampleLoadError, match="no parquet"):
        list(load_samples(tmp_path / "empty"))


def test_directory_of_jsonl_files(img_dir: Path) -> None:
    d = img_dir / "set"
    d.mkdir()
    write_jsonl(d / "1.jsonl", [{"id": "a", "image": str(img_dir / "images/a.png"), "question": "q", "answer": "x"}])
    write_jsonl(d / "2.jsonl", [{"id": "b", "image": str(img_dir / "images/b.png"), "question": "q", "answer": "y"}])
    assert [s.id for s in load_samples(d)] == ["a", "b"]


# --------------------------------------------------------------------------------------------
# Parquet and datasets (SAT schema)
# --------------------------------------------------------------------------------------------


def _sat_columns(img_dir: Path) -> dict[str, list]:
    return {
        "images": [[{"bytes": png(), "path": "a.png"}], [{"bytes": None, "path": "images/b.png"}],
                   [{"bytes": png(20, 20), "path": None}, {"bytes": png(10, 10), "path": None}]],
        "question": ["left or right?", "closer?", "two images?"],
        "answers": [["left", "right"], ["chair", "box"], ["yes", "no"]],
        "correct_answer": ["right", "box", "no"],
        "question_type": ["relative_position", "relative_depth", "ego_movement"],
    }


def test_parquet_sat_schema_with_bytes_and_paths(img_dir: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = _sat_columns(img_dir)
    pq.write_table(pa.table(cols), img_dir / "sat.parquet")
    samples, errors = split(list(load_table(img_dir / "sat.parquet", task="sat2")))
    assert not errors and len(samples) == 3
    # The dispatching entry point reads the same rows (it may compose multi-image items into one).
    via_dispatch = [s for s in load_samples(img_dir / "sat.parquet", task="sat2") if isinstance(s, Sample)]
    assert [(s.id, s.answer, s.choices) for s in via_dispatch] == [(s.id, s.answer, s.choices) for s in samples]
    a, b, c = samples
    assert a.id == "sat-0" and a.choices == ["left", "right"] and a.answer == "right"
    assert isinstance(a.images[0], bytes) and open_image(a.images[0]).size == (64, 48)
    assert b.images == ["images/b.png"] and open_image(b.images[0], b.image_root).size == (32, 32)
    assert len(c.images) == 2 and open_image(c.images[1]).size == (10, 10)
    assert a.metadata == {"question_type": "relative_position"}
    assert a.to_record()["images"][0].startswith("bytes:")


def test_parquet_bad_rows(img_dir: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "images": [[{"bytes": png(), "path": None}], None, [{"bytes": None, "path": None}], [{"bytes": png(), "path": None}]],
        "question": ["q", "q", "q", "q"],
        "answers": [["a", "b"]] * 4,
        "correct_answer": ["a", "a", "a", None],
    })
    pq.write_table(table, img_dir / "bad.parquet")
    out = list(load_table(img_dir / "bad.parquet"))
    assert isinstance(out[0], Sample)
    for i, field in [(1, "'images'"), (2, "'images'"), (3, "'answer'")]:
        assert isinstance(out[i], SampleError), out[i]
        assert f"bad.parquet row {i}" in out[i].reason and field in out[i].reason  # type: ignore[union-attr]


def test_parquet_directory(img_dir: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = img_dir / "pq"
    d.mkdir()
    cols = _sat_columns(img_dir)
    for i in range(2):
        pq.write_table(pa.table({k: v[:1] for k, v in cols.items()}), d / f"part-{i}.parquet")
    assert [s.id for s in load_samples(d)] == ["part-0-0", "part-1-0"]


def test_datasets_save_to_disk(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict, Features, List, Value
    from datasets import Image as HFImage

    feats = Features({
        "images": List(HFImage()),
        "question": Value("string"),
        "answers": List(Value("string")),
        "correct_answer": Value("string"),
        "question_type": Value("string"),
    })
    ds = Dataset.from_dict({
        "images": [[{"bytes": png(), "path": None}], [{"bytes": png(30, 20), "path": None}]],
        "question": ["left or right?", "closer?"],
        "answers": [["left", "right"], ["chair", "box"]],
        "correct_answer": ["left", "chair"],
        "question_type": ["relative_position", "relative_depth"],
    }, features=feats)
    ds.save_to_disk(str(tmp_path / "ds"))
    samples, errors = split(list(load_samples(tmp_path / "ds")))
    assert not errors and [s.answer for s in samples] == ["left", "chair"]
    assert isinstance(samples[1].images[0], bytes) and open_image(samples[1].images[0]).size == (30, 20)
    assert samples[0].choices == ["left", "right"]

    DatasetDict({"train": ds, "test": ds.select([1])}).save_to_disk(str(tmp_path / "dd"))
    samples, errors = split(list(load_samples(tmp_path / "dd")))
    assert not errors and [s.answer for s in samples] == ["left", "chair", "chair"]


def test_datasets_single_image_column_decoded(tmp_path: Path) -> None:
    from datasets import Dataset, Features, Value
    from datasets import Image as HFImage

    feats = Features({"image": HFImage(), "question": Value("string"), "answer": Value("string")})
    ds = Dataset.from_dict({"image": [{"bytes": png(16, 12), "path": None}], "question": ["q"], "answer": ["x"]}, features=feats)
    ds.save_to_disk(str(tmp_path / "ds1"))
    (s,) = list(load_samples(tmp_path / "ds1"))
    assert isinstance(s, Sample)
    assert open_image(s.images[0]).size == (16, 12)


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def test_open_image_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as exc:
        open_image("nope.png", str(tmp_path))
    msg = str(exc.value)
    assert "image not found" in msg and "nope.png" in msg and "\n" not in msg


@pytest.mark.parametrize("data", [b"", b"not an image at all", png()[:40]])
def test_open_image_corrupt_bytes_and_files(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(ValueError) as exc:
        open_image(data)
    assert "cannot read image" in str(exc.value) and "\n" not in str(exc.value)
    (tmp_path / "bad.png").write_bytes(data)
    with pytest.raises(ValueError) as exc2:
        open_image("bad.png", str(tmp_path))
    assert "bad.png" in str(exc2.value) and "\n" not in str(exc2.value)


def test_open_image_converts_to_rgb() -> None:
    buf = io.BytesIO()
    Image.new("RGBA", (8, 8), (1, 2, 3, 4)).save(buf, format="PNG")
    assert open_image(buf.getvalue()).mode == "RGB"
    buf = io.BytesIO()
    Image.new("L", (8, 8), 7).save(buf, format="PNG")
    assert open_image(buf.getvalue()).mode == "RGB"


@pytest.mark.parametrize("size, max_pixels", [((640, 480), 1280 * 28 * 28), ((1920, 1080), 256 * 28 * 28),
                                              ((100, 700), 64 * 28 * 28), ((20, 20), 1280 * 28 * 28)])
@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_encode_image_frame(size: tuple[int, int], max_pixels: int, fmt: str) -> None:
    img = Image.new("RGB", size, (10, 200, 30))
    enc, resized = encode_image(img, max_pixels=max_pixels, fmt=fmt)
    assert isinstance(enc, EncodedImage)
    f = enc.frame
    assert f.width % 28 == 0 and f.height % 28 == 0
    assert f.width * f.height <= max_pixels
    assert (f.orig_width, f.orig_height) == size
    assert resized.size == (f.width, f.height)
    assert Image.open(io.BytesIO(enc.data)).size == (f.width, f.height)
    assert enc.mime == f"image/{fmt}"
    assert enc.data_url.startswith(f"data:image/{fmt};base64,")
    # Encoding is deterministic: the key identifies the content.
    assert encode_image(img, max_pixels=max_pixels, fmt=fmt)[0].key == enc.key


def test_encode_image_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown image format"):
        encode_image(Image.new("RGB", (56, 56)), max_pixels=10_000, fmt="gif")


def test_image_hash_same_for_path_and_bytes(img_dir: Path) -> None:
    data = (img_dir / "images" / "a.png").read_bytes()
    assert image_hash("images/a.png", str(img_dir)) == image_hash(data)
    assert image_hash(data) != image_hash(png(32, 32, (0, 0, 255)))
