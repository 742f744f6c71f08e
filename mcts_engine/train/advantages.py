"""GRPO's per-step arithmetic from the rewards to the loss (pure functions over tensors and numbers).

- :func:`clipped_surrogate`, :func:`kl_k3`, :func:`grpo_loss` — the clipped surrogate ``-min(ρA, clip(ρ)A)`` and the
  k3 KL estimator (see ``grpo``'s docstring for the algorithm).
- :func:`group_advantages` — ``A = (r - mean_group(r)) / (std + eps)``. The std is the *sample* std (Bessel's
  correction, divide by n - 1), as in TRL's GRPOTrainer and verl: ``scale_rewards: group`` uses each group's,
  ``batch`` the std of every reward of the step on every rank (``batch_std``, from sums gathered over ranks
  BEFORE scaling, so two ranks equal one process), ``none`` no scaling (Dr. GRPO, Liu et al. 2025,
  "Understanding R1-Zero-Like Training: A Critical Perspective").
- :func:`token_weights` — how the per-token losses are normalised into the step loss ``Σ w_t ℓ_t``:
  ``token`` (DAPO): ``1 / n_tokens`` (every completion token of the step, all ranks); ``sequence`` (original
  GRPO): ``1 / (len(seq) · n_seqs)``; ``dr_grpo`` (Dr. GRPO): ``1 / (n_seqs · L_max)`` with the constant
  generation budget ``L_max`` (``max_new_tokens`` x turns) — no length normalisation, so longer wrong answers
  are not favoured.
- :func:`zero_variance` — groups whose rewards are all equal (no learning signal: every advantage is 0). With
  ``filter_zero_variance`` they leave the loss and its normalisers; a step where every group is such is reported.
- :func:`truncated_importance_weights` — truncated importance sampling (TIS) for a rollout engine whose
  sampling distribution differs from the trainer's (vLLM kernels, precision): each token's loss is weighted by
  ``min(π_old(y_t) / π_sampler(y_t), C)`` (Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You
  Off-Policy RL Training"; TRL's ``vllm_importance_sampling_correction``, token level, cap C = 2 by default).
"""

from __future__ import annotations

import math

import torch

LOSS_TYPES = ("token", "sequence", "dr_grpo")


def group_advantages(rewards: torch.Tensor, scale: str = "group", eps: float = 1e-4,
                     batch_std: float | None = None) -> torch.Tensor:
    """``rewards`` (P prompts, G samples) → advantages of the same shape.

    ``group``: (r - group mean) / (group sample std + eps); ``batch``: (r - group mean) / (``batch_std`` + eps),
    ``batch_std`` defaulting to the sample std of ``rewards`` (pass the std over all ranks, :func:`pooled_std`);
    ``none``: r - group mean. A group of equal rewards gets 0.
    """
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be (prompts, group), got shape {tuple(rewards.shape)}")
    r = rewards.double()
    centered = r - r.mean(dim=1, keepdim=True)
    if scale == "group":
        adv = centered / (r.std(dim=1, unbiased=True, keepdim=True) + eps)
    elif scale == "batch":
        std = float(r.std(unbiased=True)) if batch_std is None else batch_std
        adv = centered / (std + eps)
    elif scale == "none":
        adv = centered
    else:
        raise ValueError(f"scale_rewards must be group, batch or none, got {scale!r}")
    return adv.to(rewards.dtype)


def pooled_std(n: float, total: float, total_sq: float) -> float:
    """Sample std (Bessel) of values known by their count, sum and sum of squares (summed over ranks)."""
    if n < 2:
        return 0.0
    var = (total_sq - total * total / n) / (n - 1)
    return math.sqrt(max(var, 0.0))


def zero_variance(rewards: torch.Tensor) -> torch.Tensor:
    """(P,) bool: the groups (rows of ``rewards``) whose rewards are all equal."""
    return (rewards.max(dim=1).values - rewards.min(dim=1).values) == 0


def token_weights(seq_index: torch.Tensor, seq_lengths: torch.Tensor, mode: str, n_tokens: float, n_seqs: float,
                  max_tokens: float = 0.0) -> torch.Tensor:
    """Weight of each token in the step loss ``Σ w_t ℓ_t``. ``seq_index[t]`` = the completion token t belongs to
    (row of the micro-batch), ``seq_lengths[row]`` = that completion's trained tokens; ``n_tokens``/``n_seqs`` are
    the step's global totals (of the completions that count); ``max_tokens`` = dr_grpo's constant budget.
    token: 1/n_tokens; sequence: 1/(len(seq)·n_seqs); dr_grpo: 1/(n_seqs·max_tokens)."""
    if mode == "token":
        return torch.full(seq_index.shape, 1.0 / max(n_tokens, 1.0), dtype=torch.float32, device=seq_index.device)
    if mode == "sequence":
        lens = seq_lengths.to(seq_index.device).float()[seq_index]
        return 1.0 / (lens.clamp(min=1.0) * max(n_seqs, 1.0))
    if mode == "dr_grpo":
        if max_tokens <= 0:
            raise ValueError("dr_grpo needs the constant max_tokens (> 0)")
        return torch.full(seq_index.shape, 1.0 / (max(n_seqs, 1.0) * max_tokens), dtype=torch.float32,
                          device=seq_index.device)
    raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {mode!r}")


def truncated_importance_weights(old_logp: torch.Tensor, sampler_logp: torch.Tensor,
                                 cap: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-token ``min(exp(old - sampler), cap)`` (no gradient) and the ratio's statistics before truncation:
    mean, min, max and the fraction of tokens truncated (ratio > cap). Counts, not means, are returned for the
    sums a step gathers over ranks: ``sum``, ``min``, ``max``, ``truncated``, ``n``."""
    ratio = torch.exp((old_logp.detach() - sampler_logp.to(old_logp.device)).float())
    n = ratio.numel()
    stats = {"sum": float(ratio.sum()), "min": float(ratio.min()) if n else 1.0,
             "max": float(ratio.max()) if n else 1.0, "truncated": float((ratio > cap).sum()), "n": float(n)}
    return ratio.clamp(max=cap), stats


def clipped_surrogate(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, eps_low: float, eps_high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO/GRPO loss ``-min(ρA, clip(ρ, 1-ε_low, 1+ε_high)A)`` and a mask of tokens where the clip is
    active (the clipped term is the smaller one, so the token passes no gradient)."""
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * advantages
    loss = -torch.minimum(unclipped, clipped)
    active = clipped < unclipped
    return loss, active


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(π‖π_ref): ``exp(q - p) - (q - p) - 1`` (≥ 0, unbiased, low variance)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    weights: torch.Tensor,
    eps_low: float,
    eps_high: float,
    beta: float = 0.0,
    ref_logp: torch.Tensor | None = None,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The step loss contribution of these tokens: ``Σ w_t (tis_t · surrogate_t + β·k3_t)``, plus per-token stats
    (``is_weights`` = the truncated importance weights of a rollout engine's samples; None = 1)."""
    per_token, active = clipped_surrogate(logp, old_logp, advantages, eps_low, eps_high)
    if is_weights is not None:
        per_token = per_token * is_weights
    stats = {"clipped": active}
    if beta > 0:
        if ref_logp is None:
            raise ValueError("beta > 0 needs ref_logp")
        kl = kl_k3(logp, ref_logp)
        per_token = per_token + beta * kl
        stats["kl"] = kl.detach()
    return (weights * per_token).sum(), stats


__all__ = ["LOSS_TYPES", "clipped_surrogate", "group_advantages", "grpo_loss", "kl_k3", "pooled_std", "token_weights",
           "truncated_importance_weights", "zero_variance"]
