"""The optimizer, its schedule and gradient clipping.

- AdamW; no weight decay on biases and norms (tensors with < 2 dims). Linear warmup, then cosine (or linear, or
  constant) to ``lr·min_lr_ratio``, stepped once per optimizer step.
- Low-precision weights (``precision: bf16-pure``) train through :class:`MasterWeightsAdamW`: AdamW runs on fp32
  master copies and the bf16 weights are rounded from them after every step (mixed-precision training with master
  weights, Micikevicius et al. 2018, "Mixed Precision Training"). Without them an update smaller than half a bf16
  ulp (≈ 2^-9 of the weight) rounds away: at lr 1e-6 almost no weight of a model ever changes. The masters cost
  4 bytes per trainable parameter (the Adam moments already cost 8); the bf16 weights are what the forward and
  backward pass use.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .config import TrainConfig
from .model import TrainSetupError

if TYPE_CHECKING:
    from .runtime import Runtime


class MasterWeightsAdamW:
    """AdamW on fp32 copies of low-precision parameters. ``step`` copies each parameter's gradient into its master
    (fp32), steps AdamW there (``inner``, what the schedule drives) and rounds the master back into the parameter;
    ``state_dict`` holds the inner optimizer's state plus the masters (plain tensors: loads with
    ``weights_only=True``), so a resumed run continues from the exact fp32 weights."""

    def __init__(self, groups: list[dict[str, Any]], **kwargs: Any) -> None:
        self.params: list[nn.Parameter] = [p for g in groups for p in g["params"]]
        self.masters = [p.detach().clone().float().requires_grad_(True) for p in self.params]
        it = iter(self.masters)
        inner_groups = [{**g, "params": [next(it) for _ in g["params"]]} for g in groups]
        self.inner = torch.optim.AdamW(inner_groups, **kwargs)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.inner.param_groups

    @torch.no_grad()
    def step(self) -> None:
        for p, m in zip(self.params, self.masters):
            m.grad = None if p.grad is None else p.grad.detach().float()
        self.inner.step()
        for p, m in zip(self.params, self.masters):
            p.copy_(m)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None
        self.inner.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), "masters": [m.detach().clone() for m in self.masters]}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        for p, m, saved in zip(self.params, self.masters, state["masters"]):
            m.copy_(saved)
            p.copy_(m)
        self.inner.load_state_dict(state["inner"])


def master_copies(optimizer: Any) -> Iterable[tuple[nn.Parameter, torch.Tensor]]:
    """(parameter, its fp32 master) pairs when ``optimizer`` keeps masters; empty otherwise."""
    if isinstance(optimizer, MasterWeightsAdamW):
        return zip(optimizer.params, optimizer.masters)
    return ()


def build_optimizer(model: nn.Module, cfg: TrainConfig, rt: Runtime) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    if not decay and not no_decay:
        raise TrainSetupError("nothing to train: every parameter is frozen")
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs: dict[str, Any] = {"lr": cfg.lr, "betas": (cfg.adam_beta1, cfg.adam_beta2)}
    if rt.device.type in ("cuda", "cpu") and not (rt.distributed and cfg.distributed == "fsdp"):
        kwargs["fused"] = True  # one kernel over all tensors (CPU too, torch >= 2.4: ~ 3x cheaper than the loop)
    groups = [g for g in groups if g["params"]]
    if any(p.dtype != torch.float32 for g in groups for p in g["params"]):
        return MasterWeightsAdamW(groups, **kwargs)
    return torch.optim.AdamW(groups, **kwargs)


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the base lr for optimizer step ``step`` (0-based) of ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(1, total - warmup)
    progress = min(1.0, max(0.0, (step - warmup) / span))
    if schedule == "linear":
        decay = 1.0 - progress
    else:  # cosine
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * decay


def build_scheduler(optimizer: Any, cfg: TrainConfig, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = int(round(cfg.warmup_ratio * total))
    return torch.optim.lr_scheduler.LambdaLR(
        getattr(optimizer, "inner", optimizer), lambda s: lr_factor(s, total, warmup, cfg.schedule, cfg.min_lr_ratio)
    )


def clip_and_norm(params: list[nn.Parameter], max_norm: float) -> float:
    """Clip the global gradient norm to ``max_norm`` (0 = no clipping); returns the norm before clipping."""
    limit = max_norm if max_norm > 0 else float("inf")
    norm = torch.nn.utils.clip_grad_norm_(params, limit)
    if hasattr(norm, "full_tensor"):  # DTensor under FSDP
        norm = norm.full_tensor()
    return float(norm)


__all__ = ["MasterWeightsAdamW", "build_optimizer", "build_scheduler", "clip_and_norm", "lr_factor", "master_copies"]
