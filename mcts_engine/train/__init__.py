"""The bundled trainer: SFT and GRPO for Qwen2.5-VL students on the export parquets (``mcts-engine train``).

Modules, in reading order:
- ``config``   — the recipe's ``train:`` section as dataclasses (every knob named, with its default).
- ``model``    — loading (hub id or path), the image-only processor, freezing, LoRA, HF-format checkpoints.
- ``data``     — parquet rows → chat template + processor; assistant-only masks; collation; length scan.
- ``logprobs`` — the shared forward pass: log-probs of the target tokens only.
- ``runtime``  — ranks/devices/precision, DDP/FSDP, checkpoints/resume (plain-tensor files only).
- ``optim``    — AdamW (fp32 master weights for bf16 weights) + warmup/cosine, gradient clipping.
- ``trackers`` — metrics.jsonl, TensorBoard/W&B/trackio/MLflow (``train.report_to``), the progress bar.
- ``hub``      — ``--model`` checked before anything heavy loads (missing path, unreachable hub id: one line).
- ``sft``      — supervised fine-tuning loop.
- ``sampling`` — the rollout's explicit sampling configuration (nothing from the checkpoint's generation_config).
- ``rollout``  — sampling G episodes per prompt, turn by turn, an environment answering each turn; the backend
                 seam (``RolloutBackend``: transformers ``generate`` by default).
- ``vllm_rollout`` — the optional in-process vLLM backend (colocated engine, weight sync after every step).
- ``multiturn`` — the zoom environment in the rollout (tool call → crop observation), per-row settings.
- ``rewards``  — the search's verifiers + format + grounding (+ the multi-turn grammar and distinct-point bonus).
- ``advantages`` — advantages, loss normalisers, clipped surrogate, KL, truncated importance weights (pure).
- ``prompts``  — the GRPO rows, encoded on demand, and their order.
- ``grpo``     — the GRPO loop.

Importing this package is light; torch/transformers load with the submodules.
"""
