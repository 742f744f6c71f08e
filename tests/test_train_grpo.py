"""GRPO: the math against hand-computed values, the rewards (the search's verifiers), turn cutting, and a toy task
the tiny model learns (answer "left" whatever the image): the mean group reward rises."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import pytest
import torch

from mcts_engine.testing.tiny_model import build_tiny_model, chain, grpo_rows, sft_rows, write_parquet
from mcts_engine.train.config import RewardWeights, RunArgs, train_config_from_recipe
from mcts_engine.train.grpo import clipped_surrogate, group_advantages, grpo_loss, kl_k3, token_weights

# --- advantages and loss ----------------------------------------------------------------------------


def test_group_advantages_hand_computed():
    # Guards issue 13 item 8: the std is the SAMPLE std (Bessel's correction, n - 1) as in TRL and verl; with the
    # population std the first group gave exactly ±1.
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]])
    s = 0.5 / math.sqrt(1 / 3)  # group 0: mean .5, sample var 4·.25/3
    assert group_advantages(r, "group", eps=0.0)[0].tolist() == pytest.approx([s, -s, -s, s])
    assert group_advantages(r, "group", eps=1e-4)[1].tolist() == [0.0] * 4  # equal rewards: no signal
    # batch std: values 1,0,0,1,.5,.5,.5,.5 → mean .5, sample var (4 · .25)/7
    batch = group_advantages(r, "batch", eps=0.0)
    b = 0.5 / math.sqrt(1 / 7)
    assert batch[0].tolist() == pytest.approx([b, -b, -b, b]) and b == pytest.approx(1.3228757)
    assert group_advantages(r, "none")[0].tolist() == [0.5, -0.5, -0.5, 0.5]
    g = group_advantages(torch.tensor([[2.0, 0.0, 1.0]]), "group", eps=0.0)  # mean 1, sample std 1
    assert g[0].tolist() == pytest.approx([1.0, -1.0, 0.0])
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(4), "group")


def test_clipped_surrogate_hand_computed():
    old = torch.zeros(4)
    logp = torch.log(torch.tensor([1.5, 0.5, 0.5, 1.5]))
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    loss, active = clipped_surrogate(logp, old, adv, eps_low=0.2, eps_high=0.28)
    # ρ=1.5,A=+1: min(1.5, 1.28)=1.28 (clipped) | ρ=.5,A=+1: min(.5,.8)=.5 | ρ=.5,A=-1: min(-.5,-.8)=-.8 (clipped)
    # ρ=1.5,A=-1: min(-1.5,-1.28)=-1.5
    assert loss.tolist() == pytest.approx([-1.28, -0.5, 0.8, 1.5])
    assert active.tolist() == [True, False, True, False]


def test_kl_k3_hand_computed():
    logp = torch.log(torch.tensor([0.5, 0.3]))
    ref = torch.log(torch.tensor([0.25, 0.3]))
    # d = log(.25/.5) = -log 2: exp(d) - d - 1 = .5 + log 2 - 1
    assert kl_k3(logp, ref).tolist() == pytest.approx([0.5 + math.log(2) - 1.0, 0.0], abs=1e-7)


def test_token_weights_and_loss_gradient_hand_computed():
    seq_index = torch.tensor([0, 1, 1, 1])  # completion 0 has 1 token, completion 1 has 3
    lengths = torch.tensor([1.0, 3.0])
    assert token_weights(seq_index, lengths, "token", n_tokens=4, n_seqs=2).tolist() == [0.25] * 4
    assert token_weights(seq_index, lengths, "sequence", n_tokens=4, n_seqs=2).tolist() == pytest.approx(
        [0.5, 1 / 6, 1 / 6, 1 / 6])
    logp = torch.log(torch.tensor([0.5, 0.2, 0.4, 0.8])).requires_grad_()
    adv = torch.tensor([2.0, -1.0, -1.0, -1.0])
    w = token_weights(seq_index, lengths, "token", 4, 2)
    loss, stats = grpo_loss(logp, logp.detach(), adv, w, 0.2, 0.2)  # on-policy: ρ ≡ 1
    assert float(loss.detach()) == pytest.approx(-(0.25 * 2 - 0.25 * 3))
    loss.backward()
    assert logp.grad.tolist() == pytest.approx([-0.5, 0.25, 0.25, 0.25])  # -w·A
    assert not stats["clipped"].any()
    ref = logp.detach() - 0.1
    loss_kl, stats = grpo_loss(logp.detach(), logp.detach(), adv, w, 0.2, 0.2, beta=0.5, ref_logp=ref)
    k3 = math.exp(-0.1) + 0.1 - 1
    assert float(loss_kl) == pytest.approx(0.25 + 0.5 * k3, rel=1e-5)
    assert stats["kl"].tolist() == pytest.approx([k3] * 4, rel=1e-4)


# --- rewards ----------------------------------------------------------------------------------------


def test_rewards_use_the_task_verifier_format_and_grounding():
    from mcts_engine.train.rewards import frame_of, score_completion, task_for

    task = task_for("sat2")
    truth = {"answer": "left", "choices": ["left", "right"]}
    frame = frame_of(56, 56)
    w = RewardWeights(accuracy=1.0, format=0.5, grounding=0.25)
    good = score_completion(chain("left", [(10, 20)]), task, truth, frame, w)
    assert (good.total, good.correct, good.format, good.grounding) == (1.75, True, 1.0, 1.0)
    assert score_completion(chain("(A)", [(10, 20)]), task, truth, frame, w).correct  # the letter counts too
    wrong = score_completion(chain("right", [(10, 20)]), task, truth, frame, w)
    assert (wrong.total, wrong.accuracy) == (0.75, 0.0)
    outside = score_completion(chain("left", [(56, 20), (3, 99)]), task, truth, frame, w)
    assert outside.grounding == 0.0 and outside.total == 1.5  # x = width is outside (0-based pixels)
    loose = score_completion("I think the cup is at (3, 4) <answer> left </answer>", task, truth, frame, w)
    assert (loose.format, loose.accuracy, loose.grounding) == (0.0, 1.0, 1.0)
    trailing = score_completion("I think <answer> left </answer> at (3, 4)", task, truth, frame, w)
    assert (trailing.format, trailing.accuracy) == (0.0, 0.0)  # text after the answer block: rejected whole
    substring = score_completion(chain("left and right", [(1, 1)]), task, truth, frame, w)
    assert substring.accuracy == 0.0  # strict verifier: never a substring match
    assert score_completion("", task, truth, frame, w).total == 0.0


def test_cut_turn_at_end_token_stop_string_or_truncation():
    from mcts_engine.train.rollout import cut_turn

    class Tok:
        def decode(self, ids, skip_special_tokens=False):
            return "".join({5: "a", 6: "</tool_call>", 7: "b"}.get(i, "?") for i in ids)

    assert cut_turn([5, 5, 2, 0, 0], (2,), 0, (), Tok()) == ([5, 5, 2], False)
    assert cut_turn([5, 6, 7, 2, 0], (2,), 0, ("</tool_call>",), Tok()) == ([5, 6], False)
    assert cut_turn([5, 7, 7], (2,), 0, (), Tok()) == ([5, 7, 7], True)


# --- the loop on a toy task ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """The tiny model after a short SFT on chains that answer left or right (50/50): it writes the format."""
    from mcts_engine.train.sft import run_sft

    d = tmp_path_factory.mktemp("grpo")
    tiny = build_tiny_model(d / "tiny")
    data = write_parquet(sft_rows(8), d / "sft.parquet")
    cfg = train_config_from_recipe({"train": {"lr": 3e-3, "max_steps": 120, "batch_size": 4, "num_workers": 0,
                                              "warmup_ratio": 0.05, "log_every": 40}})
    run_sft(RunArgs("sft", str(tiny), str(data), str(d / "sft")), cfg)
    prompts = write_parquet(grpo_rows(8, answer="left"), d / "grpo.parquet")
    return d / "sft" / "final", prompts


def mean_reward(model_dir: Path, prompts: Path, samples: int = 16, seed: int = 1234) -> float:
    """Mean total reward of ``samples`` completions on each of 4 prompts (fixed sampling seed)."""
    from mcts_engine.train.data import GRPO_REQUIRED, RowSource, SpecialIds
    from mcts_engine.train.grpo import PromptSet
    from mcts_engine.train.model import load_model, load_processor
    from mcts_engine.train.rewards import score_completion, task_for
    from mcts_engine.train.rollout import Sampling, rollout

    processor = load_processor(str(model_dir))
    model = load_model(str(model_dir), torch.float32).eval()
    src = RowSource(prompts, GRPO_REQUIRED, "GRPO")
    ps = PromptSet(src, list(range(4)), processor)
    encoded, metas = zip(*(ps.get(i) for i in range(4)))
    torch.manual_seed(seed)
    eps = rollout(model, list(encoded), samples, Sampling(48, 1.0), SpecialIds.from_processor(processor),
                  processor.tokenizer, torch.device("cpu"), contextlib.nullcontext())
    total = [score_completion(e.completion_text, task_for("sat2"), metas[e.prompt_index]["truth"],
                              metas[e.prompt_index]["frame"], RewardWeights()).total for e in eps]
    return sum(total) / len(total)


def test_grpo_raises_the_mean_reward_on_a_learnable_toy_task(warm, tmp_path):
    from mcts_engine.train.grpo import run_grpo

    sft_model, prompts = warm
    cfg = train_config_from_recipe({"train": {
        "lr": 5e-4, "max_steps": 40, "batch_size": 32, "num_workers": 0, "warmup_ratio": 0.0, "schedule": "constant",
        "grpo": {"group_size": 8, "prompts_per_step": 4, "max_new_tokens": 48}}})
    out = tmp_path / "grpo"
    summary = run_grpo(RunArgs("grpo", str(sft_model), str(prompts), str(out)), cfg)
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in recs if "reward" in r and "event" not in r]
    assert len(steps) == 40
    for key in ("reward", "reward_accuracy", "reward_format", "reward_grounding", "accuracy", "format_rate",
                "completion_len", "clip_frac", "lr", "grad_norm", "truncated_rate"):
        assert key in steps[0], key
    assert "kl" not in steps[0]  # beta = 0: no reference model, no KL term
    before = mean_reward(sft_model, prompts)
    after = mean_reward(Path(summary["final"]), prompts)
    # measured over 3 model seeds x 2 run seeds: +0.24 to +0.52 (reward in [0, 2]); reward/accuracy climb together
    assert after > before + 0.15, (before, after)
    early = sum(r["reward"] for r in steps[:8]) / 8
    late = sum(r["reward"] for r in steps[-8:]) / 8
    assert late > early, (early, late)


def test_kl_reference_and_several_iterations_per_batch(warm, tmp_path):
    from mcts_engine.train.grpo import run_grpo

    sft_model, prompts = warm
    cfg = train_config_from_recipe({"train": {
        "lr": 1e-3, "max_steps": 2, "batch_size": 8, "num_workers": 0, "warmup_ratio": 0.0,
        "grpo": {"group_size": 4, "prompts_per_step": 2, "max_new_tokens": 32, "beta": 0.1, "iterations": 3,
                 "loss_agg": "sequence", "scale_rewards": "batch"}}})
    out = tmp_path / "kl"
    run_grpo(RunArgs("grpo", str(sft_model), str(prompts), str(out)), cfg)
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in steps if "reward" in r and "event" not in r]
    assert len(steps) == 2 and all(r["kl"] >= 0 for r in steps)
    assert steps[-1]["kl"] > 0  # the policy moved away from the reference after the first step's updates


def test_rollout_is_turn_shaped_observations_are_never_trained(warm):
    """The multi-turn hook: an environment answers turn 1 with an observation; the policy writes turn 2."""
    from mcts_engine.train.data import GRPO_REQUIRED, RowSource, SpecialIds
    from mcts_engine.train.grpo import PromptSet
    from mcts_engine.train.model import load_model, load_processor
    from mcts_engine.train.rollout import Sampling, rollout

    model_dir, prompts = warm
    processor = load_processor(str(model_dir))
    model = load_model(str(model_dir), torch.float32).eval()
    ids = SpecialIds.from_processor(processor)
    obs = processor.tokenizer.encode("\n<|im_start|>user\n<observation> a crop </observation><|im_end|>\n"
                                     "<|im_start|>assistant\n", add_special_tokens=False)

    class OneObservation:
        stop = ()

        def observe(self, episode, turn_text):
            return obs if len(episode.turns) == 1 else None

    ps = PromptSet(RowSource(prompts, GRPO_REQUIRED, "GRPO"), [0, 1], processor)
    encoded = [ps.get(i)[0] for i in range(2)]
    torch.manual_seed(0)
    eps = rollout(model, encoded, 3, Sampling(24, 1.0), ids, processor.tokenizer, torch.device("cpu"),
                  contextlib.nullcontext(), env=OneObservation(), max_turns=2)
    assert [e.prompt_index for e in eps] == [0, 0, 0, 1, 1, 1]
    for e in eps:
        kinds = [s.trainable for s in e.segments]
        assert kinds == ([True] if e.truncated and len(e.turns) == 1 else [True, False, True]), kinds
        row = e.training_row()
        n_prompt = len(e.prompt["input_ids"])
        assert not row["target_mask"][:n_prompt].any()
        trained = row["input_ids"][row["target_mask"]].tolist()
        assert trained == [t for s in e.segments if s.trainable for t in s.ids]
        assert e.completion_tokens == len(trained) and len(e.turns) == sum(kinds)
        assert not set(trained) & set(ids.vision)  # vision placeholders are never sampled
