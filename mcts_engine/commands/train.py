"""`mcts-engine train`: SFT or GRPO on an export parquet (torch/transformers are imported inside the command)."""

from __future__ import annotations

from pathlib import Path

import typer


def _task_of(data: Path) -> str | None:
    """The ``task`` of the data's first row (picks ``recipes/<task>.yaml`` when no --recipe is given)."""
    try:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(data)
        if "task" not in pf.schema_arrow.names:
            return None
        col = pf.read_row_group(0, columns=["task"]).column("task")
        return str(col[0].as_py()) if len(col) else None
    except Exception:
        return None


def train(
    method: str = typer.Option(..., "--method", help="sft (SFT export) or grpo (GRPO export)."),
    model: str = typer.Option(..., "--model", help="Hub id or local path of the student (HF format)."),
    data: Path = typer.Option(..., "--data", help="Training parquet from `mcts-engine export`."),
    out: Path = typer.Option(..., "--out", help="Output directory: checkpoints, final/, metrics.jsonl."),
    val: Path | None = typer.Option(None, "--val", help="SFT validation parquet (eval loss)."),
    recipe: Path | None = typer.Option(None, "--recipe", help="Recipe YAML (its train: section); default recipes/<task>.yaml."),
    task: str | None = typer.Option(None, "--task", help="Recipe name when --recipe is absent (default: the data's task)."),
    sets: list[str] = typer.Option([], "--set", help="Override a recipe value, e.g. --set train.lr=2e-5 (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in --out."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda (under torchrun: one GPU per rank)."),
) -> None:
    """Train a student on exported chains: supervised fine-tuning or GRPO with the search's verifiers as rewards.

    Multi-GPU: torchrun --nproc_per_node 8 --no-python mcts-engine train ... (DDP; --set train.distributed=fsdp for FSDP).
    Multi-turn (zoom) rows from a multi-turn export train multi-turn: SFT on every assistant turn, GRPO with the
    zoom environment in the rollout (--set train.grpo.multiturn=on|off to force).
    GRPO samples with transformers generate by default; --set train.grpo.backend=vllm uses an in-process vLLM engine
    on the same GPU (one process; needs vllm installed: pip install 'mcts-engine[vllm]' in vLLM's own environment).
    """
    import json
    import logging

    from ..config import ConfigError, load_recipe
    from ..train.config import RunArgs, resolve_recipe, train_config_from_recipe

    method = method.lower()
    if method not in ("sft", "grpo"):
        raise typer.BadParameter(f"{method!r} is not sft or grpo", param_hint="--method")
    if not data.exists():
        raise typer.BadParameter(f"{data}: no such file", param_hint="--data")
    if val is not None and not val.exists():
        raise typer.BadParameter(f"{val}: no such file", param_hint="--val")
    if val is not None and method == "grpo":
        raise typer.BadParameter("--val is for SFT (GRPO logs rewards on its own samples)", param_hint="--val")
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise typer.BadParameter(f"{device!r} is not auto, cpu or cuda", param_hint="--device")
    try:
        name = task or _task_of(data) or "sat2"
        raw = load_recipe(str(recipe) if recipe else None, name)
        cfg = train_config_from_recipe(raw, sets)
        resolved = resolve_recipe(raw, sets)
    except ConfigError as exc:
        typer.echo(f"mcts-engine train: {exc}", err=True)
        raise typer.Exit(2) from None

    # --model before anything heavy: a missing local path or an unreachable hub id is one line, at once
    from ..train.errors import TrainSetupError
    from ..train.hub import check_model_arg

    try:
        model = check_model_arg(model)
    except TrainSetupError as exc:
        typer.echo(f"mcts-engine train: {exc}", err=True)
        raise typer.Exit(2) from None

    logging.basicConfig(level=logging.WARNING, format="mcts-engine train: %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    search = resolved.get("search") if isinstance(resolved.get("search"), dict) else {}
    try:
        max_depth = int(search.get("max_depth") or 0)
    except (TypeError, ValueError):
        typer.echo(f"mcts-engine train: search.max_depth: {search.get('max_depth')!r} is not a valid int", err=True)
        raise typer.Exit(2) from None
    args = RunArgs(method=method, model=model, data=str(data), out=str(out), val=str(val) if val else None,
                   resume=resume, device=device, task_options=dict(resolved.get("task_options") or {}),
                   multiturn=dict(resolved.get("multiturn") or {}), max_depth=max_depth)
    try:
        if method == "sft":
            from ..train.sft import run_sft

            summary = run_sft(args, cfg)
        else:
            from ..train.grpo import run_grpo

            summary = run_grpo(args, cfg)
    except (TrainSetupError, ConfigError) as exc:
        typer.echo(f"mcts-engine train: {exc}", err=True)
        raise typer.Exit(2) from None
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(json.dumps(summary, default=str))
