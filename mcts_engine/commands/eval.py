"""``mcts-engine eval``: a model answers a benchmark (single pass, or ``--multiturn`` through the zoom turn loop);
each answer is scored by the task's verifier. The flags and messages live here; the run is
``mcts_engine.evaluation.run`` (the engine) and ``mcts_engine.evaluation.scoring`` (the statistics).

Heavy imports stay inside functions (``mcts-engine --help`` must stay fast).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..teachers.urls import public_urls
from . import backend_missing, choose_teacher, fail, recipe_teacher_kind


def eval(  # noqa: A001 - the command's name
    task: str | None = typer.Option(None, help="Task: sat2, blink, vstar, screenspot, osatlas, web_action (default: the recipe's task, else sat2)."),
    data: Path | None = typer.Option(None, help="Benchmark data (its own layout, or JSONL/parquet). Default: the bundled sample_data/<task>_sample."),
    image_root: Path | None = typer.Option(None, help="Directory that relative image paths are resolved against (default: the data file's directory); images must stay inside it."),
    allow_outside_root: bool = typer.Option(False, "--allow-outside-root", help="Accept image paths that resolve outside the image root; see docs/input-data.md."),
    teacher: str | None = typer.Option(None, help="openai | sim | vllm. Default: the recipe's teacher.kind; else openai when --base-url/--model is given or --data is; sim only on the bundled data with none of these."),
    base_url: str | None = typer.Option(None, help="OpenAI-compatible server URL(s) of the model under test (e.g. a `vllm serve`d student)."),
    model: str | None = typer.Option(None, help="Served model name."),
    samples_per_item: int = typer.Option(1, "--samples-per-item", "-k", min=1, help="Chains sampled per item (one request with n=K)."),
    out: Path | None = typer.Option(None, help="Run directory (default runs/eval-<task>-<model or sim>); rerun to resume."),
    format_check: bool = typer.Option(False, "--format-check", help="Also count outputs that broke the step grammar or put points outside the frame."),
    circular: bool | None = typer.Option(None, "--circular/--no-circular", help="Circular evaluation over rotated option orders (default: the task's, on for sat2)."),
    temperature: float | None = typer.Option(None, help="Sampling temperature (default 0 for K=1, else the recipe's)."),
    max_tokens: int | None = typer.Option(None, help="Token budget of one reply (a whole chain; one turn with --multiturn). Default 1024, or the --protocol preset's teacher.max_tokens."),
    multiturn: bool | None = typer.Option(None, "--multiturn/--single-pass", help="Drive the model through the zoom turn loop (default: the recipe's multiturn.enabled; on for --recipe vstar_multiturn)."),
    max_turns: int | None = typer.Option(None, min=1, help="Multi-turn: assistant turns per episode, the last forced to answer (default: the recipe's search.max_depth)."),
    max_pixels: int | None = typer.Option(None, help="Image frame size in pixels (default: the recipe's teacher.max_pixels)."),
    concurrency: int | None = typer.Option(None, help="Requests in flight."),
    limit: int | None = typer.Option(None, help="Only the first N items."),
    seed: int = typer.Option(0, help="Seed (the sim teacher is reproducible with it)."),
    recipe: str | None = typer.Option(None, help="Recipe YAML (default recipes/<task>.yaml): its teacher section and task_options apply."),
    protocol: str | None = typer.Option(None, help="Ask as a released checkpoint was trained: the preset recipes/<task>_<PROTOCOL>.yaml under --recipe/--set (vigorl; docs/protocols.md)."),
    system_prompt: str | None = typer.Option(None, "--system-prompt", help="task | model (the served chat template's default) | none (empty) | @FILE (exact text). Default: the recipe's system_prompt."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe key, e.g. --set teacher.top_p=0.9 (repeatable)."),
    force: bool = typer.Option(False, "--force/--no-force", help="Reuse --out even though its config differs."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Live bar on a terminal; --no-progress (or no terminal): a status line every --status-every seconds."),
    status_every: float = typer.Option(10.0, "--status-every", min=0, help="Seconds between plain status lines without a terminal (0: none)."),
) -> None:
    """Score a model on a benchmark (single pass, or --multiturn through the zoom turn loop): accuracy overall and
    by the benchmark's groups, with 95% CIs."""
    from ..config import ConfigError, build_run_config, load_recipe
    from ..evaluation.run import run_eval
    from ..protocol import load_with_protocol, protocol_task
    from ..samples import SampleLoadError
    from ..search.scheduler import Aborted
    from ..store import RunError
    from ..tasks import task_names
    from ..teachers.base import TeacherUnavailable

    if task is None:  # the recipe names its task (recipes/vstar_multiturn.yaml: task: vstar)
        try:
            task = str((load_recipe(recipe, "sat2") if recipe else {}).get("task") or protocol_task(protocol, None, recipe) or "sat2")
        except ConfigError as exc:
            fail(str(exc))
    if task not in task_names():
        fail(f"unknown task {task!r} (known: {', '.join(task_names())})")
    from ..generate import default_data

    bundled = data is None
    try:
        rec = load_with_protocol(recipe, task, protocol)
        choice = choose_teacher(teacher, base_url, model, recipe_teacher_kind(rec, set_), bundled)
        kind = choice.kind
        cfg = build_run_config(
            rec, set_, task=task, seed=seed, limit=limit, system_prompt=system_prompt,
            inputs__allow_outside_root=True if allow_outside_root else None,
            teacher__kind=kind, teacher__base_url=base_url, teacher__model=model, teacher__concurrency=concurrency,
            teacher__max_tokens=max_tokens if max_tokens is not None else (None if protocol else 1024), teacher__max_pixels=max_pixels,
            teacher__temperature=temperature if temperature is not None else (0.0 if samples_per_item == 1 else None),
        )
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    if multiturn is not None:
        cfg.multiturn.enabled = multiturn
    mt = cfg.multiturn.enabled
    turns = max_turns or cfg.search.max_depth
    data_path = Path(data) if data is not None else Path(default_data(task))
    if not data_path.exists():
        fail(f"{data_path}: no such file or directory")
    if backend_missing(kind):
        fail(str(backend_missing(kind)))
    label = "sim" if kind == "sim" else (cfg.teacher.model.rstrip("/").split("/")[-1] or kind)
    out_dir = out or Path("runs") / f"eval-{task}-{label}{'-multiturn' if mt else ''}"
    if kind == "sim":
        typer.echo(f"model: sim {choice.why} — a scripted simulated teacher driven by annotations, not a model (demo/test)", err=True)
    elif kind == "openai":
        typer.echo(f"model: {cfg.teacher.model} at {public_urls(cfg.teacher.base_url)} {choice.why}", err=True)
    else:
        typer.echo(f"model: {cfg.teacher.model} (in-process vLLM)", err=True)
    typer.echo(f"data: {data_path}   run: {out_dir}", err=True)
    if mt:
        m = cfg.multiturn
        typer.echo(f"multi-turn: ≤ {turns} turns, crop {2 * m.crop_offset} px around each point shown at {m.crop_size} px"
                   f"{' square' if m.crop_shape == 'square' else ''}{', point drawn' if m.draw_dot else ''}", err=True)
    if cfg.protocol or cfg.system_prompt != "task" or cfg.eval.max_long_side:
        typer.echo(f"protocol: {cfg.protocol or 'custom'} · system prompt: {cfg.system_prompt} · first turn: {cfg.user_text}"
                   f"{f' · longer side capped at {cfg.eval.max_long_side} px' if cfg.eval.max_long_side else ''}", err=True)
    try:
        summary, path = run_eval(
            task, data_path, cfg.teacher, out_dir, image_root=str(image_root) if image_root else None,
            samples_per_item=samples_per_item, circular=circular, format_check=format_check, limit=limit, seed=seed,
            task_options=cfg.task_options, force=force, progress=progress,
            multiturn=cfg.multiturn if mt else None, max_turns=turns, inputs=cfg.inputs, status_every=status_every,
            system_prompt=cfg.system_prompt, user_text_source=cfg.user_text, max_long_side=cfg.eval.max_long_side,
            protocol=cfg.protocol,
        )
    except Aborted as exc:  # the model's server went down mid-run: what failed so far, then why it stopped
        try:
            groups = json.loads((out_dir / "summary.json").read_text()).get("failure_groups", [])
        except (OSError, json.JSONDecodeError):
            groups = []
        for g in groups[:10]:
            typer.echo(f"  {g['count']:>5} × {g['kind']}   (e.g. {g['example']})", err=True)
        fail(str(exc))
    except (TeacherUnavailable, RunError, SampleLoadError, ConfigError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        typer.echo(f"interrupted: scored items are saved in {out_dir}; rerun the same command to resume", err=True)
        raise typer.Exit(130) from None
    typer.echo((path / "summary.md").read_text())
    typer.echo(f"per-item results: {path / 'trees.jsonl'}   summary: {path / 'summary.json'}", err=True)
    if summary.items == 0:
        typer.echo("error: no item was scored", err=True)
        raise typer.Exit(1)
