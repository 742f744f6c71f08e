"""SFT on the tiny local Qwen2.5-VL (CPU): the loss falls, checkpoints reload exactly, resume is exact,
DDP equals one process, LoRA needs peft (clear error otherwise)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mcts_engine.testing.tiny_model import sft_rows, write_parquet
from mcts_engine.train.config import RunArgs, train_config_from_recipe


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("sftdata")
    return write_parquet(sft_rows(8), d / "train.parquet"), write_parquet(sft_rows(4, frame=(84, 56)), d / "val.parquet")


def run(tiny, train, out, val=None, resume=False, **train_cfg):
    from mcts_engine.train.sft import run_sft

    base = {"lr": 3e-3, "batch_size": 2, "grad_accum": 2, "num_workers": 0, "warmup_ratio": 0.1, "log_every": 1}
    cfg = train_config_from_recipe({"train": {**base, **train_cfg}})
    return run_sft(RunArgs("sft", str(tiny), str(train), str(out), val=str(val) if val else None, resume=resume), cfg)


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_loss_falls_and_the_final_checkpoint_reloads(tiny, data, tmp_path):
    train, val = data
    out = tmp_path / "run"
    summary = run(tiny, train, out, val=val, max_steps=30, eval_every=15)
    steps = [r for r in records(out) if "loss" in r and "event" not in r]
    assert [r["step"] for r in steps] == list(range(1, 31))
    first, last = steps[0]["loss"], steps[-1]["loss"]
    assert last < 0.6 * first, (first, last)
    evals = [r["eval_loss"] for r in records(out) if "eval_loss" in r and "event" not in r]
    assert len(evals) == 2 and evals[1] < evals[0]
    lrs = [r["lr"] for r in steps]
    assert lrs[0] < lrs[2] == pytest.approx(3e-3) and lrs[-1] < 1e-4  # warmup (3 steps), then cosine to ~0
    assert all(r["grad_norm"] > 0 and r["target_tokens"] > 0 for r in steps)
    # the saved model is the trained one: its eval loss, recomputed from disk, is the logged one
    final = Path(summary["final"])
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json"} <= {p.name for p in final.iterdir()}
    assert json.loads((final / "processor_config.json").read_text())["processor_class"] == "Qwen2_5_VLProcessor"
    assert _eval_loss(final, val) == pytest.approx(summary["eval_loss"], rel=1e-5)


def _eval_loss(model_dir: Path, val: Path) -> float:
    from mcts_engine.train.data import SFT_REQUIRED, RowSource, SpecialIds, collate, encode_sft_row
    from mcts_engine.train.logprobs import TokenScorer, model_inputs
    from mcts_engine.train.model import load_model, load_processor

    processor = load_processor(str(model_dir))
    model = load_model(str(model_dir), torch.float32).eval()
    ids = SpecialIds.from_processor(processor)
    src = RowSource(val, SFT_REQUIRED, "SFT")
    batch = collate([encode_sft_row(src.row(i), processor, ids, "v") for i in range(len(src))], ids.pad)
    with torch.no_grad():
        logp = TokenScorer(model)(**model_inputs(batch))
    return float(-logp.mean())


def test_scorer_matches_the_models_own_loss_and_checkpoint_reload_is_exact(tiny, data, tmp_path):
    from mcts_engine.train.data import SFT_REQUIRED, RowSource, SpecialIds, collate, encode_sft_row
    from mcts_engine.train.logprobs import TokenScorer, model_inputs
    from mcts_engine.train.model import load_model, load_processor, save_pretrained

    processor = load_processor(str(tiny))
    model = load_model(str(tiny), torch.float32)
    with torch.no_grad():  # move away from the saved init so the test sees the new weights
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.eval()
    ids = SpecialIds.from_processor(processor)
    src = RowSource(data[0], SFT_REQUIRED, "SFT")
    batch = collate([encode_sft_row(src.row(i), processor, ids, "r") for i in range(3)], ids.pad)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw")}
    labels = batch["input_ids"].masked_fill(~batch["target_mask"], -100)
    with torch.no_grad():
        out = model(**inputs, labels=labels)
        logp = TokenScorer(model)(**model_inputs(batch))
    assert float(-logp.mean()) == pytest.approx(float(out.loss), rel=1e-5)  # same positions, same shift
    save_pretrained(model, processor, tmp_path / "ckpt")
    again = load_model(str(tmp_path / "ckpt"), torch.float32).eval()
    with torch.no_grad():
        assert torch.equal(again(**inputs).logits, out.logits)
    reloaded = load_processor(str(tmp_path / "ckpt"))
    assert reloaded.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    assert reloaded.chat_template == processor.chat_template
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert cfg["text_config"]["rope_scaling"]["mrope_section"] == [2, 3, 3]  # spelled for transformers 4.x / vLLM too


def test_resume_reproduces_the_uninterrupted_run(tiny, data, tmp_path):
    from safetensors.torch import load_file

    train = data[0]
    run(tiny, train, tmp_path / "a", max_steps=4, save_every=2)
    run(tiny, train, tmp_path / "b", max_steps=4, save_every=2)
    shutil.rmtree(tmp_path / "b" / "final")  # as if killed after the step-2 checkpoint
    from mcts_engine.train.model import TrainSetupError

    with pytest.raises(TrainSetupError, match="holds a previous run"):
        run(tiny, train, tmp_path / "b", max_steps=4)
    run(tiny, train, tmp_path / "b", resume=True, max_steps=4, save_every=2)
    resumed = [r for r in records(tmp_path / "b") if r.get("event") == "start"][-1]
    assert resumed["step"] == 2
    a = load_file(tmp_path / "a" / "final" / "model.safetensors")
    b = load_file(tmp_path / "b" / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_vision_tower_frozen_by_default(tiny, data, tmp_path):
    from safetensors.torch import load_file

    run(tiny, data[0], tmp_path / "frozen", max_steps=2)
    run(tiny, data[0], tmp_path / "thawed", max_steps=2, freeze_vision=False)
    init = load_file(Path(tiny) / "model.safetensors")
    frozen = load_file(tmp_path / "frozen" / "final" / "model.safetensors")
    thawed = load_file(tmp_path / "thawed" / "final" / "model.safetensors")
    vis = [k for k in init if "visual." in k]  # saved in the hub layout: visual.*, model.layers.*
    lm = [k for k in init if "layers.0.mlp" in k and "visual." not in k]
    assert vis and all(torch.equal(init[k], frozen[k]) for k in vis)
    assert any(not torch.equal(init[k], thawed[k]) for k in vis)
    assert all(not torch.equal(init[k], frozen[k]) for k in lm)


def test_lora_without_peft_is_a_clear_error(tiny, data, tmp_path, monkeypatch):
    from mcts_engine.train.model import TrainSetupError

    monkeypatch.setitem(sys.modules, "peft", None)  # import peft → ImportError
    with pytest.raises(TrainSetupError, match=r"lora_r > 0 needs peft.*pip install"):
        run(tiny, data[0], tmp_path / "lora", max_steps=1, lora_r=4)


def test_lora_checkpoint_is_merged_and_matches_the_adapter_model(tiny, data, tmp_path):
    pytest.importorskip("peft")
    from mcts_engine.train.data import SFT_REQUIRED, RowSource, SpecialIds, collate, encode_sft_row
    from mcts_engine.train.model import apply_lora, load_model, load_processor, save_pretrained

    processor = load_processor(str(tiny))
    model = apply_lora(load_model(str(tiny), torch.float32), 4, 8, 0.0, "q_proj,v_proj,down_proj")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(torch.randn_like(p) * 0.1)
    assert all(".visual." not in n for n, p in model.named_parameters() if p.requires_grad)
    model.eval()
    ids = SpecialIds.from_processor(processor)
    src = RowSource(data[0], SFT_REQUIRED, "SFT")
    batch = collate([encode_sft_row(src.row(0), processor, ids, "r")], ids.pad)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw")}
    save_pretrained(model, processor, tmp_path / "merged")
    merged = load_model(str(tmp_path / "merged"), torch.float32).eval()
    with torch.no_grad():
        assert torch.allclose(merged(**inputs).logits, model(**inputs).logits, atol=1e-5)
    run(tiny, data[0], tmp_path / "lora", max_steps=2, lora_r=4, save_every=1)
    assert (tmp_path / "lora" / "checkpoint-000001" / "adapter" / "adapter_config.json").exists()


def _torchrun(args: list[str], env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mcts_engine.cli", "train", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def one_process(tiny, data, tmp_path_factory):
    """3 steps in one process: 1 x 2 rows x 2 accumulation = the rows of 2 ranks x 1 row x 2 accumulation."""
    out = tmp_path_factory.mktemp("one") / "run"
    run(tiny, data[0], out, max_steps=3, lr=1e-3, batch_size=2, grad_accum=2, warmup_ratio=0.0)
    return out


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_equal_one_process(tiny, data, one_process, tmp_path, mode):
    from safetensors.torch import load_file

    args = ["--method", "sft", "--model", str(tiny), "--data", str(data[0]), "--out", str(tmp_path / mode),
            "--set", "train.max_steps=3", "--set", "train.num_workers=0", "--set", "train.lr=1e-3",
            "--set", "train.grad_accum=2", "--set", "train.warmup_ratio=0", "--set", "train.batch_size=1",
            "--set", f"train.distributed={mode}"]
    res = _torchrun(args, {**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    a = load_file(tmp_path / mode / "final" / "model.safetensors")
    b = load_file(one_process / "final" / "model.safetensors")
    assert a.keys() == b.keys()  # FSDP's gathered state dict is saved under the same names, tied lm_head dropped
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    ours = [r["loss"] for r in records(tmp_path / mode) if "loss" in r and "event" not in r]
    ref = [r["loss"] for r in records(one_process) if "loss" in r and "event" not in r]
    assert ours == pytest.approx(ref, rel=1e-5)
