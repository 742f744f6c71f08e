"""Supervised fine-tuning on the SFT export (grounded chains), read top to bottom.

Algorithm and choices:
- Loss = mean negative log-likelihood of the assistant tokens (mask by the assistant header's token sequence,
  ``data.assistant_mask``), averaged over ALL target tokens of an optimizer step: each micro-batch's summed loss is
  divided by the step's global target-token count, so gradient accumulation and data parallelism give exactly the
  gradient of one big batch (no per-micro-batch mean bias towards short rows).
- Rows longer than ``train.max_length`` are skipped and counted (never truncated: image tokens must stay whole).
- The data stream is the concatenation of per-epoch permutations (seeded); optimizer step ``s`` consumes rows
  ``[s·R, (s+1)·R)`` of it (R = batch_size·grad_accum·world), rank ``r`` its ``r``-th slice. Resume is exact.
- Vision tower frozen by default; LoRA optional; bf16 autocast on GPU, fp32 on CPU; gradient clipping; warmup +
  cosine; evaluation loss on ``--val`` every ``eval_every`` steps and at the end.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from .config import RunArgs, TrainConfig
from .data import (
    SFT_REQUIRED,
    RowSource,
    SFTDataset,
    SpecialIds,
    collate,
    frames_of,
    report_scan,
    scan,
    worker_cache_bytes,
)
from .logprobs import TokenScorer, batch_to, model_inputs
from .model import TrainSetupError, build_policy, count_parameters, fit_processor_to_frames, load_processor, save_pretrained
from .runtime import (
    Metrics,
    Runtime,
    build_optimizer,
    build_scheduler,
    check_out_dir,
    clip_and_norm,
    full_state_dict,
    grad_sync,
    load_trainer_state,
    require_trackers,
    save_checkpoint,
    seed_everything,
    setup_runtime,
    wrap,
)

log = logging.getLogger("mcts_engine.train")


def row_stream(kept: list[int], seed: int, shuffle: bool, start: int, count: int) -> list[int]:
    """Positions ``[start, start+count)`` of the endless stream of per-epoch permutations of ``kept``."""
    out: list[int] = []
    n = len(kept)
    pos = start
    while len(out) < count:
        epoch, offset = divmod(pos, n)
        if shuffle:
            g = torch.Generator().manual_seed(seed * 100_003 + epoch)
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        take = min(n - offset, count - len(out))
        out.extend(kept[i] for i in order[offset:offset + take])
        pos += take
    return out


class StepBatches(torch.utils.data.Sampler):
    """Micro-batches of row indices for this rank, from optimizer step ``start`` to ``total``."""

    def __init__(self, kept: list[int], cfg: TrainConfig, rt: Runtime, start: int, total: int) -> None:
        self.kept, self.cfg, self.rt, self.start, self.total = kept, cfg, rt, start, total

    def __len__(self) -> int:
        return (self.total - self.start) * self.cfg.grad_accum

    def __iter__(self):
        per_rank = self.cfg.batch_size * self.cfg.grad_accum
        per_step = per_rank * self.rt.world
        for step in range(self.start, self.total):
            rows = row_stream(self.kept, self.cfg.seed, self.cfg.shuffle, step * per_step, per_step)
            mine = rows[self.rt.rank * per_rank:(self.rt.rank + 1) * per_rank]
            for k in range(self.cfg.grad_accum):
                yield mine[k * self.cfg.batch_size:(k + 1) * self.cfg.batch_size]


def total_steps(n_rows: int, cfg: TrainConfig, world: int) -> int:
    if cfg.max_steps > 0:
        return cfg.max_steps
    per_step = cfg.batch_size * cfg.grad_accum * world
    return max(1, math.ceil(cfg.epochs * n_rows / per_step))


def make_loader(dataset: SFTDataset, sampler: Any, pad_id: int, workers: int, seed: int = 0) -> torch.utils.data.DataLoader:
    """The loader draws its workers' base seed from its OWN generator: the global RNG (LoRA dropout, restored
    exactly on ``--resume``) is never touched by starting an iteration, so a resumed run replays the same masks."""
    return torch.utils.data.DataLoader(
        dataset,
        generator=torch.Generator().manual_seed(seed),
        batch_sampler=sampler,
        collate_fn=functools.partial(collate, pad_id=pad_id),
        num_workers=workers,
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False,
    )


@torch.no_grad()
def evaluate(wrapped: torch.nn.Module, source: RowSource, kept: list[int], processor: Any, ids: SpecialIds,
             cfg: TrainConfig, rt: Runtime) -> float:
    """Mean NLL per assistant token over the val rows (sharded over ranks, summed, then divided).

    Every rank runs the same number of batches (:func:`eval_batches`): a rank short of rows scores a filler batch
    and discards it, because a wrapped model's forward is collective (DDP syncs buffers, FSDP gathers weights) and
    a rank that stopped early would leave the others waiting forever."""
    batches, real = eval_batches(kept, cfg.batch_size, rt.rank, rt.world)
    loader = make_loader(SFTDataset(source, processor, ids), batches, ids.pad, cfg.num_workers, cfg.seed)
    was_training = wrapped.training
    wrapped.eval()
    nll = tokens = 0.0
    for batch, counts in zip(loader, real):
        batch = batch_to(batch, rt.device)
        with rt.autocast():
            logp = wrapped(**model_inputs(batch))
        if counts:
            nll += float(-logp.sum())
            tokens += logp.numel()
    wrapped.train(was_training)
    nll, tokens = rt.all_sum(nll, tokens)
    return nll / max(tokens, 1.0)


def eval_batches(kept: list[int], batch_size: int, rank: int, world: int) -> tuple[list[list[int]], list[bool]]:
    """This rank's eval batches (rows ``kept[rank::world]``), padded with filler batches (``real`` False) to the
    number the rank with the most rows runs."""
    mine = kept[rank::world]
    batches = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
    most = math.ceil(math.ceil(len(kept) / world) / batch_size)
    real = [True] * len(batches) + [False] * (most - len(batches))
    batches += [kept[:1]] * (most - len(batches))
    return batches, real


def run_sft(args: RunArgs, cfg: TrainConfig) -> dict[str, Any]:
    rt = setup_runtime(cfg, args.device)
    try:
        return _run(args, cfg, rt)
    finally:
        rt.close()


def _run(args: RunArgs, cfg: TrainConfig, rt: Runtime) -> dict[str, Any]:
    out = Path(args.out)
    require_trackers(cfg.trackers)  # a one-line install hint before anything loads
    resume_from = check_out_dir(out, args.resume)
    seed_everything(cfg.seed + rt.rank)
    if cfg.lora_r > 0 and cfg.distributed == "fsdp" and rt.distributed:
        raise TrainSetupError("train.distributed=fsdp with LoRA is not supported: use ddp (LoRA already fits)")

    # --- data --------------------------------------------------------------------------------
    processor = load_processor(str(resume_from) if resume_from else args.model)
    train_src = RowSource(args.data, SFT_REQUIRED, "SFT")
    val_src = RowSource(args.val, SFT_REQUIRED, "SFT") if args.val else None
    frames = frames_of(train_src) + (frames_of(val_src) if val_src else [])
    fit_processor_to_frames(processor, frames, cfg.max_pixels)
    ids = SpecialIds.from_processor(processor)
    train_scan = scan(train_src, processor, cfg.max_length, "messages", need_assistant=True)
    report_scan(train_src.path, train_scan, cfg.max_length)
    val_scan = None
    if val_src is not None:
        val_scan = scan(val_src, processor, cfg.max_length, "messages", need_assistant=True)
        report_scan(val_src.path, val_scan, cfg.max_length)

    # --- model -------------------------------------------------------------------------------
    model = build_policy(
        args.model, resume_from, rt.param_dtype, rt.device,
        freeze_vision_tower=cfg.freeze_vision, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout, lora_targets=cfg.lora_targets, gradient_checkpointing=cfg.gradient_checkpointing,
    )
    model.train()
    scorer = TokenScorer(model)
    wrapped = wrap(scorer, rt, cfg)
    params = [p for p in wrapped.parameters() if p.requires_grad]
    optimizer = build_optimizer(wrapped, cfg, rt)
    steps = total_steps(len(train_scan.kept), cfg, rt.world)
    scheduler = build_scheduler(optimizer, cfg, steps)
    start = 0
    if resume_from is not None:
        state = load_trainer_state(resume_from, optimizer, scheduler, rt, cfg, model)
        start = int(state["step"])

    run_config = {"method": "sft", "model": args.model, "data": args.data, "val": args.val, "world": rt.world,
                  "config": cfg.to_dict(), "data_scan": train_scan.summary(), "steps": steps}
    metrics = Metrics(out, rt.is_main, append=resume_from is not None, report_to=cfg.trackers, run_name=cfg.run_name,
                      config=run_config, total=steps, start=start, progress=cfg.progress, headline="loss")
    trainable, total_params = count_parameters(model)
    if rt.is_main:
        (out / "train_config.json").write_text(json.dumps(run_config, indent=2, default=str))
        metrics.log({"event": "start", "step": start, "steps": steps, "rows": len(train_scan.kept),
                     "skipped": dict(train_scan.skipped), "trainable_params": trainable, "params": total_params,
                     "world": rt.world, "device": str(rt.device)})

    # --- loop --------------------------------------------------------------------------------
    dataset = SFTDataset(train_src, processor, ids, worker_cache_bytes(cfg.encode_cache_mb, cfg.num_workers))
    loader = make_loader(dataset, StepBatches(train_scan.kept, cfg, rt, start, steps), ids.pad, cfg.num_workers,
                         cfg.seed + start)
    batches = iter(loader)
    last_loss = float("nan")
    eval_loss = None
    for step in range(start, steps):
        t0 = time.perf_counter()
        micro = [next(batches) for _ in range(cfg.grad_accum)]
        local_targets = sum(int(b["target_mask"][:, 1:].sum()) for b in micro)
        local_tokens = sum(int(b["attention_mask"].sum()) for b in micro)
        (global_targets,) = rt.all_sum(local_targets)
        scale = rt.world / max(global_targets, 1.0)  # DDP averages gradients over ranks
        nll_sum = torch.zeros((), dtype=torch.float32, device=rt.device)  # summed on device: one sync per step
        for k, batch in enumerate(micro):
            batch = batch_to(batch, rt.device)
            with grad_sync(wrapped, k == len(micro) - 1):  # forward AND backward inside (DDP decides in forward)
                with rt.autocast():
                    logp = wrapped(**model_inputs(batch))
                (-logp.sum() * scale).backward()
            nll_sum += -logp.detach().sum()
        grad_norm = clip_and_norm(params, cfg.max_grad_norm)
        lr = scheduler.get_last_lr()[0]  # the lr this step used
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        nll_total, tokens_total = rt.all_sum(float(nll_sum), local_tokens)
        last_loss = nll_total / max(global_targets, 1.0)
        dt = time.perf_counter() - t0
        done = step + 1
        if done % cfg.log_every == 0 or done == steps:
            metrics.log({"step": done, "loss": last_loss, "lr": lr, "grad_norm": grad_norm,
                         "target_tokens": int(global_targets), "tokens": int(tokens_total),
                         "tokens_per_s": tokens_total / dt, "step_s": dt, "peak_mem_gb": rt.peak_memory_gb(),
                         "epoch": done * cfg.batch_size * cfg.grad_accum * rt.world / len(train_scan.kept)})
        metrics.advance(done, {"loss": last_loss})
        if val_scan is not None and cfg.eval_every > 0 and done % cfg.eval_every == 0 and done < steps:
            eval_loss = evaluate(wrapped, val_src, val_scan.kept, processor, ids, cfg, rt)  # type: ignore[arg-type]
            metrics.log({"step": done, "eval_loss": eval_loss})
        if cfg.save_every > 0 and done % cfg.save_every == 0 and done < steps:
            save_checkpoint(out, done, wrapped, scorer, processor, optimizer, scheduler, rt, cfg, {"loss": last_loss})

    # --- end ---------------------------------------------------------------------------------
    if val_scan is not None:
        eval_loss = evaluate(wrapped, val_src, val_scan.kept, processor, ids, cfg, rt)  # type: ignore[arg-type]
        metrics.log({"step": steps, "eval_loss": eval_loss})
    final = out / "final"

    sd = full_state_dict(wrapped, rt, cfg)
    if rt.is_main:
        save_pretrained(model, processor, final, state_dict=sd, dtype=rt.train_dtype)
    rt.barrier()
    summary = {"method": "sft", "steps": steps, "final": str(final), "loss": last_loss, "eval_loss": eval_loss,
               "rows": len(train_scan.kept), "skipped": dict(train_scan.skipped)}
    if rt.is_main:
        metrics.log({"event": "end", "step": steps, **{k: v for k, v in summary.items() if k != "method"}})
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    metrics.close()
    rt.barrier()  # every rank leaves together: a process group torn down while a peer still runs can abort it
    return summary
