"""Trainer data path: config, label masks (asserted on decoded text), collation, image sizing, bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mcts_engine.config import ConfigError
from mcts_engine.testing.tiny_model import SYSTEM, chain, grpo_rows, png_bytes, sft_rows, write_parquet
from mcts_engine.train.config import TrainConfig, train_config_from_recipe


@pytest.fixture(scope="module")
def processor(tiny):
    from mcts_engine.train.model import load_processor

    return load_processor(str(tiny))


# --- config ---------------------------------------------------------------------------------------


def test_config_defaults_overrides_and_errors():
    cfg = train_config_from_recipe({"train": {"lr": 2e-5, "grpo": {"group_size": 4}}}, ["train.lr=1e-6",
                                    "train.grpo.rewards.format=0.25", "train.gradient_checkpointing=true"])
    assert cfg.lr == 1e-6 and cfg.grpo.group_size == 4 and cfg.grpo.rewards.format == 0.25
    assert cfg.gradient_checkpointing is True and cfg.freeze_vision is True and cfg.grpo.beta == 0.0
    assert TrainConfig().grpo.loss_type == "token" and TrainConfig().grpo.scale_rewards == "group"
    with pytest.raises(ConfigError, match="train: unknown key 'lrr'"):
        train_config_from_recipe({"train": {"lrr": 1}})
    with pytest.raises(ConfigError, match="train.grpo.group_size"):
        train_config_from_recipe({}, ["train.grpo.group_size=1"])
    with pytest.raises(ConfigError, match="train.grpo.loss_agg"):
        train_config_from_recipe({}, ["train.grpo.loss_agg=tokens"])
    with pytest.raises(ConfigError, match="train.grpo.loss_type"):
        train_config_from_recipe({}, ["train.grpo.loss_type=tokens"])
    # the former knob still works; TRL's names map onto ours
    assert train_config_from_recipe({}, ["train.grpo.loss_agg=sequence"]).grpo.loss_type == "sequence"
    assert train_config_from_recipe({}, ["train.grpo.loss_type=dapo"]).grpo.loss_type == "token"
    assert train_config_from_recipe({}, ["train.grpo.loss_type=dr_grpo"]).grpo.loss_type == "dr_grpo"
    with pytest.raises(ConfigError, match="train.report_to: 'comet'"):
        train_config_from_recipe({}, ["train.report_to=tensorboard,comet"])
    assert train_config_from_recipe({}, ["train.report_to=wandb, mlflow"]).trackers == ["wandb", "mlflow"]
    with pytest.raises(ConfigError, match="train.lr: 'fast'"):
        train_config_from_recipe({}, ["train.lr=fast"])


# --- masks ----------------------------------------------------------------------------------------


def test_assistant_mask_finds_every_assistant_turn_by_token_sequence():
    from mcts_engine.train.data import assistant_mask

    header, end = [1, 9, 10], 2
    ids = [1, 5, 6, 2, 1, 9, 10, 40, 41, 2, 7, 1, 3, 2, 1, 9, 10, 50, 2, 0, 0]
    mask = assistant_mask(ids, header, end)
    assert [i for i, m in zip(ids, mask) if m] == [40, 41, 2, 50, 2]
    # an unterminated assistant turn runs to the end; no header → no targets
    assert [i for i, m in zip([1, 9, 10, 7, 8], assistant_mask([1, 9, 10, 7, 8], header, end)) if m] == [7, 8]
    assert not any(assistant_mask([4, 5, 1, 9], header, end))


def test_sft_labels_are_exactly_the_assistant_chain(processor, tmp_path):
    from mcts_engine.train.data import SFT_REQUIRED, RowSource, SpecialIds, collate, encode_sft_row

    path = write_parquet(sft_rows(3, frame=(84, 56)), tmp_path / "sft.parquet")
    src = RowSource(path, SFT_REQUIRED, "SFT")
    ids = SpecialIds.from_processor(processor)
    rows = [encode_sft_row(src.row(i), processor, ids, "r") for i in range(3)]
    tok = processor.tokenizer
    for i, enc in enumerate(rows):
        target = tok.decode(enc["input_ids"][enc["target_mask"]].tolist())
        assert target == sft_rows(3, frame=(84, 56))[i]["messages"][2]["content"][0]["text"] + "<|im_end|>"
        rest = tok.decode(enc["input_ids"][~enc["target_mask"]].tolist())
        assert SYSTEM in rest and "</think>\n<answer>" not in rest and rest.endswith("<|im_start|>assistant\n\n")
        # image tokens: kept whole, flagged in mm_token_type_ids, never targets
        image = enc["input_ids"] == ids.image
        assert int(image.sum()) == (84 // 28) * (56 // 28)
        assert torch.equal(enc["mm_token_type_ids"].bool(), image) and not enc["target_mask"][image].any()
    batch = collate(rows, ids.pad)
    assert set(batch) == {"input_ids", "attention_mask", "mm_token_type_ids", "target_mask", "pixel_values", "image_grid_thw"}
    assert batch["image_grid_thw"].tolist() == [[1, 4, 6]] * 3  # 56x84 frame → 4x6 patches of 14: not resized
    lens = [len(r["input_ids"]) for r in rows]
    for r, n in enumerate(lens):
        assert batch["attention_mask"][r].sum() == n and not batch["target_mask"][r, n:].any()
        assert (batch["input_ids"][r, n:] == ids.pad).all()
    left = collate(rows, ids.pad, left=True)
    assert torch.equal(left["input_ids"][0, -lens[0]:], rows[0]["input_ids"])


def test_encode_cache_reuses_rows_within_its_byte_budget(processor, tmp_path):
    from mcts_engine.train.data import SFT_REQUIRED, RowSource, SFTDataset, SpecialIds, collate, worker_cache_bytes

    path = write_parquet(sft_rows(4, frame=(84, 56)), tmp_path / "sft.parquet")
    src = RowSource(path, SFT_REQUIRED, "SFT")
    ids = SpecialIds.from_processor(processor)
    plain = SFTDataset(src, processor, ids)
    one = sum(t.numel() * t.element_size() for t in plain[0].values())
    assert not plain._cache and plain.cached_bytes == 0  # 0 bytes: off
    ds = SFTDataset(src, processor, ids, cache_bytes=2 * one + one // 2)  # room for two rows of this size
    calls = []
    real_row = src.row
    src.row = lambda i, cols=None: (calls.append(i), real_row(i, cols))[1]
    first = [ds[i] for i in range(4)]
    assert sorted(ds._cache) == [0, 1] and ds.cached_bytes == 2 * one <= ds.cache_bytes  # fills, then stops
    again = [ds[i] for i in range(4)]
    assert calls == [0, 1, 2, 3, 2, 3]  # rows 0 and 1 served from the cache, 2 and 3 encoded again
    assert again[0] is first[0] and again[2] is not first[2]
    for a, b in zip(first, again):  # the same encodings either way
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    batch = collate(again[:2], ids.pad)  # the batch owns its tensors: writing it leaves the cache intact
    batch["pixel_values"].zero_()
    batch["input_ids"].zero_()
    fresh = plain[0]
    assert all(torch.equal(ds[0][k], fresh[k]) for k in fresh)
    assert worker_cache_bytes(1024, 0) == 2**30 and worker_cache_bytes(1024, 4) == 2**28
    assert worker_cache_bytes(-1, 2) == 0


def test_processor_is_widened_to_the_frames_and_rows_too_long_are_skipped(processor, tmp_path):
    from mcts_engine.train.data import SFT_REQUIRED, RowSource, frames_of, scan
    from mcts_engine.train.model import fit_processor_to_frames, image_pixel_bounds

    rows = sft_rows(4, frame=(56, 56)) + sft_rows(2, frame=(224, 168))  # the big frame exceeds the hub max_pixels
    src = RowSource(write_parquet(rows, tmp_path / "mixed.parquet"), SFT_REQUIRED, "SFT")
    import copy

    proc = copy.deepcopy(processor)
    lo, hi = fit_processor_to_frames(proc, frames_of(src))
    assert (lo, hi) == (56 * 56, 224 * 168) and image_pixel_bounds(proc.image_processor) == (lo, hi)
    found = scan(src, proc, max_length=10_000, message_column="messages", need_assistant=True)
    assert found.kept == list(range(6)) and found.resized == 0 and found.frame_mismatch == 0
    out = proc(text=["<|vision_start|><|image_pad|><|vision_end|>"], images=[[_image(224, 168)]], return_tensors="pt")
    assert out["image_grid_thw"].tolist() == [[1, 12, 16]]  # 168/14 x 224/14: no resize
    small = found.lengths[0]
    tight = scan(src, proc, max_length=small + 5, message_column="messages", need_assistant=True)
    assert tight.kept == [0, 1, 2, 3] and tight.skipped["too_long"] == 2  # 48 image tokens do not fit; never cut


def _image(w: int, h: int):
    import io

    from PIL import Image

    return Image.open(io.BytesIO(png_bytes(w, h))).convert("RGB")


def test_bad_inputs_are_one_line_errors_naming_file_row_field(processor, tmp_path):
    from mcts_engine.train.data import GRPO_REQUIRED, SFT_REQUIRED, RowSource, scan
    from mcts_engine.train.model import TrainSetupError

    grpo = write_parquet(grpo_rows(2), tmp_path / "grpo.parquet")
    with pytest.raises(TrainSetupError, match=r"grpo.parquet: missing column 'messages' for SFT"):
        RowSource(grpo, SFT_REQUIRED, "SFT")
    rows = sft_rows(2)
    rows[1]["images"] = rows[1]["images"] * 2
    src = RowSource(write_parquet(rows, tmp_path / "bad.parquet"), SFT_REQUIRED, "SFT")
    with pytest.raises(TrainSetupError, match=r"bad.parquet: row 1: field 'images': 2 images but 1 image parts"):
        scan(src, processor, 4096, "messages", need_assistant=True)
    rows = sft_rows(2)
    rows[0]["messages"] = rows[0]["messages"][:2]
    src = RowSource(write_parquet(rows, tmp_path / "noasst.parquet"), SFT_REQUIRED, "SFT")
    with pytest.raises(TrainSetupError, match=r"row 0: field 'messages': no assistant message"):
        scan(src, processor, 4096, "messages", need_assistant=True)
    prompts = grpo_rows(1)
    prompts[0]["prompt"] = prompts[0]["prompt"] + [{"role": "assistant", "content": [{"type": "text", "text": "x"}]}]
    src = RowSource(write_parquet(prompts, tmp_path / "p.parquet"), GRPO_REQUIRED, "GRPO")
    with pytest.raises(TrainSetupError, match="must not end with an assistant turn"):
        scan(src, processor, 4096, "prompt", need_assistant=False)
    from mcts_engine.train.rewards import parse_ground_truth

    with pytest.raises(ValueError, match="row 3: field 'ground_truth' is not valid JSON"):
        parse_ground_truth("{nope", "f.parquet: row 3")
    assert parse_ground_truth(json.dumps({"answer": "a"}), "w") == {"answer": "a"}


def test_chain_fixture_follows_the_step_grammar():
    from mcts_engine.grounding import check_chain

    c = check_chain(chain("left", [(3, 4), (10, 11)]))
    assert c.well_formed and c.answer == "left" and c.points == ((3, 4), (10, 11))


def test_schedule_and_data_order_are_pure_and_exact():
    from mcts_engine.train.runtime import lr_factor
    from mcts_engine.train.sft import row_stream

    # 10 steps, 2 warmup: 0.5, 1.0, then cosine from 1 to min_ratio over the remaining 8
    f = [lr_factor(s, 10, 2, "cosine", 0.1) for s in range(10)]
    assert f[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert f[6] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert all(a >= b for a, b in zip(f[2:], f[3:])) and f[-1] > 0.1
    assert [lr_factor(s, 4, 0, "linear", 0.0) for s in range(4)] == pytest.approx([1.0, 0.75, 0.5, 0.25])
    assert lr_factor(7, 10, 2, "constant", 0.0) == 1.0
    kept = [3, 5, 8, 9]
    stream = row_stream(kept, seed=0, shuffle=True, start=0, count=12)
    assert sorted(stream[:4]) == sorted(stream[4:8]) == sorted(stream[8:]) == kept  # whole epochs, each permuted
    assert stream[5:9] == row_stream(kept, 0, True, 5, 4)  # any window is reproducible (resume)
    assert row_stream(kept, 0, False, 2, 4) == [8, 9, 3, 5]
