"""Bad input never stops a run: one test per bad-input case (docs/input-data.md)."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcts_engine.cli import app
from mcts_engine.config import ConfigError, InputConfig, RunConfig, build_run_config, validate_run_config
from mcts_engine.export.config import ExportConfig
from mcts_engine.export.run import export_run
from mcts_engine.samples import Sample, SampleError, load_samples, load_table, open_image
from mcts_engine.samples.options import parse_options, question_stem, split_options
from mcts_engine.testing.synthetic_runs import add_cache, make_image, make_run, rich_tree

runner = CliRunner()
BUNDLED = Path(__file__).resolve().parent.parent / "mcts_engine" / "sample_data" / "sat2_sample"


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (no pixel data worth the name): a bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def row(sid: str, image: str, question: str = "Is the purple chair to the left or right of the red chair?") -> dict:
    return {"id": sid, "image": image, "question": question, "answer": "left", "choices": ["left", "right"],
            "boxes": [{"label": "purple chair", "bbox": [217, 195, 268, 279]}]}


def write_jsonl(path: Path, lines: list[dict | bytes]) -> Path:
    with path.open("wb") as fh:
        for line in lines:
            fh.write((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n")
    return path


def one_line_error(res, *needles: str) -> str:
    """The CLI said exactly one ``error:`` line (exit 2, no traceback) containing ``needles``."""
    out = res.output
    assert res.exit_code == 2, out
    assert "Traceback" not in out and not isinstance(res.exception, (TypeError, AttributeError, KeyError))
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


# --------------------------------------------------------------------------------------------
# Option layouts: one parser, table-tested
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, options, stem",
    [
        ("Where? (A) left (B) right", ["left", "right"], "Where?"),
        ("Where?\n(A) turn left\n(B) go straight\n(C) turn right", ["turn left", "go straight", "turn right"], "Where?"),
        ("Which side?\nAnswer Choices:\nA. left\nB. right", ["left", "right"], "Which side?"),
        ("Which side?\nOptions:\nA) left\nB) right\nAnswer with the letter.", ["left", "right"], "Which side?"),
        ("Which side?\nChoices:\n(A) left\n(B) right", ["left", "right"], "Which side?"),
        ("Which side?\nA. left\nB. right", ["left", "right"], "Which side?"),
        ("Which side? Options: A. left B. right", ["left", "right"], "Which side?"),
        ("Which side? Answer choices: A) left B) right C) neither", ["left", "right", "neither"], "Which side?"),
        ("A. left B. right", ["left", "right"], ""),
        ("Which? Choices: (A) cat (B) dog", ["cat", "dog"], "Which?"),
        ("Which?\nOptions: (A) cat\n(B) dog\nAnswer with the letter.", ["cat", "dog"], "Which?"),
        ("Which?\nOptions: A. cat\nB. dog", ["cat", "dog"], "Which?"),
        ("Where? Options: left, right", ["left", "right"], "Where?"),
        ("Where? choices: up; down.", ["up", "down"], "Where?"),
        ("Which colour?\nOptions:\n- red\n- blue", ["red", "blue"], "Which colour?"),
        ("Which? (A) left (of the box) (B) right", ["left (of the box)", "right"], "Which?"),
        ("Which side?\nA: left\nB: right", ["left", "right"], "Which side?"),
        ("Which side? Choices: ['left', 'right']", ["left", "right"], "Which side?"),
        ('Which side?\nAnswer choices: ["left of the cup",\n "right of it"]', ["left of the cup", "right of it"], "Which side?"),
        ("Which? Options: [x, y]", ["x", "y"], "Which?"),  # unquoted: read as the comma list inside
        # not options
        ("Is it left or right?", [], "Is it left or right?"),
        ("Where? (A) only one", [], "Where? (A) only one"),
        ("Which? (A) x (C) y", [], "Which? (A) x (C) y"),
        ("Take vitamin A. Then B. is fine", [], "Take vitamin A. Then B. is fine"),
        ("What is the answer to part B. of question A. here?", [], "What is the answer to part B. of question A. here?"),
    ],
)
def test_option_layouts(text: str, options: list[str], stem: str) -> None:
    assert split_options(text) == options
    assert question_stem(text) == stem
    assert (parse_options(text) is None) == (not options)


def test_vigorl_answer_choices_lines_parse_into_options(tmp_path: Path) -> None:
    """The reported case: `Answer Choices:` then `A. left` / `B. right` lines gave zero options."""
    make_image(tmp_path / "a.png")
    q = "<image>\nIs the cup left or right of the plate?\nAnswer Choices:\nA. left\nB. right"
    f = write_jsonl(tmp_path / "v.jsonl", [{"id": "v0", "image": "a.png", "conversations": [
        {"from": "human", "value": q}, {"from": "gpt", "value": "<answer> left </answer>"}]}])
    (s,) = list(load_samples(f))
    assert isinstance(s, Sample) and s.choices == ["left", "right"]


# --------------------------------------------------------------------------------------------
# Image paths stay inside their root
# --------------------------------------------------------------------------------------------


@pytest.fixture
def escaping_data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    make_image(data / "images" / "ok.png")
    make_image(tmp_path / "outside.png", seed=1)
    (data / "images" / "link.png").symlink_to(tmp_path / "outside.png")
    return write_jsonl(data / "samples.jsonl", [
        row("ok", "images/ok.png"),
        row("dotdot", "../outside.png"),
        row("absolute", str(tmp_path / "outside.png")),
        row("symlink", "images/link.png"),
        row("inside-abs", str(data / "images" / "ok.png")),
    ])


def test_image_paths_outside_the_root_are_refused_naming_file_line_and_field(escaping_data: Path) -> None:
    items = {i.id: i for i in load_samples(escaping_data)}
    assert isinstance(items["ok"], Sample) and isinstance(items["inside-abs"], Sample)
    for sid, line in (("dotdot", 2), ("absolute", 3), ("symlink", 4)):
        err = items[sid]
        assert isinstance(err, SampleError), sid
        assert err.reason.startswith(f"samples.jsonl:{line}: field 'image': path ")
        assert "outside the image root" in err.reason and "--allow-outside-root" in err.reason
        assert "\n" not in err.reason


def test_image_root_flag_moves_the_root_and_the_allow_flag_lifts_the_rule(escaping_data: Path) -> None:
    allowed = list(load_samples(escaping_data, inputs=InputConfig(allow_outside_root=True)))
    assert all(isinstance(i, Sample) for i in allowed)
    img = open_image(allowed[1].images[0], allowed[1].image_root, InputConfig(allow_outside_root=True))
    assert img.size == (300, 200)
    # --image-root one folder up: the absolute path and the symlink's target now lie inside the root
    root = escaping_data.parent.parent
    items = {i.id: i for i in load_samples(escaping_data, image_root=str(root))}
    assert isinstance(items["absolute"], Sample) and isinstance(items["symlink"], Sample)


def test_opening_an_image_re_checks_the_root(tmp_path: Path) -> None:
    """The frame preparation checks too (a sample built in code, a path swapped after loading)."""
    make_image(tmp_path / "outside.png")
    (tmp_path / "root").mkdir()
    with pytest.raises(ValueError, match="outside the image root"):
        open_image("../outside.png", str(tmp_path / "root"))
    assert open_image("../outside.png", str(tmp_path / "root"), InputConfig(allow_outside_root=True)).size == (300, 200)


def test_allow_outside_root_is_a_generate_flag_and_a_config_key() -> None:
    assert build_run_config({}, [], inputs__allow_outside_root=True).inputs.allow_outside_root
    assert build_run_config({}, ["inputs.allow_outside_root=true"]).inputs.allow_outside_root
    assert build_run_config({"inputs": {"allow_outside_root": True}}, []).inputs.allow_outside_root
    assert not build_run_config({}, []).inputs.allow_outside_root
    assert RunConfig().hash() == build_run_config({}, ["inputs.max_question_chars=10"]).hash()  # resume accepts it


# --------------------------------------------------------------------------------------------
# Decoded size and text bounded
# --------------------------------------------------------------------------------------------


def test_decompression_bomb_is_a_one_line_failure(tmp_path: Path) -> None:
    (tmp_path / "bomb.png").write_bytes(png_header(60_000, 60_000))  # 3.6 G pixels claimed, 60 bytes on disk
    with pytest.raises(ValueError, match="too large to decode") as exc:
        open_image("bomb.png", str(tmp_path))
    assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match="too large to decode"):
        open_image(png_header(60_000, 60_000))  # as bytes (a parquet cell)


def test_configured_pixel_bound_refuses_before_decoding(tmp_path: Path) -> None:
    (tmp_path / "big.png").write_bytes(png_header(15_000, 10_000))  # 150 MP: under Pillow's bound
    with pytest.raises(ValueError, match=r"15000x10000 = 150,000,000 pixels, over inputs.max_image_pixels 100,000,000"):
        open_image("big.png", str(tmp_path), InputConfig(max_image_pixels=100_000_000))
    make_image(tmp_path / "small.png")  # 300x200 = 60,000 px
    with pytest.raises(ValueError, match="over inputs.max_image_pixels 50,000"):
        open_image("small.png", str(tmp_path), InputConfig(max_image_pixels=50_000))


def test_over_long_question_is_a_failure_naming_the_row(tmp_path: Path) -> None:
    make_image(tmp_path / "a.png")
    f = write_jsonl(tmp_path / "s.jsonl", [row("long", "a.png", question="Is it left? " * 6000), row("ok", "a.png")])
    long, ok = list(load_samples(f))
    assert isinstance(long, SampleError) and isinstance(ok, Sample)
    assert long.reason == "s.jsonl:1: field 'question' is 72,000 characters, over inputs.max_question_chars 65,536"
    f2 = write_jsonl(tmp_path / "c.jsonl", [{**row("opt", "a.png"), "choices": ["left", "x" * 5000]}])
    (err,) = list(load_samples(f2))
    assert isinstance(err, SampleError) and "field 'choices[1]' is 5,000 characters" in err.reason
    (fine,) = list(load_samples(f, inputs=InputConfig(max_question_chars=100_000)))[:1]
    assert isinstance(fine, Sample)


def test_over_long_line_is_a_failure_and_the_next_line_is_read(tmp_path: Path) -> None:
    make_image(tmp_path / "a.png")
    big = {**row("big", "a.png"), "pad": "y" * 5000}
    f = write_jsonl(tmp_path / "s.jsonl", [big, row("ok", "a.png")])
    first, second = list(load_samples(f, inputs=InputConfig(max_row_bytes=1000)))
    assert isinstance(first, SampleError) and first.reason == "s.jsonl:1: line is longer than inputs.max_row_bytes 1,000"
    assert isinstance(second, Sample) and second.id == "ok"


# --------------------------------------------------------------------------------------------
# Undecodable rows: a failure naming file:line, the run goes on (end to end with the sim teacher)
# --------------------------------------------------------------------------------------------


def test_bad_rows_fail_alone_and_the_run_finishes_the_others(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    for i in range(3):
        shutil.copy(BUNDLED / "images" / "sat2_000.png", data / "images" / f"s{i}.png")
    shutil.copy(BUNDLED / "images" / "sat2_000.png", tmp_path / "outside.png")
    (data / "images" / "bomb.png").write_bytes(png_header(60_000, 60_000))
    write_jsonl(data / "samples.jsonl", [
        row("good0", "images/s0.png"),
        b'{"id": "latin1", "image": "images/s1.png", "question": "caf\xe9 left or right?", "answer": "left"}',
        row("good1", "images/s1.png"),
        b'{"id": "broken", "image": ',
        row("escape", "../outside.png"),
        row("bomb", "images/bomb.png"),
        row("good2", "images/s2.png"),
    ])
    out = tmp_path / "run"
    res = runner.invoke(app, ["generate", "--no-progress", "--task", "sat2", "--data", str(data / "samples.jsonl"),
                              "--teacher", "sim", "--out", str(out), "--set", "search.simulations=2"])
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    done = {json.loads(line)["sample_id"] for line in (out / "trees.jsonl").read_text().splitlines()}
    assert done == {"good0", "good1", "good2"}
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    reasons = " | ".join(f["reason"] for f in failures)
    assert len(failures) == 4 and all("\n" not in f["reason"] for f in failures)
    assert "samples.jsonl:2: not UTF-8 text (byte 0xe9" in reasons
    assert "samples.jsonl:4: not valid JSON" in reasons
    assert "samples.jsonl:5: field 'image': path '../outside.png' resolves outside the image root" in reasons
    assert "image images/bomb.png is too large to decode" in reasons
    # rerun with the flag: the escaping row is searched too (the others stay done, the bad rows fail again)
    res = runner.invoke(app, ["generate", "--no-progress", "--task", "sat2", "--data", str(data / "samples.jsonl"),
                              "--teacher", "sim", "--out", str(out), "--set", "search.simulations=2", "--allow-outside-root"])
    assert res.exit_code == 0, res.output
    done = {json.loads(line)["sample_id"] for line in (out / "trees.jsonl").read_text().splitlines()}
    assert done == {"good0", "good1", "good2", "escape"}


def test_unreadable_parquet_file_is_a_failure_and_the_other_files_load(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    make_image(tmp_path / "a.png")
    table = pa.table({"id": ["p0", "p1"], "images": [["a.png"], ["a.png"]], "question": ["Left or right?"] * 2,
                      "answers": [["left", "right"]] * 2, "correct_answer": ["left", "left"]})
    pq.write_table(table, tmp_path / "a.parquet")
    (tmp_path / "b.parquet").write_bytes(b"PAR1 this is not a parquet file PAR1")
    items = list(load_table(tmp_path))
    assert [i.id for i in items if isinstance(i, Sample)] == ["p0", "p1"]
    (err,) = [i for i in items if isinstance(i, SampleError)]
    assert err.reason.startswith("b.parquet row 0: this row and the rest of the file cannot be read (")


def test_parquet_row_with_bad_utf8_fails_alone(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    make_image(tmp_path / "a.png")
    question = pa.array([b"Left or right?", b"caf\xe9 left or right?", b"Left or right?"], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"id": ["p0", "p1", "p2"], "images": [["a.png"]] * 3, "question": question,
                             "answers": [["left", "right"]] * 3, "correct_answer": ["left"] * 3}), tmp_path / "u.parquet")
    items = list(load_samples(tmp_path / "u.parquet"))
    assert [i.id for i in items if isinstance(i, Sample)] == ["p0", "p2"]
    (err,) = [i for i in items if isinstance(i, SampleError)]
    assert err.id == "u-1" and err.reason.startswith("u.parquet row 1: cannot be read (UnicodeDecodeError")


# --------------------------------------------------------------------------------------------
# Export reads only inside the run directory (and sources inside their image root)
# --------------------------------------------------------------------------------------------


def test_export_skips_a_tree_whose_image_file_escapes_the_run_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    src = make_image(data / "img0.png")
    trees = []
    for sid, name in (("good", None), ("dotdot", "../../etc/passwd"), ("absolute", "/etc/passwd")):
        t = rich_tree(sid, "img0.png")
        add_cache(t, tmp_path / "run", src)
        if name:
            t.images[0]["file"] = name
        trees.append(t)
    src_escape = rich_tree("source-escape", "../outside.png")  # no cache: the source is read, inside its root only
    make_image(tmp_path / "outside.png")
    trees.append(src_escape)
    run = make_run(tmp_path, trees, data=str(data / "samples.jsonl"))
    res = export_run(run, tmp_path / "out", kinds=["sft"], cfg=ExportConfig(val_fraction=0.0))
    assert res.samples_exported == 1
    skipped = {s["id"]: s["reason"] for s in res.skipped_records}
    assert "resolves outside the run directory" in skipped["dotdot"] and "'../../etc/passwd'" in skipped["dotdot"]
    assert "resolves outside the run directory" in skipped["absolute"]
    assert "resolves outside the image root" in skipped["source-escape"]
    assert all("\n" not in r for r in skipped.values())
    allowed = export_run(run, tmp_path / "out2", kinds=["sft"], cfg=ExportConfig(val_fraction=0.0), allow_outside_root=True)
    assert allowed.samples_exported == 2  # the source may leave its root now; run-dir files never may


def test_export_out_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_image(data / "img0.png")
    run = make_run(tmp_path, [rich_tree("s0", "img0.png")], data=str(data / "samples.jsonl"))
    target = tmp_path / "file.txt"
    target.write_text("x")
    one_line_error(runner.invoke(app, ["export", "--run", str(run), "--out", str(target)]), "--out", "existing file")
    below = target / "sub"
    one_line_error(runner.invoke(app, ["export", "--run", str(run), "--out", str(below)]), "cannot write")
    one_line_error(runner.invoke(app, ["export", "--run", str(run), "--limit", "0"]), "--limit", "≥ 1")


# --------------------------------------------------------------------------------------------
# Bad recipes and non-positive values: one line, exit 2, before any work
# --------------------------------------------------------------------------------------------


def test_recipe_section_that_is_not_a_mapping_is_one_line(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("task: sat2\nsearch: 5\n")
    out = tmp_path / "run"
    res = runner.invoke(app, ["generate", "--no-progress", "--recipe", str(recipe), "--out", str(out)])
    one_line_error(res, "config.search", "must be a mapping")
    assert not out.exists()
    with pytest.raises(ConfigError, match="config.teacher: must be a mapping"):
        build_run_config({"teacher": [1, 2]}, [])


@pytest.mark.parametrize(
    "args, key",
    [
        (["--set", "search.simulations=-1"], "search.simulations"),
        (["--set", "search.children=0"], "search.children"),
        (["--limit", "0"], "limit"),
        (["--concurrency", "0"], "teacher.concurrency"),
        (["--set", "teacher.timeout_s=-5"], "teacher.timeout_s"),
        (["--set", "teacher.timeout_s=0"], "teacher.timeout_s"),
        (["--set", "search.max_calls=0"], "search.max_calls"),
        (["--set", "search.max_depth=0"], "search.max_depth"),
        (["--set", "search.parallel_simulations=0"], "search.parallel_simulations"),
        (["--set", "teacher.max_tokens=0"], "teacher.max_tokens"),
        (["--set", "inputs.max_image_pixels=0"], "inputs.max_image_pixels"),
    ],
)
def test_non_positive_values_are_one_line_before_any_work(tmp_path: Path, args: list[str], key: str) -> None:
    out = tmp_path / "run"
    res = runner.invoke(app, ["generate", "--no-progress", "--out", str(out), *args])
    line = one_line_error(res, key, "allowed:")
    assert line.startswith(f"error: {key}: ")
    assert not out.exists()


def test_eval_refuses_non_positive_values_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "ev"
    one_line_error(runner.invoke(app, ["eval", "--no-progress", "--out", str(out), "--limit", "0"]), "limit", "≥ 1")
    one_line_error(runner.invoke(app, ["eval", "--no-progress", "--out", str(out), "--concurrency", "-2"]), "teacher.concurrency")
    assert not out.exists()


def test_ranges_table() -> None:
    validate_run_config(RunConfig())  # the defaults are valid
    for bad, msg in [("search.rollouts=-1", "search.rollouts: -1 is out of range (allowed: ≥ 0)"),
                     ("teacher.top_p=0", "teacher.top_p: 0.0 is out of range (allowed: (0, 1])"),
                     ("teacher.sim_accuracy=1.5", "teacher.sim_accuracy: 1.5 is out of range (allowed: 0..1)"),
                     ("search.early_stop=maybe", "search.early_stop: 'maybe' is not one of none, solved, enough"),
                     ("teacher.min_pixels=5000000", "teacher.min_pixels: 5000000 is above teacher.max_pixels")]:
        with pytest.raises(ConfigError) as exc:
            build_run_config({}, [bad])
        assert str(exc.value).startswith(msg), (bad, str(exc.value))


def test_report_shows_an_escaping_image_file_as_unavailable(tmp_path: Path) -> None:
    from mcts_engine.export.report import build_report, read_page_data

    data = tmp_path / "data"
    src = make_image(data / "img0.png")
    t = rich_tree("s0", "img0.png")
    add_cache(t, tmp_path / "run", src)
    t.images[0]["file"] = "../../etc/passwd"
    run = make_run(tmp_path, [t], data=str(data / "samples.jsonl"))
    for linked in (False, True):  # inlined images and images linked from the run directory
        res = build_report(run, self_contained=not linked)
        _, cards = read_page_data(Path(res.path).read_text())
        assert cards["s0"]["img"] is None
        assert cards["s0"]["img_error"].startswith("path '../../etc/passwd' resolves outside the run directory")


def test_eval_takes_the_allow_outside_root_flag(escaping_data: Path, tmp_path: Path) -> None:
    base = ["eval", "--no-progress", "--task", "sat2", "--teacher", "sim", "--data", str(escaping_data)]
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "strict")])
    assert res.exit_code == 0, res.output
    fails = [json.loads(line)["id"] for line in (tmp_path / "strict" / "failures.jsonl").read_text().splitlines()]
    assert sorted(fails) == ["absolute", "dotdot", "symlink"]
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "allowed"), "--allow-outside-root"])
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "allowed" / "failures.jsonl").exists() or not (tmp_path / "allowed" / "failures.jsonl").read_text().strip()
