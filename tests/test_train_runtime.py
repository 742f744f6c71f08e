"""Runtime fixes of issue 13 (items 3, 4, 9, 10) and issue 12 item 5: equal eval batches per rank under DDP,
fp32 master weights for bf16-pure, bit-exact LoRA resume, checkpoints in the training dtype, and a resume that
refuses a planted pickle instead of running it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from mcts_engine.testing.tiny_model import sft_rows, write_parquet
from mcts_engine.train.config import RunArgs, train_config_from_recipe


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("sftdata")
    return write_parquet(sft_rows(8), d / "train.parquet"), write_parquet(sft_rows(1), d / "val1.parquet")


def run(tiny, train, out, val=None, resume=False, **train_cfg):
    from mcts_engine.train.sft import run_sft

    base = {"lr": 3e-3, "batch_size": 2, "grad_accum": 1, "num_workers": 0, "warmup_ratio": 0.0, "log_every": 1,
            "progress": False}
    cfg = train_config_from_recipe({"train": {**base, **train_cfg}})
    return run_sft(RunArgs("sft", str(tiny), str(train), str(out), val=str(val) if val else None, resume=resume), cfg)


# --- item 3: every rank runs the same number of eval batches ---------------------------------------


def test_eval_batches_are_equal_on_every_rank():
    from mcts_engine.train.sft import eval_batches

    for n, world, bs in ((1, 2, 1), (3, 2, 2), (5, 4, 1), (8, 2, 3)):
        counts = [eval_batches(list(range(n)), bs, r, world) for r in range(world)]
        assert len({len(b) for b, _ in counts}) == 1, (n, world, bs)
        scored = sorted(i for b, real in counts for batch, ok in zip(b, real) if ok for i in batch)
        assert scored == list(range(n))  # every row scored exactly once; fillers never counted


def test_ddp_sft_with_one_validation_row_finishes(tiny, data, tmp_path):
    # Guards item 3: with 1 val row and 2 ranks, rank 1 ran no eval batch while rank 0's DDP forward waited for
    # it (buffer broadcast): the run hung at the final eval (killed after 300 s).
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mcts_engine.cli", "train", "--method", "sft", "--model", str(tiny), "--data", str(data[0]),
           "--val", str(data[1]), "--out", str(tmp_path / "ddp"), "--set", "train.max_steps=1",
           "--set", "train.num_workers=0", "--set", "train.batch_size=1", "--set", "train.progress=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, (res.stdout[-1500:], res.stderr[-3000:])
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["eval_loss"] is not None and summary["eval_loss"] > 0


# --- item 4: bf16-pure keeps fp32 master weights ----------------------------------------------------


def test_bf16_master_weights_move_with_a_small_learning_rate():
    # Guards item 4: AdamW stepping bf16 weights directly rounds updates below half a bf16 ulp away (1.8 % of the
    # weights changed in 5 steps at lr 1e-6); with fp32 masters every weight moves.
    from mcts_engine.train.optim import MasterWeightsAdamW

    torch.manual_seed(0)
    init = torch.randn(64, 64) * 0.05
    plain = torch.nn.Parameter(init.clone().bfloat16())
    mastered = torch.nn.Parameter(init.clone().bfloat16())
    opt_plain = torch.optim.AdamW([plain], lr=1e-6)
    opt_master = MasterWeightsAdamW([{"params": [mastered], "weight_decay": 0.0}], lr=1e-6)
    start = mastered.detach().float().clone()
    for _ in range(5):
        g = torch.randn(64, 64).bfloat16()
        plain.grad, mastered.grad = g.clone(), g.clone()
        opt_plain.step()
        opt_master.step()
        opt_master.zero_grad()
    plain_moved = float((plain.detach().float() != start).float().mean())
    master_moved = float((opt_master.masters[0] != start).float().mean())
    assert plain_moved < 0.2 and master_moved > 0.99, (plain_moved, master_moved)
    # the bf16 weights are the masters rounded; the state dict holds the masters (a plain-tensor file)
    assert torch.equal(mastered.detach(), opt_master.masters[0].bfloat16())
    state = opt_master.state_dict()
    fresh = MasterWeightsAdamW([{"params": [torch.nn.Parameter(init.clone().bfloat16())], "weight_decay": 0.0}],
                               lr=1e-6)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.masters[0], opt_master.masters[0])


def test_bf16_pure_sft_trains_through_masters_and_resumes(tiny, data, tmp_path):
    out = tmp_path / "pure"
    run(tiny, data[0], out, max_steps=2, save_every=1, precision="bf16-pure", lr=1e-6)
    state = torch.load(out / "checkpoint-000001" / "optimizer.pt", weights_only=True)
    assert all(m.dtype == torch.float32 for m in state["masters"])
    assert json.loads((out / "final" / "config.json").read_text())["dtype"] == "bfloat16"


# --- item 9: LoRA resume is bit-exact ------------------------------------------------------------


def test_lora_resume_reproduces_the_uninterrupted_run(tiny, data, tmp_path):
    # Guards item 9: starting the DataLoader drew its base seed from the global RNG right after resume restored
    # it, so LoRA dropout masks (and the weights) diverged from the uninterrupted run.
    from safetensors.torch import load_file

    kw = dict(max_steps=4, save_every=2, lora_r=4, lora_dropout=0.5, lr=1e-2)
    run(tiny, data[0], tmp_path / "a", **kw)
    run(tiny, data[0], tmp_path / "b", **kw)
    shutil.rmtree(tmp_path / "b" / "final")  # as if killed after the step-2 checkpoint
    run(tiny, data[0], tmp_path / "b", resume=True, **kw)
    a = load_file(tmp_path / "a" / "final" / "model.safetensors")
    b = load_file(tmp_path / "b" / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- item 10: checkpoints in the training dtype ---------------------------------------------------


def test_bf16_run_saves_bf16_weights_and_fp32_masters_for_resume(tiny, data, tmp_path):
    # Guards item 10: a bf16 (autocast) run saved fp32 weights (twice the size, not the dtype it computed in).
    from safetensors.torch import load_file

    out = tmp_path / "bf16"
    run(tiny, data[0], out, max_steps=2, save_every=1, precision="bf16")
    for d in (out / "final", out / "checkpoint-000001"):
        cfg = json.loads((d / "config.json").read_text())
        assert cfg["dtype"] == "bfloat16" and cfg["text_config"]["dtype"] == "bfloat16"
        weights = load_file(d / "model.safetensors")
        assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.bfloat16}
    masters = load_file(out / "checkpoint-000001" / "master_weights.safetensors")
    assert masters and all(t.dtype == torch.float32 for t in masters.values())


# --- issue 12 item 5: resume never unpickles code --------------------------------------------------


class _Planted:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_resume_refuses_a_planted_pickle_in_one_line(tiny, data, tmp_path):
    from typer.testing import CliRunner

    from mcts_engine.cli import app

    out = tmp_path / "run"
    run(tiny, data[0], out, max_steps=2, save_every=1)
    shutil.rmtree(out / "final")
    marker = tmp_path / "pwned"
    torch.save({"step": 1, "payload": _Planted(str(marker))}, out / "checkpoint-000001" / "trainer_state.pt")
    res = CliRunner().invoke(app, ["train", "--method", "sft", "--model", str(tiny), "--data", str(data[0]),
                                   "--out", str(out), "--resume", "--set", "train.max_steps=2",
                                   "--set", "train.num_workers=0", "--set", "train.progress=false"])
    assert res.exit_code == 2, res.output
    assert not marker.exists()  # the planted code never ran
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines[-1].startswith("mcts-engine train: ") and "refusing to load" in lines[-1]
    assert "Traceback" not in res.output


def test_cpu_optimizer_is_fused_adamw_with_the_loop_versions_steps():
    """On CPU the optimizer is torch's fused AdamW (as TRL's Trainer picks by default); its steps equal the
    per-tensor loop's within float tolerance, so the change is speed only."""
    from mcts_engine.train.optim import build_optimizer
    from mcts_engine.train.runtime import setup_runtime

    cfg = train_config_from_recipe({"train": {"lr": 1e-2, "weight_decay": 0.1}})
    rt = setup_runtime(cfg, "cpu")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LayerNorm(5))
    twin = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LayerNorm(5))
    twin.load_state_dict(model.state_dict())
    fused = build_optimizer(model, cfg, rt)
    assert fused.defaults["fused"] is True
    loop = torch.optim.AdamW([{"params": [twin[0].weight], "weight_decay": 0.1},
                              {"params": [twin[0].bias, twin[1].weight, twin[1].bias], "weight_decay": 0.0}],
                             lr=1e-2, foreach=False)
    x = torch.randn(8, 6)
    for _ in range(5):
        for m, opt in ((model, fused), (twin, loop)):
            m(x).pow(2).sum().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
