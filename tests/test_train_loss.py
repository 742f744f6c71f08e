"""GRPO's step arithmetic (issue 13 items 5, 6, 10): truncated importance sampling, the batch std gathered over
ranks, the constant-normaliser loss (dr_grpo), masking truncated completions, zero-variance groups, and the
reference model held in the training dtype."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch

from mcts_engine.testing.tiny_model import build_tiny_model, grpo_rows, write_parquet
from mcts_engine.train.advantages import (
    group_advantages,
    pooled_std,
    token_weights,
    truncated_importance_weights,
    zero_variance,
)
from mcts_engine.train.config import RunArgs, train_config_from_recipe


def test_truncated_importance_weights_hand_computed():
    # Guards item 5: the vLLM backend's samples were trained as if the trainer had sampled them.
    old = torch.log(torch.tensor([0.5, 0.2, 0.9, 0.1]))
    sampler = torch.log(torch.tensor([0.5, 0.4, 0.3, 0.01]))  # ratios 1, 0.5, 3, 10
    w, st = truncated_importance_weights(old, sampler, cap=2.0)
    assert w.tolist() == pytest.approx([1.0, 0.5, 2.0, 2.0])
    assert st["sum"] == pytest.approx(14.5) and st["n"] == 4 and st["truncated"] == 2
    assert (st["min"], st["max"]) == pytest.approx((0.5, 10.0))
    assert not w.requires_grad


def test_batch_std_is_gathered_over_ranks_before_scaling():
    # Guards item 6: scale_rewards=batch used each rank's own std, so 2 ranks differed from one process.
    torch.manual_seed(0)
    rewards = torch.rand(4, 4)
    one_process = group_advantages(rewards, "batch", eps=0.0)
    parts = (rewards[:2], rewards[2:])  # rank 0 and rank 1's prompts
    sums = [sum(float(x) for x in col) for col in zip(*[(p.numel(), p.sum(), (p.double() ** 2).sum()) for p in parts])]
    std = pooled_std(*sums)  # what the step computes from rt.all_sum
    ranks = torch.cat([group_advantages(p, "batch", eps=0.0, batch_std=std) for p in parts])
    assert torch.allclose(ranks, one_process, atol=1e-6)
    local = torch.cat([group_advantages(p, "batch", eps=0.0) for p in parts])
    assert not torch.allclose(local, one_process, atol=1e-3)  # what each rank's own std gave


def test_dr_grpo_normaliser_is_a_constant():
    seq = torch.tensor([0, 0, 0, 1])  # a 3-token and a 1-token completion
    lens = torch.tensor([3.0, 1.0])
    w = token_weights(seq, lens, "dr_grpo", n_tokens=4, n_seqs=2, max_tokens=8)
    assert w.tolist() == pytest.approx([1 / 16] * 4)  # 1 / (completions x budget), whatever the lengths
    assert token_weights(seq, lens, "sequence", 4, 2).tolist() == pytest.approx([1 / 6, 1 / 6, 1 / 6, 1 / 2])
    assert token_weights(seq, lens, "token", 4, 2).tolist() == pytest.approx([0.25] * 4)
    with pytest.raises(ValueError):
        token_weights(seq, lens, "dr_grpo", 4, 2)


def test_zero_variance_groups():
    r = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.5]])
    assert zero_variance(r).tolist() == [True, False, True]
    assert pooled_std(1, 1.0, 1.0) == 0.0 and pooled_std(2, 1.0, 1.0) == pytest.approx(math.sqrt(0.5))


# --- on the tiny model ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_grpo(tmp_path_factory):
    d = tmp_path_factory.mktemp("grpo")
    return build_tiny_model(d / "tiny"), write_parquet(grpo_rows(4), d / "grpo.parquet")


def run(tiny_grpo, out, **grpo):
    from mcts_engine.train.grpo import run_grpo

    model, data = tiny_grpo
    extra = grpo.pop("train", {})
    cfg = train_config_from_recipe({"train": {
        "lr": 1e-3, "max_steps": 2, "batch_size": 8, "num_workers": 0, "warmup_ratio": 0.0, "progress": False,
        **extra, "grpo": {"group_size": 4, "prompts_per_step": 2, "max_new_tokens": 8, **grpo}}})
    run_grpo(RunArgs("grpo", str(model), str(data), str(out)), cfg)
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if "reward" in r and "event" not in r], recs


def test_zero_variance_steps_warn_and_are_filtered(tiny_grpo, tmp_path, caplog):
    # Guards item 10: a step whose groups all had equal rewards logged reward 0 / grad norm 0 with no warning;
    # the untrained tiny model never writes the format: every group scores 0.
    with caplog.at_level(logging.WARNING, logger="mcts_engine.train"):
        steps, _ = run(tiny_grpo, tmp_path / "zv", filter_zero_variance=True)
    warned = [r for r in caplog.records if "every group's rewards are equal" in r.getMessage()]
    assert len(warned) == len(steps) == 2
    for s in steps:
        assert s["zero_std_frac"] == 1.0 and s["kept_frac"] == 0.0 and s["grad_norm"] == 0.0


def test_mask_truncated_keeps_truncated_completions_out_of_the_loss(tiny_grpo, tmp_path):
    # max_new_tokens 8: the untrained model never stops that early, every completion is truncated
    steps, _ = run(tiny_grpo, tmp_path / "mt", mask_truncated=True)
    assert all(s["truncated_rate"] == 1.0 and s["kept_frac"] == 0.0 and s["grad_norm"] == 0.0 for s in steps)
    steps, _ = run(tiny_grpo, tmp_path / "keep", mask_truncated=False, loss_type="dr_grpo")
    assert all(s["kept_frac"] == 1.0 for s in steps)


def test_reference_model_is_held_in_the_training_dtype(tiny_grpo, tmp_path, monkeypatch):
    # Guards item 10: under bf16 autocast the frozen reference was loaded in fp32 (twice the memory).
    import mcts_engine.train.model as model_mod

    dtypes = []
    real = model_mod.load_model

    def spy(path, dtype, *a, **kw):
        dtypes.append(dtype)
        return real(path, dtype, *a, **kw)

    monkeypatch.setattr(model_mod, "load_model", spy)
    steps, recs = run(tiny_grpo, tmp_path / "ref", beta=0.1, train={"precision": "bf16", "max_steps": 1})
    assert dtypes == [torch.float32, torch.bfloat16]  # the policy (fp32 masters under autocast), the reference
    assert "kl" in steps[0]
    start = next(r for r in recs if r.get("event") == "start")
    assert start["sampling"]["repetition_penalty"] == 1.0 and start["sampling"]["stop_strings"] == ["</answer>"]
