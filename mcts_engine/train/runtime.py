"""What SFT and GRPO share around the math: devices and ranks, precision, DDP/FSDP wrapping, the optimizer and
schedule, checkpoints and resume, metrics.

Choices:
- Distributed = launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment): NCCL on GPUs, gloo on CPU.
  Every rank holds the same model; data is split by rank. DDP by default; FSDP2 (``fully_shard`` per decoder
  layer and vision block, then the root) with ``train.distributed=fsdp``, for full fine-tunes that do not fit.
- Precision ``auto``: on GPU, fp32 master weights with bf16 autocast (FSDP: bf16 compute, fp32 reduce); on CPU,
  fp32. ``bf16-pure`` keeps the weights themselves in bf16 and fp32 masters in the optimizer (``optim.py``).
- The optimizer and schedule: ``optim.py``.
- A checkpoint is ``<out>/checkpoint-<step>/``: an HF model + processor (servable as is) and ``trainer_state.pt``
  (optimizer, schedule, step, RNG), written last, so a directory without it is incomplete and ignored on resume.
  The final model goes to ``<out>/final/``. Model weights are saved in the training dtype (bf16 for a bf16 run,
  ``config.json``'s ``dtype`` says so); a step checkpoint of fp32 weights saved in bf16 also holds them in fp32
  (``master_weights.safetensors``) so resume is exact. Everything ``--resume`` reads loads with
  ``torch.load(weights_only=True)`` (a planted pickle is refused, never run). Metrics: ``trackers.py``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import TrainConfig
from .model import TrainSetupError
from .optim import MasterWeightsAdamW, build_optimizer, build_scheduler, clip_and_norm, lr_factor  # noqa: F401
from .trackers import Metrics, require_trackers  # noqa: F401  (the trainers import them from here)

log = logging.getLogger("mcts_engine.train")

STATE_FILE = "trainer_state.pt"
MASTERS_FILE = "master_weights.safetensors"  # fp32 weights of a run saved in bf16 (exact resume)
CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


# ------------------------------------------------------------------------------------------------
# Ranks, devices, precision
# ------------------------------------------------------------------------------------------------


@dataclass
class Runtime:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    param_dtype: torch.dtype
    autocast_dtype: torch.dtype | None
    distributed: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def train_dtype(self) -> torch.dtype:
        """The dtype the model computes in: bf16 under bf16 autocast or bf16-pure, else fp32. A frozen reference
        model is held in it, and checkpoints are saved in it (``config.json``'s ``dtype`` says so)."""
        return self.autocast_dtype or self.param_dtype

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def all_sum(self, *values: float) -> list[float]:
        """Sum numbers over ranks (float64 on the training device)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(t)
        return t.tolist()

    def all_max(self, *values: float) -> list[float]:
        """Max of numbers over ranks."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def peak_memory_gb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**30
        try:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB
        except Exception:
            return float("nan")

    def close(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def setup_runtime(cfg: TrainConfig, device: str = "auto") -> Runtime:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainSetupError("--device cuda: no CUDA device is available")
        dev = torch.device("cuda", local_rank if world > 1 else (torch.device(device).index or 0))
        torch.cuda.set_device(dev)
    else:
        dev = torch.device(device)
    distributed = world > 1
    if distributed:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if dev.type == "cuda" else "fp32"
    if precision.startswith("bf16") and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        log.warning("this GPU has no bf16: training in fp32")
        precision = "fp32"
    param_dtype = torch.bfloat16 if precision == "bf16-pure" else torch.float32
    autocast_dtype = torch.bfloat16 if precision == "bf16" else None
    return Runtime(rank, world, local_rank, dev, param_dtype, autocast_dtype, distributed)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass


def rng_state() -> dict[str, Any]:
    """Every RNG's state as plain lists, numbers and tensors (loads with ``torch.load(weights_only=True)``)."""
    version, mt, gauss = random.getstate()
    state: dict[str, Any] = {"python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64),
                                        "gauss": gauss},
                             "torch": torch.get_rng_state()}
    try:
        import numpy as np

        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = {"kind": str(kind), "keys": torch.from_numpy(keys.astype("int64")), "pos": int(pos),
                          "has_gauss": int(has_gauss), "cached": float(cached)}
    except ImportError:
        pass
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype("uint32"), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def safe_load(path: Path, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)``: tensors, numbers, strings and containers only. A file that would run
    code when unpickled (planted or corrupt) is refused with a one-line error, never executed."""
    import pickle

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise TrainSetupError(f"{path}: refusing to load (not a plain tensor/number file: {first}); "
                              f"delete this checkpoint or resume from an older one") from None


# ------------------------------------------------------------------------------------------------
# Wrapping for multi-process training
# ------------------------------------------------------------------------------------------------


def wrap(scorer: nn.Module, rt: Runtime, cfg: TrainConfig) -> nn.Module:
    """DDP or FSDP2 around the scorer when distributed; the scorer itself otherwise."""
    if not rt.distributed:
        return scorer
    if cfg.distributed == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        from .model import unwrap

        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if rt.autocast_dtype else None
        kw = {"mp_policy": mp} if mp is not None else {}
        base = unwrap(scorer.model)
        layer_types = tuple(
            type(m) for m in base.modules() if type(m).__name__ in set(getattr(base, "_no_split_modules", None) or [])
        )
        for m in base.modules():
            if layer_types and isinstance(m, layer_types):
                fully_shard(m, **kw)
        fully_shard(scorer, **kw)
        return scorer
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [rt.device.index] if rt.device.type == "cuda" else None
    # A trainable vision tower sits idle on a batch without images: let DDP tolerate unused parameters then.
    return DDP(scorer, device_ids=ids, find_unused_parameters=not cfg.freeze_vision)


@contextlib.contextmanager
def grad_sync(wrapped: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on accumulation micro-batches (all but the last)."""
    if enabled:
        yield
        return
    if hasattr(wrapped, "no_sync"):  # DDP
        with wrapped.no_sync():
            yield
        return
    if hasattr(wrapped, "set_requires_gradient_sync"):  # FSDP2
        wrapped.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            wrapped.set_requires_gradient_sync(True)
        return
    yield


def full_state_dict(wrapped: nn.Module, rt: Runtime, cfg: TrainConfig) -> dict[str, torch.Tensor] | None:
    """The HF model's full state dict (gathered from FSDP shards on every rank; keys without the wrapper)."""
    if not (rt.distributed and cfg.distributed == "fsdp"):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(wrapped, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k.removeprefix("model."): v for k, v in sd.items()}


# ------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------


def checkpoints(out: Path) -> list[tuple[int, Path]]:
    """Complete step checkpoints in ``out``, oldest first."""
    found = []
    if out.exists():
        for d in out.iterdir():
            m = CKPT_RE.match(d.name)
            if m and d.is_dir() and (d / STATE_FILE).exists():
                found.append((int(m.group(1)), d))
    return sorted(found)


def check_out_dir(out: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from (None = fresh start). Refuses to overwrite a run without ``--resume``."""
    found = checkpoints(out)
    if resume and (out / "final").exists():
        raise TrainSetupError(f"--out {out}: this run already finished (final/ exists); nothing to resume")
    if resume:
        if not found:
            log.warning("%s: no checkpoint to resume from; starting from the beginning", out)
            return None
        return found[-1][1]
    if found or (out / "final").exists():
        raise TrainSetupError(f"--out {out}: holds a previous run (checkpoints/final); pass --resume or pick a new --out")
    return None


def save_checkpoint(
    out: Path,
    step: int,
    wrapped: nn.Module,
    scorer: nn.Module,
    processor: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    rt: Runtime,
    cfg: TrainConfig,
    extra: dict[str, Any],
) -> Path:
    from .model import save_pretrained

    d = out / f"checkpoint-{step:06d}"
    sd = full_state_dict(wrapped, rt, cfg)
    if rt.is_main:
        save_pretrained(scorer.model, processor, d, state_dict=sd, dtype=rt.train_dtype)
        if hasattr(scorer.model, "save_pretrained") and hasattr(scorer.model, "peft_config"):
            scorer.model.save_pretrained(d / "adapter")
        if rt.train_dtype != rt.param_dtype and sd is None:
            save_masters(scorer.model, d)
    rt.barrier()
    opt_name = f"optimizer.rank{rt.rank}.pt" if cfg.distributed == "fsdp" and rt.distributed else "optimizer.pt"
    if rt.is_main or opt_name != "optimizer.pt":
        torch.save(optimizer.state_dict(), d / opt_name)
    if rt.distributed:  # each rank samples with its own RNG stream
        torch.save(rng_state(), d / f"rng.rank{rt.rank}.pt")
    rt.barrier()
    if rt.is_main:
        state = {"step": step, "scheduler": scheduler.state_dict(), "rng": rng_state(), "world": rt.world,
                 "config": cfg.to_dict(), "extra": extra}
        torch.save(state, d / STATE_FILE)
        for _, old in checkpoints(out)[: -cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    rt.barrier()
    return d


def save_masters(model: nn.Module, ckpt: Path) -> None:
    """The fp32 trainable weights next to a checkpoint saved in a lower dtype: resume continues from them."""
    from safetensors.torch import save_file

    from .model import unwrap

    tensors = {n: p.detach().float().contiguous() for n, p in unwrap(model).named_parameters() if p.requires_grad}
    save_file(tensors, str(ckpt / MASTERS_FILE))


@torch.no_grad()
def load_masters(model: nn.Module, ckpt: Path) -> None:
    """Copy a checkpoint's fp32 trainable weights (``save_masters``) back into the model, when it has them."""
    path = ckpt / MASTERS_FILE
    if not path.exists():
        return
    from safetensors.torch import load_file

    from .model import unwrap

    saved = load_file(str(path))
    for name, p in unwrap(model).named_parameters():
        if name in saved:
            p.copy_(saved[name].to(p.dtype))


def load_trainer_state(
    ckpt: Path, optimizer: torch.optim.Optimizer, scheduler: Any, rt: Runtime, cfg: TrainConfig,
    model: nn.Module | None = None,
) -> dict[str, Any]:
    if model is not None:
        load_masters(model, ckpt)
    state = safe_load(ckpt / STATE_FILE)
    opt_name = f"optimizer.rank{rt.rank}.pt" if cfg.distributed == "fsdp" and rt.distributed else "optimizer.pt"
    if cfg.distributed == "fsdp" and rt.distributed and state.get("world") != rt.world:
        raise TrainSetupError(f"{ckpt}: saved with {state.get('world')} FSDP ranks; resume needs the same number")
    optimizer.load_state_dict(safe_load(ckpt / opt_name, map_location=rt.device))
    scheduler.load_state_dict(state["scheduler"])
    own = ckpt / f"rng.rank{rt.rank}.pt"
    set_rng_state(safe_load(own) if own.exists() else state["rng"])
    if rt.is_main:
        log.warning("resuming from %s (step %d)", ckpt, int(state["step"]))
    return state
