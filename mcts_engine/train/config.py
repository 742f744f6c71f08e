"""Training configuration: the recipe's ``train:`` section as typed dataclasses.

Every knob is a named field with a documented default (as in TRL's trainer configs), built with
:func:`mcts_engine.config.from_dict`, so an unknown key in a recipe or a ``--set train.x=…`` override is a
one-line error. Layout of the section::

    train:
      lr: 1.0e-5            # common fields (SFT and GRPO)
      ...
      grpo:                 # GRPO only
        group_size: 8
        ...
        rewards: {accuracy: 1.0, format: 0.5, grounding: 0.5, distinct: 0.25}
        multiturn: auto     # multi-turn (zoom) rollouts: auto (rows with a `multiturn` struct) | on | off
        max_turns: 0        # 0 = the row's multiturn.max_turns
        backend: transformers   # or vllm: an in-process engine on the policy's GPU (vllm_* knobs)

Pure data: no torch import here (the CLI validates a recipe before loading anything heavy).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..config import ConfigError, apply_overrides, from_dict

PRECISIONS = ("auto", "fp32", "bf16", "bf16-pure")
SCHEDULES = ("cosine", "linear", "constant")
DISTRIBUTED = ("ddp", "fsdp")
SCALE_REWARDS = ("group", "batch", "none")
LOSS_TYPES = ("token", "sequence", "dr_grpo")
LOSS_TYPE_ALIASES = {"dapo": "token", "grpo": "sequence"}  # TRL's names for the same normalisers
TRACKERS = ("tensorboard", "wandb", "trackio", "mlflow")
MULTITURN_MODES = ("auto", "on", "off")


@dataclass
class RewardWeights:
    """GRPO reward = accuracy·verify_score + format·well_formed + grounding·has_in_frame_point
    (+ distinct·distinct_zoom_fraction for multi-turn episodes; see ``rewards``)."""

    accuracy: float = 1.0  # the task's own verifier (the one the search scores leaves with), score in [0, 1]
    format: float = 0.5  # single-turn: exactly <think> … </think><answer> … </answer>; multi-turn: every turn well formed
    grounding: float = 0.5  # 1 when the thought names at least one (x, y) inside the frame (multi-turn: a valid zoom)
    distinct: float = 0.25  # multi-turn only: distinct in-frame zoom points / zoom turns (0 without a zoom)


@dataclass
class GRPOConfig:
    group_size: int = 8  # G completions sampled per prompt
    prompts_per_step: int = 4  # prompts per optimizer step, per rank (a step trains on prompts_per_step·G completions)
    max_new_tokens: int = 512  # per completion (per turn in the multi-turn variant)
    temperature: float = 1.0  # sampling temperature; the loss scores log-probs at the same temperature
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    min_p: float = 0.0  # 0 = off; tokens below min_p x the top token's probability are never sampled
    # The rollout's sampling is built from these knobs alone (``train/sampling.py``): nothing is inherited from the
    # checkpoint's generation_config (repetition_penalty is always 1.0: the loss scores the plain distribution).
    epsilon_low: float = 0.2  # ratio clipped below at 1 - epsilon_low
    epsilon_high: float = 0.2  # ratio clipped above at 1 + epsilon_high (DAPO's clip-higher uses 0.28)
    beta: float = 0.0  # KL weight (k3 estimator) to the frozen initial policy; 0 = no reference model loaded
    scale_rewards: str = "group"  # advantage = (r - group mean) / (std + eps): std of the group | batch | none
    advantage_eps: float = 1e-4
    # token: sum over every completion token of the step / their number | sequence: per-completion mean, then mean
    # (original GRPO) | dr_grpo: sum / (completions x max_new_tokens), a constant normaliser (Dr. GRPO)
    loss_type: str = "token"
    loss_agg: str = ""  # the former name of loss_type (token | sequence); when set it must agree with loss_type
    mask_truncated: bool = False  # completions that hit max_new_tokens get no loss (DAPO's overlong masking)
    filter_zero_variance: bool = False  # drop groups whose rewards are all equal from the loss (no signal, no dilution)
    iterations: int = 1  # optimizer steps per generation batch (μ); >1 makes the clipped ratio bite
    generation_batch: int = 0  # prompts generated at once (0 = prompts_per_step)
    backend: str = "transformers"  # transformers (in-process generate) | vllm (in-process engine, when installed)
    # vLLM backend (``train/vllm_rollout.py``): one engine colocated on the policy's GPU, single process only.
    vllm_gpu_memory_utilization: float = 0.3  # fraction of the GPU's memory the engine takes (weights + KV cache)
    vllm_max_model_len: int = 0  # engine context length; 0 = train.max_length (every kept row fits it)
    # any other vllm.LLM keyword (e.g. {enforce_eager: true, max_num_seqs: 128, dtype: bfloat16}); wins over the
    # derived ones (model, gpu_memory_utilization, max_model_len, limit_mm_per_prompt, mm_processor_kwargs, seed)
    vllm_engine_args: dict[str, Any] = field(default_factory=dict)
    # Truncated importance sampling for the vLLM backend: each token's loss is weighted by
    # min(π_trainer/π_vllm, cap) (the engine samples from a slightly different distribution); 0 = off
    vllm_importance_sampling_cap: float = 2.0
    rewards: RewardWeights = field(default_factory=RewardWeights)
    # Multi-turn (zoom) rollouts, see ``train/multiturn.py``: auto = the rows that carry a ``multiturn`` struct (the
    # export's multi-turn GRPO rows), and every row when the recipe's ``multiturn.enabled`` is true; on = every row;
    # off = single-turn rollouts whatever the rows say. Rows without the struct use the recipe's ``multiturn:``
    # section and ``max_turns`` (else the recipe's ``search.max_depth``).
    multiturn: str = "auto"
    max_turns: int = 0  # assistant turns per episode, the last forced to answer; 0 = the row's multiturn.max_turns


@dataclass
class TrainConfig:
    """Common knobs. Sizes are per rank unless stated; an optimizer step sees
    ``batch_size · grad_accum · world_size`` rows (SFT) or ``prompts_per_step · G · world_size`` completions (GRPO)."""

    lr: float = 1e-5
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    schedule: str = "cosine"  # cosine | linear | constant (each after a linear warmup)
    warmup_ratio: float = 0.03  # fraction of optimizer steps spent warming up from 0
    min_lr_ratio: float = 0.0  # cosine/linear decay ends at lr·min_lr_ratio
    epochs: float = 1.0  # passes over the data (fractions allowed); ignored when max_steps > 0
    max_steps: int = 0  # optimizer steps; 0 = derived from epochs
    batch_size: int = 1  # rows per micro-batch (SFT) / completions per micro-batch (GRPO)
    grad_accum: int = 1  # micro-batches per optimizer step (SFT)
    max_grad_norm: float = 1.0  # 0 = no clipping
    max_length: int = 8192  # tokens per row; a longer row is skipped and counted, never truncated
    precision: str = "auto"  # auto (bf16 autocast on GPU, fp32 on CPU) | fp32 | bf16 (autocast, fp32 weights) | bf16-pure
    gradient_checkpointing: bool = False
    freeze_vision: bool = True  # freeze the whole vision tower (ViT blocks + merger)
    lora_r: int = 0  # > 0 trains LoRA adapters (peft) on the language model instead of full weights
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: str = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"  # language-model linear layers
    distributed: str = "ddp"  # under torchrun: ddp | fsdp (FSDP2 full sharding, SFT only)
    max_pixels: int = 0  # processor pixel cap; 0 = just enough for the largest frame in the data (never resizes)
    eval_every: int = 0  # optimizer steps between eval-loss passes on --val (0 = only at the end)
    save_every: int = 0  # optimizer steps between checkpoints (0 = only at the end)
    keep_checkpoints: int = 2  # newest step checkpoints kept (the final model is always kept)
    log_every: int = 1  # optimizer steps between metric records
    num_workers: int = 2  # DataLoader workers decoding images (SFT); 0 = in the main process
    encode_cache_mb: int = 1024  # SFT: encoded rows (pixels, tokens) kept for later epochs, MiB in all; 0 = off
    shuffle: bool = True
    seed: int = 0
    report_to: str = "none"  # comma list of trackers: tensorboard, wandb, trackio, mlflow (none = metrics.jsonl only)
    run_name: str = ""  # the trackers' run name (default: the --out directory's name)
    progress: bool = True  # a progress bar with ETA on rank 0 (stderr)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def trackers(self) -> list[str]:
        """The experiment trackers ``report_to`` names (empty for none)."""
        return [t for t in self.report_to.split(",") if t and t != "none"]

    def validate(self) -> TrainConfig:
        """Cross-field checks; raises :class:`ConfigError` naming the key."""
        checks: list[tuple[bool, str]] = [
            (self.lr > 0, f"train.lr: must be > 0, got {self.lr}"),
            (self.batch_size >= 1, f"train.batch_size: must be >= 1, got {self.batch_size}"),
            (self.grad_accum >= 1, f"train.grad_accum: must be >= 1, got {self.grad_accum}"),
            (self.max_length >= 16, f"train.max_length: must be >= 16, got {self.max_length}"),
            (self.epochs > 0 or self.max_steps > 0, "train.epochs: must be > 0 when train.max_steps is 0"),
            (0 <= self.warmup_ratio < 1, f"train.warmup_ratio: must be in [0, 1), got {self.warmup_ratio}"),
            (self.precision in PRECISIONS, f"train.precision: {self.precision!r} is not one of {', '.join(PRECISIONS)}"),
            (self.schedule in SCHEDULES, f"train.schedule: {self.schedule!r} is not one of {', '.join(SCHEDULES)}"),
            (self.distributed in DISTRIBUTED,
             f"train.distributed: {self.distributed!r} is not one of {', '.join(DISTRIBUTED)}"),
            (self.lora_r >= 0, f"train.lora_r: must be >= 0, got {self.lora_r}"),
            (self.keep_checkpoints >= 1, f"train.keep_checkpoints: must be >= 1, got {self.keep_checkpoints}"),
            (self.log_every >= 1, f"train.log_every: must be >= 1, got {self.log_every}"),
            (self.encode_cache_mb >= 0, f"train.encode_cache_mb: must be >= 0, got {self.encode_cache_mb}"),
        ]
        g = self.grpo
        g.loss_type = LOSS_TYPE_ALIASES.get(str(g.loss_type).strip().lower(), str(g.loss_type).strip().lower())
        if g.loss_agg:
            if g.loss_type not in ("token", g.loss_agg) and g.loss_agg in LOSS_TYPES:
                raise ConfigError(f"train.grpo.loss_agg={g.loss_agg} contradicts train.grpo.loss_type={g.loss_type}: "
                                  f"set loss_type only")
            if g.loss_agg in LOSS_TYPES:
                g.loss_type = g.loss_agg
        trackers = [t.strip().lower() for t in str(self.report_to).split(",") if t.strip()]
        trackers = [t for t in trackers if t != "none"]
        bad = [t for t in trackers if t not in TRACKERS]
        if bad:
            raise ConfigError(f"train.report_to: {bad[0]!r} is not one of none, {', '.join(TRACKERS)}")
        self.report_to = ",".join(dict.fromkeys(trackers)) or "none"
        # YAML reads a bare `on`/`off` as a boolean: accept its spellings
        g.multiturn = {"true": "on", "yes": "on", "1": "on", "false": "off", "no": "off", "0": "off"}.get(
            str(g.multiturn).strip().lower(), str(g.multiturn).strip().lower())
        checks += [
            (g.group_size >= 2, f"train.grpo.group_size: must be >= 2 (advantages compare a group), got {g.group_size}"),
            (g.prompts_per_step >= 1, f"train.grpo.prompts_per_step: must be >= 1, got {g.prompts_per_step}"),
            (g.max_new_tokens >= 1, f"train.grpo.max_new_tokens: must be >= 1, got {g.max_new_tokens}"),
            (g.temperature > 0, f"train.grpo.temperature: must be > 0, got {g.temperature}"),
            (0 < g.top_p <= 1, f"train.grpo.top_p: must be in (0, 1], got {g.top_p}"),
            (g.epsilon_low >= 0 and g.epsilon_high >= 0, "train.grpo.epsilon_low/epsilon_high: must be >= 0"),
            (g.beta >= 0, f"train.grpo.beta: must be >= 0, got {g.beta}"),
            (g.scale_rewards in SCALE_REWARDS,
             f"train.grpo.scale_rewards: {g.scale_rewards!r} is not one of {', '.join(SCALE_REWARDS)}"),
            (g.loss_type in LOSS_TYPES,
             f"train.grpo.loss_type: {g.loss_type!r} is not one of {', '.join(LOSS_TYPES)} (or dapo, grpo)"),
            (g.loss_agg in ("", "token", "sequence"),
             f"train.grpo.loss_agg: {g.loss_agg!r} is not token or sequence (prefer train.grpo.loss_type)"),
            (g.min_p >= 0 and g.min_p < 1, f"train.grpo.min_p: must be in [0, 1), got {g.min_p}"),
            (g.top_k >= 0, f"train.grpo.top_k: must be >= 0, got {g.top_k}"),
            (g.vllm_importance_sampling_cap >= 0,
             f"train.grpo.vllm_importance_sampling_cap: must be >= 0, got {g.vllm_importance_sampling_cap}"),
            (g.iterations >= 1, f"train.grpo.iterations: must be >= 1, got {g.iterations}"),
            (g.backend in ("transformers", "vllm"), f"train.grpo.backend: {g.backend!r} is not transformers or vllm"),
            (0 < g.vllm_gpu_memory_utilization <= 1,
             f"train.grpo.vllm_gpu_memory_utilization: must be in (0, 1], got {g.vllm_gpu_memory_utilization}"),
            (g.vllm_max_model_len >= 0, f"train.grpo.vllm_max_model_len: must be >= 0, got {g.vllm_max_model_len}"),
            (g.multiturn in MULTITURN_MODES,
             f"train.grpo.multiturn: {g.multiturn!r} is not one of {', '.join(MULTITURN_MODES)}"),
            (g.max_turns >= 0, f"train.grpo.max_turns: must be >= 0, got {g.max_turns}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self


def resolve_recipe(recipe: dict[str, Any], overrides: list[str] | None = None) -> dict[str, Any]:
    """The recipe with ``--set section.key=value`` overrides applied (``train.lr=…``, ``task_options.x=…``)."""
    return apply_overrides(recipe, list(overrides or []), schema={"train": TrainConfig})


def train_config_from_recipe(recipe: dict[str, Any], overrides: list[str] | None = None) -> TrainConfig:
    """The recipe's ``train:`` section (after overrides) as a validated :class:`TrainConfig`."""
    data = resolve_recipe(recipe, overrides)
    section = data.get("train") or {}
    if not isinstance(section, dict):
        raise ConfigError("train: must be a mapping")
    return from_dict(TrainConfig, section, "train").validate()


@dataclass
class RunArgs:
    """What the command line says beyond the recipe: which model, which data, where to write."""

    method: str  # sft | grpo
    model: str  # hub id or local path
    data: str  # parquet
    out: str
    val: str | None = None
    resume: bool = False
    device: str = "auto"  # auto | cpu | cuda
    task_options: dict[str, Any] = field(default_factory=dict)  # the recipe's task_options (rewards' verifiers)
    multiturn: dict[str, Any] = field(default_factory=dict)  # the recipe's multiturn: section (fallback for rows without one)
    max_depth: int = 0  # the recipe's search.max_depth (fallback max_turns for rows without a multiturn struct)
