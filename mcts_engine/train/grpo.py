"""GRPO on the GRPO export, read top to bottom (the per-step arithmetic is ``advantages.py``).

Algorithm (one optimizer step):
1. Take ``prompts_per_step`` prompts (per rank); sample ``G = group_size`` completions each with the current policy
   (``rollout.rollout``, turn-shaped for the multi-turn variant) through the backend ``train.grpo.backend`` names:
   ``transformers`` (the policy's own ``generate``) or ``vllm`` (an in-process engine colocated on the policy's GPU,
   ``vllm_rollout.py``; its weights are synced from the policy after step 6). Sampling is an explicit configuration
   built from ``train.grpo`` alone (``sampling.py``: nothing from the checkpoint's ``generation_config``); a turn
   stops at the model's EOS list ∪ ``<|im_end|>`` and, single-turn, at the first ``</answer>`` (the eval's stop).
2. Reward each completion with the search's own verifier + format + grounding (``rewards.score_completion``; weights
   from ``train.grpo.rewards``). The task's options are the row's (``extra_info.task_options``), then the recipe's.
3. Advantages, per group: ``A = (r - mean_group(r)) / (std + eps)``, std = the sample std (Bessel) of the group
   (``scale_rewards: group``, default), of every reward of the step on every rank (``batch``: gathered first), or
   no scaling (``none``: Dr. GRPO's choice). Every token of a completion gets its completion's advantage. Groups
   whose rewards are all equal have A = 0 (``filter_zero_variance`` drops them from the loss; a step where every
   group is such logs a warning); ``mask_truncated`` drops completions that hit ``max_new_tokens``.
4. Loss per completion token: clipped surrogate ``-min(ρ·A, clip(ρ, 1-ε_low, 1+ε_high)·A)`` with
   ``ρ = π/π_old`` (π_old = the trainer's policy when the samples were drawn; with ``iterations: 1`` ρ ≡ 1 in value
   and the step is the plain policy gradient), times the truncated importance weight ``min(π_old/π_vllm, C)`` for
   the vLLM backend (``advantages.truncated_importance_weights``), ``+ β·KL`` where KL is the k3 estimator
   ``exp(q-p) - (q-p) - 1`` (p = log π, q = log π_ref) to the frozen initial policy (held in the training dtype).
   β = 0 by default: no reference model is loaded at all. Log-probs are scored at the sampling temperature with the
   tokens the sampler suppresses removed: the distribution that was sampled.
5. Aggregation (``loss_type``): ``token`` (default) = sum over every completion token of the step / their number;
   ``sequence`` = mean per completion, then mean (original GRPO); ``dr_grpo`` = sum / (completions × max_new_tokens).
   Normalizers are global (all micro-batches, all ranks), so accumulation and DDP equal one big batch.
6. Clip the gradient norm, step AdamW and the schedule. Repeat 4-6 ``iterations`` times on the same samples. A step
   in which no completion counts (all filtered) makes no update.

Logged per step: reward (mean/std) and each component, accuracy (verifier says correct), format rate, grounding rate,
completion length, truncation rate, zero-variance group fraction, kept fraction, clip fraction, KL (when β > 0),
importance-ratio mean/min/max/truncated fraction (vLLM), learning rate, grad norm, timings.

Multi-turn rows (the export's ``multiturn`` struct, or ``train.grpo.multiturn: on``): step 1 runs the zoom
environment (``train/multiturn.py``): turns stop at ``</tool_call>``/``</answer>``, each valid tool call appends the
observation turn with its crop, the last allowed turn is pre-filled with ``<answer>``. Step 2 scores the classified
turns (``rewards.score_turns``: verifier + multi-turn format + grounding + distinct-point bonus). Steps 3-6 are
unchanged: the loss runs on the policy's own turn tokens only (observation text and crop image tokens have
``target_mask`` False). Logged too: mean turns, zooms, distinct points, malformed tool calls, answered rate, forced
rate, out-of-frame rate, observation tokens.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from .advantages import (
    clipped_surrogate,
    group_advantages,
    grpo_loss,
    kl_k3,
    pooled_std,
    token_weights,
    truncated_importance_weights,
    zero_variance,
)
from .config import GRPOConfig, RunArgs, TrainConfig
from .data import (
    GRPO_REQUIRED,
    RowSource,
    SpecialIds,
    collate,
    frames_of,
    report_scan,
    scan,
)
from .logprobs import TokenScorer, batch_to, model_inputs
from .model import TrainSetupError, build_policy, count_parameters, fit_processor_to_frames, load_processor, save_pretrained, unwrap
from .multiturn import (
    STAT_KEYS,
    ZoomEnvironment,
    ZoomSettings,
    crop_frames,
    episode_stats,
    limit_lengths,
    row_settings,
    turn_record,
)
from .prompts import PromptSet, prompt_stream  # noqa: F401  (PromptSet: the tests' import path)
from .rewards import score_completion, score_turns, task_for
from .rollout import RolloutBackend, SingleTurn, rollout
from .runtime import (
    Metrics,
    Runtime,
    build_optimizer,
    build_scheduler,
    check_out_dir,
    clip_and_norm,
    grad_sync,
    load_trainer_state,
    require_trackers,
    save_checkpoint,
    seed_everything,
    setup_runtime,
    wrap,
)
from .sampling import Sampling, describe, model_eos

log = logging.getLogger("mcts_engine.train")


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------


def run_grpo(args: RunArgs, cfg: TrainConfig) -> dict[str, Any]:
    rt = setup_runtime(cfg, args.device)
    try:
        return _run(args, cfg, rt)
    finally:
        rt.close()


def _check(cfg: TrainConfig, rt: Runtime) -> None:
    g = cfg.grpo
    if rt.distributed and cfg.distributed == "fsdp":
        raise TrainSetupError("train.distributed=fsdp is for SFT; GRPO generates with the full model: use ddp (or LoRA)")
    if g.backend == "vllm":
        if rt.distributed:
            raise TrainSetupError(
                f"train.grpo.backend=vllm runs one engine colocated with the policy in a single process; under torchrun "
                f"({rt.world} ranks) use train.grpo.backend=transformers (or run one process on one GPU)")
        from .vllm_rollout import require_vllm

        require_vllm()  # a one-line install hint now, before any data or model is loaded
    require_trackers(cfg.trackers)


def _run(args: RunArgs, cfg: TrainConfig, rt: Runtime) -> dict[str, Any]:
    g: GRPOConfig = cfg.grpo
    _check(cfg, rt)
    out = Path(args.out)
    resume_from = check_out_dir(out, args.resume)
    seed_everything(cfg.seed + rt.rank)

    # --- data --------------------------------------------------------------------------------
    processor = load_processor(str(resume_from) if resume_from else args.model)
    source = RowSource(args.data, GRPO_REQUIRED, "GRPO")
    zoom = row_settings(source, g.multiturn, args.multiturn, g.max_turns, args.max_depth)
    fit_processor_to_frames(processor, frames_of(source) + crop_frames(source, zoom), cfg.max_pixels)
    ids = SpecialIds.from_processor(processor)
    prompt_budget = cfg.max_length - g.max_new_tokens
    if prompt_budget < 16:
        raise TrainSetupError(f"train.max_length={cfg.max_length} leaves no room for train.grpo.max_new_tokens={g.max_new_tokens}")
    found = scan(source, processor, prompt_budget, "prompt", need_assistant=False)
    if zoom:  # a multi-turn episode must fit with all its turns and observations
        limit_lengths(found, source, zoom, processor, g.max_new_tokens, cfg.max_length)
    report_scan(source.path, found, prompt_budget)
    for task in {t for t in source.column("task") if t}:
        try:
            task_for(task, args.task_options)
        except KeyError as exc:
            raise TrainSetupError(f"{source.path}: field 'task': {exc.args[0]}") from None
    prompts = PromptSet(source, found.kept, processor, zoom)

    # --- model -------------------------------------------------------------------------------
    model = build_policy(
        args.model, resume_from, rt.param_dtype, rt.device,
        freeze_vision_tower=cfg.freeze_vision, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout, lora_targets=cfg.lora_targets, gradient_checkpointing=cfg.gradient_checkpointing,
    )
    ids = ids.with_eos(model_eos(unwrap(model)))  # the model's EOS list ∪ <|im_end|>: every end token stops a turn
    reference = None
    if g.beta > 0 and cfg.lora_r == 0:
        # The frozen initial policy (--model, even on resume: KL is to where training started), held in the
        # dtype the policy computes in (bf16 under bf16 autocast: half the memory of fp32, the same numbers).
        from .model import load_model

        reference = load_model(args.model, rt.train_dtype).to(rt.device).eval().requires_grad_(False)
    scorer = TokenScorer(model)
    wrapped = wrap(scorer, rt, cfg)
    params = [p for p in wrapped.parameters() if p.requires_grad]
    optimizer = build_optimizer(wrapped, cfg, rt)
    steps = cfg.max_steps if cfg.max_steps > 0 else max(
        1, math.ceil(cfg.epochs * len(found.kept) / (g.prompts_per_step * rt.world)))
    scheduler = build_scheduler(optimizer, cfg, steps * g.iterations)
    start = 0
    if resume_from is not None:
        state = load_trainer_state(resume_from, optimizer, scheduler, rt, cfg, model)
        start = int(state["step"])

    backend: RolloutBackend | None = None
    if g.backend == "vllm":
        backend = start_vllm(model, processor, ids, cfg, args, resume_from, source, found.kept, zoom)
    try:
        return _loop(args, cfg, rt, out, resume_from, found, zoom, prompts, processor, ids, model, scorer, wrapped,
                     reference, optimizer, scheduler, params, steps, start, backend)
    finally:
        if backend is not None:
            backend.close()


def start_vllm(model: torch.nn.Module, processor: Any, ids: SpecialIds, cfg: TrainConfig, args: RunArgs,
               resume_from: Path | None, source: RowSource, kept: list[int], zoom: dict[int, ZoomSettings]) -> Any:
    """The colocated vLLM engine, sized to the data: context = ``train.max_length`` (every kept row's worst case
    fits it) unless ``vllm_max_model_len`` says otherwise; images per prompt = the most an episode holds."""
    from .vllm_rollout import VLLMBackend

    g = cfg.grpo
    sizes = source.image_sizes
    max_images = max((len(sizes[i]) + (zoom[i].max_turns - 1 if i in zoom else 0) for i in kept), default=1)
    return VLLMBackend.start(
        model, processor, ids, model_arg=args.model, resume_from=resume_from,
        gpu_memory_utilization=g.vllm_gpu_memory_utilization, max_model_len=g.vllm_max_model_len or cfg.max_length,
        max_images=max_images, seed=cfg.seed, engine_args=g.vllm_engine_args, vision_trainable=not cfg.freeze_vision,
        logprobs=g.vllm_importance_sampling_cap > 0,
    )


def _loop(args: RunArgs, cfg: TrainConfig, rt: Runtime, out: Path, resume_from: Path | None, found: Any,
          zoom: dict[int, ZoomSettings], prompts: PromptSet, processor: Any, ids: SpecialIds, model: torch.nn.Module,
          scorer: TokenScorer, wrapped: torch.nn.Module, reference: torch.nn.Module | None, optimizer: Any,
          scheduler: Any, params: list[torch.nn.Parameter], steps: int, start: int,
          backend: RolloutBackend | None) -> dict[str, Any]:
    g = cfg.grpo
    sampling = Sampling(g.max_new_tokens, g.temperature, g.top_p, g.top_k, g.min_p)
    stops = tuple(sorted({*SingleTurn.stop, *(ZoomEnvironment.stop if zoom else ())}))
    sampling_record = describe(sampling, ids.eos, ids.pad, stops, ids.vision)
    # dr_grpo's constant normaliser: the generation budget of one completion (every turn of an episode)
    max_tokens = float(g.max_new_tokens * max([z.max_turns for z in zoom.values()] + [1]))
    run_config = {"method": "grpo", "model": args.model, "data": args.data, "world": rt.world,
                  "config": cfg.to_dict(), "sampling": sampling_record, "data_scan": found.summary(), "steps": steps,
                  "multiturn_rows": len(zoom)}
    metrics = Metrics(out, rt.is_main, append=resume_from is not None, report_to=cfg.trackers, run_name=cfg.run_name,
                      config=run_config, total=steps, start=start, progress=cfg.progress, headline="reward")
    trainable, total_params = count_parameters(model)
    if rt.is_main:
        (out / "train_config.json").write_text(json.dumps(run_config, indent=2, default=str))
        metrics.log({"event": "start", "step": start, "steps": steps, "prompts": len(found.kept),
                     "multiturn_rows": len([i for i in found.kept if i in zoom]),
                     "skipped": dict(found.skipped), "trainable_params": trainable, "params": total_params,
                     "world": rt.world, "device": str(rt.device), "sampling": sampling_record,
                     "rollout": backend.describe() if backend is not None else {"backend": "transformers"}})

    record: dict[str, Any] = {}
    for step in range(start, steps):
        record = grpo_step(step, cfg, rt, prompts, model, wrapped, reference, optimizer, scheduler, params,
                           sampling, ids, processor, args.task_options, backend, max_tokens)
        done = step + 1
        if done % cfg.log_every == 0 or done == steps:
            metrics.log({"step": done, **record})
        metrics.advance(done, record)
        if cfg.save_every > 0 and done % cfg.save_every == 0 and done < steps:
            save_checkpoint(out, done, wrapped, scorer, processor, optimizer, scheduler, rt, cfg,
                            {"reward": record.get("reward")})

    final = out / "final"
    if rt.is_main:
        save_pretrained(model, processor, final, dtype=rt.train_dtype)
    rt.barrier()
    summary = {"method": "grpo", "steps": steps, "final": str(final), "reward": record.get("reward"),
               "accuracy": record.get("accuracy"), "prompts": len(found.kept), "skipped": dict(found.skipped)}
    if rt.is_main:
        metrics.log({"event": "end", "step": steps, **{k: v for k, v in summary.items() if k != "method"}})
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    metrics.close()
    rt.barrier()  # every rank leaves together: a process group torn down while a peer still runs can abort it
    return summary


def grpo_step(
    step: int,
    cfg: TrainConfig,
    rt: Runtime,
    prompts: PromptSet,
    model: torch.nn.Module,
    wrapped: torch.nn.Module,
    reference: torch.nn.Module | None,
    optimizer: Any,
    scheduler: Any,
    params: list[torch.nn.Parameter],
    sampling: Sampling,
    ids: SpecialIds,
    processor: Any,
    task_options: dict[str, Any],
    backend: RolloutBackend | None = None,
    max_tokens: float = 0.0,
) -> dict[str, Any]:
    """Generate, score, and take ``iterations`` optimizer steps, then sync the rollout engine (when it holds its own
    copy of the weights). Returns the step's metrics. ``backend`` None = the policy's own ``generate``;
    ``max_tokens`` = the constant normaliser of ``loss_type: dr_grpo`` (the generation budget per completion)."""
    g = cfg.grpo
    t0 = time.perf_counter()
    per_step = g.prompts_per_step * rt.world
    rows = prompt_stream(prompts.kept, cfg.seed, cfg.shuffle, step * per_step, per_step)
    mine = rows[rt.rank * g.prompts_per_step:(rt.rank + 1) * g.prompts_per_step]
    encoded, metas = zip(*(prompts.get(i) for i in mine))

    # 1. sample G completions per prompt with the current policy
    policy = unwrap(model)
    model.eval()
    policy.config.use_cache = True
    zooms = [m["zoom"] for m in metas]
    env = ZoomEnvironment(processor, ids, zooms) if any(z is not None for z in zooms) else None
    episodes = rollout(backend if backend is not None else policy, list(encoded), g.group_size, sampling, ids,
                       processor.tokenizer, rt.device, rt.autocast(), env=env, max_turns=env.max_turns if env else 1,
                       generation_batch=g.generation_batch, images=[m["images"] for m in metas])
    policy.config.use_cache = False
    model.train()
    t_gen = time.perf_counter() - t0

    # 2. rewards with the search's verifiers
    scores = []
    mt_sums = dict.fromkeys(STAT_KEYS, 0.0)
    for ep in episodes:
        meta = metas[ep.prompt_index]
        options = {**meta["task_options"], **task_options}  # the row's own options; the recipe's win
        task = task_for(meta["task"], options)
        if meta["zoom"] is not None:
            record = turn_record(ep, meta["zoom"])
            scores.append(score_turns(record, task, meta["truth"], g.rewards))
            for k, v in episode_stats(record, ep.observation_tokens).items():
                mt_sums[k] += v
        else:
            scores.append(score_completion(ep.completion_text, task, meta["truth"], meta["frame"], g.rewards))
    rewards = torch.tensor([s.total for s in scores], dtype=torch.float32).view(len(mine), g.group_size)

    # 3. advantages (the batch std over every rank's rewards, gathered before scaling); which completions count
    flat = rewards.view(-1).double()
    flat_zero = zero_variance(rewards)
    keep = torch.ones(len(episodes), dtype=torch.bool)
    if g.filter_zero_variance:
        keep &= ~flat_zero.repeat_interleave(g.group_size)
    truncated = torch.tensor([e.truncated for e in episodes], dtype=torch.bool)
    if g.mask_truncated:
        keep &= ~truncated
    lengths = torch.tensor([ep.completion_tokens for ep in episodes], dtype=torch.float32)
    n_all, r_sum, r_sq, zero_groups, n_tokens, n_seqs, all_tokens = rt.all_sum(
        float(flat.numel()), float(flat.sum()), float((flat ** 2).sum()), float(flat_zero.sum()),
        float((lengths * keep).sum()), float(keep.sum()), float(lengths.sum()))
    batch_std = pooled_std(n_all, r_sum, r_sq)
    advantages = group_advantages(rewards, g.scale_rewards, g.advantage_eps, batch_std=batch_std).view(-1)
    groups_total = n_all / g.group_size
    if zero_groups == groups_total and rt.is_main:
        log.warning("step %d: every group's rewards are equal (mean reward %.4g): all advantages are 0, this step "
                    "learns nothing (too easy/hard prompts, or a reward that never varies?)", step + 1, r_sum / n_all)

    # 4-6. loss, backward, step (iterations times)
    train_rows = [ep.training_row() for ep in episodes]
    micro = [list(range(i, min(i + cfg.batch_size, len(episodes)))) for i in range(0, len(episodes), cfg.batch_size)]
    sampler = [ep.sampler_logprobs() for ep in episodes]
    use_tis = g.vllm_importance_sampling_cap > 0 and backend is not None and all(x is not None for x in sampler)
    old_logps: list[torch.Tensor | None] = [None] * len(micro)
    ref_logps: list[torch.Tensor | None] = [None] * len(micro)
    is_weights: list[torch.Tensor | None] = [None] * len(micro)
    is_stats = {"sum": 0.0, "n": 0.0, "truncated": 0.0, "min": math.inf, "max": -math.inf}
    scoring = {"temperature": g.temperature, "suppress": ids.vision}  # the distribution the rollout sampled from
    learn = n_seqs > 0  # every rank agrees (global count): skip the update when no completion counts
    with torch.no_grad():
        for m, idx in enumerate(micro):
            if not learn or (g.iterations == 1 and reference is None and not (g.beta > 0 and cfg.lora_r > 0)):
                break
            batch = batch_to(collate([train_rows[i] for i in idx], ids.pad), rt.device)
            with rt.autocast():
                if g.iterations > 1:
                    old_logps[m] = TokenScorer(model)(**model_inputs(batch), **scoring)
                if reference is not None:
                    ref_logps[m] = TokenScorer(reference)(**model_inputs(batch), **scoring)
                elif g.beta > 0:  # LoRA: the reference is the base model with the adapter switched off
                    with model.disable_adapter():
                        ref_logps[m] = TokenScorer(model)(**model_inputs(batch), **scoring)

    clipped = kl_sum = 0.0
    grad_norm = lr = 0.0
    for it in range(g.iterations):
        for m, idx in enumerate(micro):
            if not learn:
                break
            batch = batch_to(collate([train_rows[i] for i in idx], ids.pad), rt.device)
            select = batch["target_mask"][:, 1:]
            seq_index = select.nonzero()[:, 0]
            with grad_sync(wrapped, m == len(micro) - 1):
                with rt.autocast():
                    logp = wrapped(**model_inputs(batch), **scoring)
                old = old_logps[m] if old_logps[m] is not None else logp.detach()
                if use_tis and it == 0:  # π_old / π_sampler per token, fixed for every iteration on these samples
                    sampled = torch.tensor([x for i in idx for x in sampler[i]], dtype=torch.float32)
                    is_weights[m], st = truncated_importance_weights(old, sampled, g.vllm_importance_sampling_cap)
                    _merge_is(is_stats, st)
                adv = advantages[idx].to(rt.device)[seq_index]
                weights = token_weights(seq_index, lengths[idx], g.loss_type, n_tokens, n_seqs, max_tokens) * rt.world
                weights = weights * keep[idx].to(rt.device)[seq_index]
                loss, stats = grpo_loss(logp, old, adv, weights, g.epsilon_low, g.epsilon_high, g.beta, ref_logps[m],
                                        is_weights[m])
                loss.backward()
            counted = keep[idx].to(rt.device)[seq_index]
            clipped += float((stats["clipped"] & counted).float().sum())
            if "kl" in stats:
                kl_sum += float((stats["kl"] * counted).sum())
        lr = scheduler.get_last_lr()[0]  # the lr this step used
        if learn:
            grad_norm = clip_and_norm(params, cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
        else:  # nothing counted on any rank: no update, the schedule still advances one step
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
                scheduler.step()
    t_sync = 0.0
    if backend is not None:  # the engine samples the next step with the updated weights
        t1 = time.perf_counter()
        backend.sync(model)
        t_sync = time.perf_counter() - t1

    # metrics (global over ranks)
    comp = {k: sum(s.components()[k] for s in scores) for k in ("accuracy", "format", "grounding", "distinct")}
    sums = rt.all_sum(float(sum(s.correct for s in scores)), comp["accuracy"], comp["format"], comp["grounding"],
                      float(truncated.sum()), clipped, kl_sum, float(sum(int(r["input_ids"].numel()) for r in train_rows)),
                      comp["distinct"], is_stats["sum"], is_stats["n"], is_stats["truncated"],
                      *(mt_sums[k] for k in STAT_KEYS))
    correct, acc, fmt, gnd, trunc, clipped, kl_sum, seq_tokens, dst, is_sum, is_n, is_trunc = sums[:12]
    mt = dict(zip(STAT_KEYS, sums[12:]))
    n = n_all
    dt = time.perf_counter() - t0
    rec = {
        "reward": r_sum / n,
        "reward_std": batch_std,
        "reward_accuracy": acc / n,
        "reward_format": fmt / n,
        "reward_grounding": gnd / n,
        "accuracy": correct / n,
        "format_rate": fmt / n,
        "grounding_rate": gnd / n,
        "completion_len": all_tokens / n,
        "truncated_rate": trunc / n,
        "zero_std_frac": zero_groups / max(groups_total, 1.0),  # groups whose rewards are all equal (no signal)
        "kept_frac": n_seqs / n,  # completions in the loss (filter_zero_variance / mask_truncated drop some)
        "clip_frac": clipped / max(n_tokens * g.iterations, 1.0),
        "lr": lr,
        "grad_norm": grad_norm,
        "gen_s": t_gen,
        **({"sync_s": t_sync} if backend is not None else {}),
        "step_s": dt,
        "tokens_per_s": seq_tokens / dt,
        "peak_mem_gb": rt.peak_memory_gb(),
    }
    if g.beta > 0:
        rec["kl"] = kl_sum / max(n_tokens * g.iterations, 1.0)
    if use_tis and is_n > 0:
        is_max, neg_min = rt.all_max(is_stats["max"], -is_stats["min"])
        rec.update({"is_ratio_mean": is_sum / max(is_n, 1.0), "is_ratio_min": -neg_min, "is_ratio_max": is_max,
                    "is_truncated_frac": is_trunc / max(is_n, 1.0)})
    if prompts.multiturn:  # the run's mode, not the step's rows: every rank logs the same keys
        rec["reward_distinct"] = dst / n
        rec.update({
            "turns": mt["turns"] / n,  # assistant turns per episode
            "zooms": mt["zooms"] / n,  # valid zooms (observations) per episode
            "distinct_points": mt["distinct_points"] / n,
            "malformed_calls": mt["malformed_calls"] / n,  # bad_tool_call turns per episode
            "malformed_rate": mt["malformed"] / n,  # episodes ended by a malformed tool call
            "out_of_frame_rate": mt["out_of_frame"] / n,
            "answered_rate": mt["answered"] / n,  # episodes that ended with an answer
            "forced_rate": mt["forced"] / n,  # episodes that reached the forced last turn
            "observation_len": mt["observation_tokens"] / n,  # environment tokens (text + crop images), never trained
        })
    return rec


def _merge_is(total: dict[str, float], part: dict[str, float]) -> None:
    total["sum"] += part["sum"]
    total["n"] += part["n"]
    total["truncated"] += part["truncated"]
    if part["n"]:
        total["min"] = min(total["min"], part["min"])
        total["max"] = max(total["max"], part["max"])


__all__ = ["clipped_surrogate", "group_advantages", "grpo_loss", "kl_k3", "run_grpo", "token_weights"]
