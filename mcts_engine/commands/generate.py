"""``mcts-engine generate``: batched MCTS over a dataset into a resumable run directory."""

from __future__ import annotations

from pathlib import Path

import typer

from . import fail


def generate(
    task: str | None = typer.Option(None, help="Task name (default: the recipe's `task`, else sat2)."),
    data: Path | None = typer.Option(None, help="Samples: .jsonl (ViGoRL or plain), .parquet, or a datasets dir. Default: bundled data/<task>_sample."),
    image_root: Path | None = typer.Option(None, help="Directory that relative image paths are resolved against (default: the data file's directory)."),
    teacher: str | None = typer.Option(None, help="openai | sim | vllm. Default: sim on bundled data, openai otherwise."),
    base_url: str | None = typer.Option(None, help="OpenAI-compatible server URL(s), comma-separated (e.g. http://localhost:8000/v1)."),
    model: str | None = typer.Option(None, help="Served model name."),
    concurrency: int | None = typer.Option(None, help="Teacher requests in flight."),
    limit: int | None = typer.Option(None, help="Only the first N samples."),
    seed: int | None = typer.Option(None, help="Seed (the sim teacher is reproducible with it)."),
    out: Path | None = typer.Option(None, help="Run directory (default runs/<task>-<teacher>)."),
    recipe: str | None = typer.Option(None, help="Recipe YAML file or bundled name, e.g. vstar_multiturn (default recipes/<task>.yaml)."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe key: --set search.simulations=16 (repeatable)."),
    protocol: str | None = typer.Option(None, help="Search in a released model's protocol (vigorl): observation text, crop geometry, final turn of recipes/<task>_<PROTOCOL>.yaml under --recipe/--set; the teacher keeps teacher.system_prompt (docs/protocols.md)."),
    force: bool = typer.Option(False, help="Reuse --out even though its config differs."),
    progress: bool = typer.Option(True, help="Show the live progress bar."),
) -> None:
    """Search grounded reasoning chains with a teacher VLM and store every tree."""
    from ..config import ConfigError, build_run_config, load_recipe
    from ..protocol import inline_texts, load_with_protocol
    from ..generate import Aborted, default_data, run_generate
    from ..samples import SampleLoadError
    from ..store import RunError
    from ..tasks import task_names
    from ..teachers.base import TeacherUnavailable

    try:
        rec = load_recipe(recipe, task or "sat2") if recipe else None
        task = task or (rec or {}).get("task") or "sat2"
        if task not in task_names():
            fail(f"unknown task {task!r} (known: {', '.join(task_names())})")
        rec = rec if rec is not None else load_recipe(None, task)
        if protocol:
            rec = load_with_protocol(recipe, task, protocol)
        bundled = data is None
        kind = teacher or ("sim" if bundled else "openai")
        cfg = build_run_config(
            rec,
            set_,
            task=task,
            data=str(data if data is not None else default_data(task)),
            image_root=str(image_root) if image_root else None,
            limit=limit,
            seed=seed,
            teacher__kind=kind,
            teacher__base_url=base_url,
            teacher__model=model,
            teacher__concurrency=concurrency,
        )
        cfg.multiturn = inline_texts(cfg.multiturn)  # @FILE texts recorded as text (config.json, hash)
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    out_dir = out or Path("runs") / f"{task}-{kind}"
    why = "(default on bundled data)" if teacher is None and bundled else "(default for --data)" if teacher is None else ""
    if kind == "sim":
        typer.echo(f"teacher: sim {why} — a scripted simulated teacher driven by annotations, not a model", err=True)
    elif kind == "openai":
        typer.echo(f"teacher: openai {why} — {cfg.teacher.model} at {cfg.teacher.base_url}", err=True)
    else:
        typer.echo(f"teacher: vllm (in-process) — {cfg.teacher.model}", err=True)
    typer.echo(f"data: {cfg.data}   run: {out_dir}", err=True)
    try:
        stats = run_generate(cfg, out_dir, force=force, progress=progress)
    except (TeacherUnavailable, RunError, SampleLoadError, Aborted, ValueError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        typer.echo(f"interrupted: finished samples are saved in {out_dir}; rerun the same command to resume", err=True)
        raise typer.Exit(130) from None
    s = stats
    typer.echo(
        f"done: {s['finished']} trees ({s['solved']} solved, {s['solve_rate']:.0%}), {s['failed']} failed, "
        f"{s['calls']} teacher calls, {s['nodes']} nodes → {out_dir}"
    )
    if s["failed"]:
        typer.echo(f"failures: {out_dir / 'failures.jsonl'}", err=True)
