"""Export end to end on a hand-built run directory: schemas round-trip (datasets and pyarrow), images
match the frame, placeholders match images, no split leakage, bad records are skipped with reasons."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from mcts_engine.export.config import ExportConfig, resolve_export_config
from mcts_engine.export.rewards import verl_compute_score
from mcts_engine.export.run import export_run
from mcts_engine.export.split import assign_splits
from mcts_engine.search.tree import Tree
from mcts_engine.testing.synthetic_runs import answer, make_image, make_run, rich_tree, think


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("exp")
    data = tmp / "data"
    for i in range(5):
        make_image(data / f"img{i}.png", seed=i)
    trees: list = [rich_tree(f"s{i}", f"img{i}.png") for i in range(5)]
    trees.append(rich_tree("s5", "img4.png"))  # shares its image with s4: must land in the same split
    unsolved = rich_tree("s6", "img3.png")
    for n in unsolved.nodes:
        if n.kind == "answer":
            n.answer, n.correct = "right", False
    trees.append(unsolved)
    b = rich_tree("bytes0", "x.png")
    b.sample["images"] = ["bytes:" + "ab" * 20]
    trees.append(b)
    missing = rich_tree("missing0", "nope.png")
    trees.append(missing)
    odd = rich_tree("odd0", "img0.png")
    odd.task = "no_such_task"
    trees.append(odd)
    trees.append('{"sample_id": "torn", "nodes": [')  # corrupt line
    trees.append(rich_tree("s0", "img0.png"))  # duplicate id
    return make_run(tmp, trees, data=str(data / "samples.jsonl"))


@pytest.fixture(scope="module")
def trl_export(run_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("trl")
    cfg = ExportConfig(strategies="best,all_correct,backtrack", val_fraction=0.3, seed=1, max_correct_per_sample=4)
    res = export_run(run_dir, out, kinds=["sft", "grpo", "dpo", "prm"], cfg=cfg)
    return out, res


def _images(cells) -> list[Image.Image]:
    return [Image.open(io.BytesIO(c["bytes"])) for c in cells]


def test_files_and_summary(trl_export) -> None:
    out, res = trl_export
    for kind in ("sft", "grpo", "dpo", "prm"):
        for split in ("train", "val"):
            assert (out / f"{kind}_{split}.parquet").exists()
    summary = json.loads((out / "export_summary.json").read_text())
    assert summary["trees"] == 10  # valid, distinct ids
    reasons = " | ".join(s["reason"] for s in summary["skipped_records"])
    assert "not valid JSON" in reasons
    assert "duplicate sample id" in reasons
    assert "embedded bytes" in reasons and "image not found" in reasons
    assert "unknown task 'no_such_task'" in reasons
    assert summary["kind_skips"]["sft"] == {"no verified-correct valid path": 1}
    assert res.samples_exported == 7
    # 6 solved samples x (best + 1 more correct + 1 backtrack)
    assert res.strategies == {"best": 6, "all_correct": 6, "backtrack": 6}
    assert res.rows["sft_train.parquet"] + res.rows["sft_val.parquet"] == 18
    assert res.rows["grpo_train.parquet"] + res.rows["grpo_val.parquet"] == 7


def test_sft_rows_roundtrip_with_datasets_and_pyarrow(trl_export) -> None:
    from datasets import load_dataset

    out, _ = trl_export
    ds = load_dataset("parquet", data_files=str(out / "sft_train.parquet"), split="train")
    row = ds[0]
    img = row["images"][0]
    assert isinstance(img, Image.Image) and img.size == (row["frame_width"], row["frame_height"]) == (308, 196)
    assert (row["orig_width"], row["orig_height"]) == (300, 200) and row["coord_space"] == "frame"
    roles = [m["role"] for m in row["messages"]]
    assert roles == ["system", "user", "assistant"]
    assert row["messages"][0]["content"] == [{"type": "text", "text": row["messages"][0]["content"][0]["text"]}]
    assert "spatial questions" in row["messages"][0]["content"][0]["text"]  # the STUDENT prompt
    assert row["messages"][1]["content"][0] == {"type": "image", "text": None}
    assert row["messages"][1]["content"][-1]["text"].startswith("Where is the cup?\nOptions:\n(A) left")
    target = row["messages"][2]["content"][0]["text"]
    assert target.startswith("<think>\n") and target.endswith("<answer> left </answer>")
    t = pq.read_table(out / "sft_train.parquet")
    assert t.column("images").type.value_type.names == ["bytes", "path"]
    cell = t.column("images")[0].as_py()[0]
    assert Image.open(io.BytesIO(cell["bytes"])).size == (308, 196)
    # every point of every chain lies inside the stored image
    for r in t.select(["points", "frame_width", "frame_height"]).to_pylist():
        assert all(0 <= x < r["frame_width"] and 0 <= y < r["frame_height"] for x, y in r["points"])


def test_image_count_equals_placeholders_everywhere(trl_export) -> None:
    out, _ = trl_export
    for kind, col in (("sft", "messages"), ("grpo", "prompt"), ("dpo", "prompt"), ("prm", "prompt")):
        for split in ("train", "val"):
            for r in pq.read_table(out / f"{kind}_{split}.parquet").to_pylist():
                n_parts = sum(1 for m in r[col] for p in m["content"] if p["type"] == "image")
                assert n_parts == len(r["images"]) >= 1, (kind, r["row_id"])


def test_resized_image_pixels_match_the_frame(trl_export, run_dir: Path) -> None:
    out, _ = trl_export
    r = pq.read_table(out / "grpo_train.parquet").to_pylist()[0]
    stored = _images(r["images"])[0].convert("RGB")
    src = Image.open(run_dir.parent / "data" / f"img{r['id'][1]}.png").convert("RGB")
    expect = src.resize((r["frame_width"], r["frame_height"]), Image.BICUBIC)
    assert stored.tobytes() == expect.tobytes()  # png: lossless, exactly the teacher's frame


def test_grpo_columns_for_trl_and_verl(trl_export) -> None:
    out, _ = trl_export
    rows = pq.read_table(out / "grpo_train.parquet").to_pylist() + pq.read_table(out / "grpo_val.parquet").to_pylist()
    by_id = {r["id"]: r for r in rows}
    r = by_id["s0"]
    assert r["answer"] == "left" and r["task"] == "sat2" and r["solved"] is True
    assert json.loads(r["ground_truth"]) == {"answer": "left", "choices": ["left", "right"]}
    assert r["root_value"] == pytest.approx(0.5) and r["pass_rate"] == pytest.approx(0.5)
    assert r["data_source"] == "mcts-engine/sat2" and r["ability"]
    assert r["reward_model"] == {"style": "rule", "ground_truth": r["ground_truth"]}
    assert set(r["extra_info"]) == {"split", "index", "id", "task", "task_options"}
    assert by_id["s6"]["solved"] is False  # unsolved samples still become prompts
    for split in ("train", "val"):
        idx = [x["extra_info"]["index"] for x in pq.read_table(out / f"grpo_{split}.parquet").to_pylist()]
        assert idx == list(range(len(idx)))
        assert all(x["extra_info"]["split"] == split for x in pq.read_table(out / f"grpo_{split}.parquet").to_pylist())


def test_dpo_and_prm_rows(trl_export) -> None:
    out, _ = trl_export
    d = pq.read_table(out / "dpo_train.parquet").to_pylist()[0]
    assert [m["role"] for m in d["prompt"]] == ["system", "user"]
    assert d["chosen"][0]["role"] == d["rejected"][0]["role"] == "assistant"
    assert d["chosen_value"] - d["rejected_value"] >= 0.3 and d["answer"] != d["rejected_answer"]
    p = pq.read_table(out / "prm_train.parquet").to_pylist()[0]
    assert len(p["completions"]) == len(p["labels"]) == len(p["values"]) == len(p["visits"])


def test_no_image_in_both_splits(trl_export) -> None:
    out, _ = trl_export
    seen: dict[str, set[str]] = {"train": set(), "val": set()}
    ids: dict[str, set[str]] = {"train": set(), "val": set()}
    for kind in ("sft", "grpo", "dpo", "prm"):
        for split in ("train", "val"):
            t = pq.read_table(out / f"{kind}_{split}.parquet", columns=["id", "image_hash", "images"]).to_pylist()
            for r in t:
                seen[split].add(r["image_hash"])
                ids[split].add(r["id"])
    assert seen["val"] and seen["train"] and not seen["train"] & seen["val"]
    assert not ids["train"] & ids["val"]
    s4 = "train" if "s4" in ids["train"] else "val"
    assert "s5" in ids[s4]  # shares its image with s4


def test_split_is_deterministic_and_groups_shared_images() -> None:
    keys = {f"s{i}": [f"k{i}"] for i in range(20)}
    keys["s20"] = ["k3", "k19"]  # bridges s3 and s19
    a = assign_splits(keys, 0.25, seed=7)
    assert a == assign_splits(keys, 0.25, seed=7)
    assert a != assign_splits(keys, 0.25, seed=8) or a != assign_splits(keys, 0.25, seed=9)
    assert a["s3"] == a["s19"] == a["s20"]
    n_val = sum(1 for v in a.values() if v == "val")
    assert 4 <= n_val <= 7
    assert set(assign_splits(keys, 0.0, 0).values()) == {"train"}
    assert assign_splits({"a": ["x"], "b": ["x"]}, 0.5, 0) == {"a": "train", "b": "train"}  # never all val


def test_zero_solved_run_exports_what_is_valid(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_image(data / "a.png")
    t = Tree(sample_id="u", task="sat2", frame=rich_tree().frame, truth={"answer": "left", "choices": ["left", "right"]},
             sample=rich_tree("u", "a.png").sample)
    t.root.visits = 1
    n = think(t, t.root, 10, 10)
    answer(t, n, "right", False)
    run = make_run(tmp_path, [t], data=str(data / "x.jsonl"))
    res = export_run(run, tmp_path / "o", kinds=["sft", "grpo"], cfg=ExportConfig(val_fraction=0.0))
    assert res.rows == {"sft_train.parquet": 0, "grpo_train.parquet": 1}
    assert pq.read_table(tmp_path / "o" / "sft_train.parquet").num_rows == 0  # still a valid, typed file
    assert res.kind_skips == {"sft": {"no verified-correct valid path": 1}}


def test_rescale_to_original_stores_original_image(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_image(data / "a.png")
    run = make_run(tmp_path, [rich_tree("a", "a.png")], data=str(data / "x.jsonl"))
    res = export_run(run, tmp_path / "o", kinds=["sft"], cfg=ExportConfig(val_fraction=0.0, rescale_to_original=True))
    assert res.rows["sft_train.parquet"] >= 1
    r = pq.read_table(tmp_path / "o" / "sft_train.parquet").to_pylist()[0]
    assert r["coord_space"] == "original" and _images(r["images"])[0].size == (300, 200)
    assert (data / "a.png").read_bytes() == r["images"][0]["bytes"]  # copied byte for byte
    # frame (50, 40) in a 308x196 frame of a 300x200 image -> (49, 41)
    assert r["points"][0] == [49, 41] and "(49, 41)" in r["messages"][2]["content"][0]["text"]


def test_jsonl_writes_each_image_once(run_dir: Path, tmp_path: Path) -> None:
    res = export_run(run_dir, tmp_path / "j", kinds=["sft", "grpo"], fmt="jsonl", cfg=ExportConfig(val_fraction=0.0))
    rows = [json.loads(x) for x in (tmp_path / "j" / "sft_train.jsonl").read_text().splitlines()]
    assert len(rows) == res.rows["sft_train.jsonl"] > 0
    files = sorted((tmp_path / "j" / "images").iterdir())
    assert len(files) == 5  # 5 distinct images among the exported samples
    for r in rows:
        assert all((tmp_path / "j" / p).exists() for p in r["images"])
        assert r["messages"][1]["content"][0] == {"type": "image", "text": None}


def test_verl_easyr1_llamafactory_flavors(run_dir: Path, tmp_path: Path) -> None:
    cfg = ExportConfig(val_fraction=0.0)
    export_run(run_dir, tmp_path / "v", kinds=["grpo"], flavor="verl", cfg=cfg)
    r = pq.read_table(tmp_path / "v" / "grpo_train.parquet").to_pylist()[0]
    assert isinstance(r["prompt"][1]["content"], str) and r["prompt"][1]["content"].count("<image>") == len(r["images"])
    assert "reward.py" in {p.name for p in (tmp_path / "v").iterdir()}
    export_run(run_dir, tmp_path / "e", kinds=["grpo"], flavor="easyr1", cfg=cfg)
    r = pq.read_table(tmp_path / "e" / "grpo_train.parquet").to_pylist()[0]
    assert r["prompt"].startswith("<image>") and json.loads(r["answer"])["truth"]["answer"] == "left"
    export_run(run_dir, tmp_path / "l", kinds=["sft", "dpo"], flavor="llamafactory", cfg=cfg)
    info = json.loads((tmp_path / "l" / "dataset_info.json").read_text())
    assert info["mcts_sft_train"]["formatting"] == "sharegpt" and info["mcts_dpo_train"]["ranking"] is True
    r = pq.read_table(tmp_path / "l" / "sft_train.parquet").to_pylist()[0]
    assert [m["role"] for m in r["messages"]] == ["system", "user", "assistant"]
    assert r["messages"][1]["content"].count("<image>") == len(r["images"])
    with pytest.raises(Exception, match="verl writes grpo only"):
        export_run(run_dir, tmp_path / "x", kinds=["sft"], flavor="verl", cfg=cfg)


def test_reward_functions_use_the_task_verifier() -> None:
    gt = json.dumps({"answer": "left", "choices": ["left", "right"]})
    good = "<think>\nThe cup (10, 10).\n</think>\n<answer> left </answer>"
    info = {"task": "sat2", "task_options": "{}"}
    assert verl_compute_score("mcts-engine/sat2", good, gt, info)["score"] == 1.0
    assert verl_compute_score("mcts-engine/sat2", good.replace("left", "right"), gt, info)["score"] == 0.0
    assert verl_compute_score("mcts-engine/sat2", "<answer> left </answer>", gt, info)["score"] == 0.0  # ill-formed


def test_config_resolution(run_dir: Path) -> None:
    from mcts_engine.config import ConfigError

    rc = {"config": {"task": "sat2", "export": {"max_correct_per_sample": 7, "val_fraction": 0.2}, "task_options": {}}}
    cfg, _ = resolve_export_config(rc, overrides=["export.dpo_margin=0.5"], seed=3)
    assert (cfg.max_correct_per_sample, cfg.val_fraction, cfg.dpo_margin, cfg.seed) == (7, 0.2, 0.5, 3)
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        resolve_export_config(rc, overrides=["export.nope=1"])
    with pytest.raises(ConfigError, match="strategies"):
        resolve_export_config(rc, strategies="best,worst")


def test_export_cli(run_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mcts_engine.cli import app

    r = CliRunner()
    ok = r.invoke(app, ["export", "--run", str(run_dir), "--out", str(tmp_path / "c"), "--kind", "sft,grpo",
                        "--val-fraction", "0", "--strategy", "best", "--set", "export.min_steps=2"])
    assert ok.exit_code == 0, ok.output
    assert "sft_train.parquet" in ok.output and "exported 7/10 samples" in ok.output
    assert "skipped 1 sample(s)/line(s): unknown task 'no_such_task'" in ok.output
    assert pq.read_table(tmp_path / "c" / "sft_train.parquet").num_rows == 6  # best only, 2-step paths
    for args, msg in (
        (["--flavor", "verl", "--kind", "sft"], "verl writes grpo only"),
        (["--flavor", "nope"], "--flavor 'nope'"),
        (["--set", "export.nope=1"], "unknown key 'nope'"),
        (["--set", "search.simulations=3"], "export takes export.KEY"),
        (["--format", "csv"], "--format 'csv'"),
    ):
        bad = r.invoke(app, ["export", "--run", str(run_dir), "--out", str(tmp_path / "bad"), *args])
        assert bad.exit_code == 2 and msg in bad.output, (args, bad.output)
    missing = r.invoke(app, ["export", "--run", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "not a run directory" in missing.output


def test_run_image_cache_is_used_byte_for_byte(tmp_path: Path) -> None:
    from mcts_engine.testing.synthetic_runs import add_cache

    data = tmp_path / "data"
    src = make_image(data / "a.png")
    cached_tree = rich_tree("c", "a.png")
    cached = add_cache(cached_tree, tmp_path / "run", src, fmt="jpeg")
    cached_tree.sample["images"] = ["bytes:" + "cd" * 20]  # the source is not reachable: only the cache is
    gone = rich_tree("g", "a.png")
    add_cache(gone, tmp_path / "run", src)
    gone.images = [{**gone.images[0], "file": "images/missing.png"}]
    run = make_run(tmp_path, [cached_tree, gone], data=str(data / "x.jsonl"))
    res = export_run(run, tmp_path / "o", kinds=["sft", "grpo"], cfg=ExportConfig(val_fraction=0.0))
    rows = pq.read_table(tmp_path / "o" / "grpo_train.parquet").to_pylist()
    assert [r["id"] for r in rows] == ["c"]
    assert rows[0]["images"][0]["bytes"] == cached  # exactly what the teacher saw (jpeg kept as is)
    assert rows[0]["image_hash"] == cached_tree.images[0]["key"]
    assert any(s["id"] == "g" and "cached image missing" in s["reason"] for s in res.skipped_records)
    # image_format=png re-encodes the cached frame losslessly, same size
    export_run(run, tmp_path / "p", kinds=["grpo"], cfg=ExportConfig(val_fraction=0.0, image_format="png"))
    r = pq.read_table(tmp_path / "p" / "grpo_train.parquet").to_pylist()[0]
    img = Image.open(io.BytesIO(r["images"][0]["bytes"]))
    assert img.format == "PNG" and img.size == (308, 196)
    assert img.convert("RGB").tobytes() == Image.open(io.BytesIO(cached)).convert("RGB").tobytes()
    # rescaling to the original needs the source, which a bytes-only sample does not have
    res = export_run(run, tmp_path / "q", kinds=["grpo"], cfg=ExportConfig(val_fraction=0.0, rescale_to_original=True))
    assert any(s["id"] == "c" and "embedded bytes" in s["reason"] for s in res.skipped_records)
