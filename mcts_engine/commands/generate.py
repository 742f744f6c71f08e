"""``mcts-engine generate``: batched MCTS over a dataset into a resumable run directory.

Also: ``--dry-run`` (a pilot of ``--pilot K`` samples kept in the run, then a projection of calls, choices,
tokens and wall time for the whole dataset) and ``--print-config`` (the resolved config, then exit).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from ..teachers.urls import public_urls
from . import backend_missing, choose_teacher, fail, recipe_teacher_kind


def generate(
    task: str | None = typer.Option(None, help="Task name (default: the recipe's `task`, else sat2)."),
    data: Path | None = typer.Option(None, help="Samples: .jsonl (ViGoRL or plain), .parquet, or a datasets dir. Default: the bundled sample_data/<task>_sample."),
    image_root: Path | None = typer.Option(None, help="Directory that relative image paths are resolved against (default: the data file's directory); images must stay inside it."),
    allow_outside_root: bool = typer.Option(False, "--allow-outside-root", help="Accept image paths that resolve outside the image root (absolute paths, ../, symlinks out); see docs/input-data.md."),
    teacher: str | None = typer.Option(None, help="openai | sim | vllm. Default: the recipe's teacher.kind; else openai when --base-url/--model is given or --data is; sim only on the bundled data with none of these."),
    base_url: str | None = typer.Option(None, help="OpenAI-compatible server URL(s), comma-separated (e.g. http://localhost:8000/v1). Selects the openai teacher."),
    model: str | None = typer.Option(None, help="Served model name. Selects the openai teacher."),
    concurrency: int | None = typer.Option(None, help="Teacher requests in flight."),
    limit: int | None = typer.Option(None, help="Only the first N samples."),
    seed: int | None = typer.Option(None, help="Seed (the sim teacher is reproducible with it)."),
    out: Path | None = typer.Option(None, help="Run directory (default runs/<task>-<teacher>)."),
    recipe: str | None = typer.Option(None, help="Recipe YAML file or bundled name, e.g. vstar_multiturn (default recipes/<task>.yaml)."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe key: --set search.simulations=16 (repeatable)."),
    protocol: str | None = typer.Option(None, help="Search in a released model's protocol (vigorl): observation text, crop geometry, final turn of recipes/<task>_<PROTOCOL>.yaml under --recipe/--set; the teacher keeps teacher.system_prompt (docs/protocols.md)."),
    force: bool = typer.Option(False, "--force/--no-force", help="Reuse --out even though its config differs."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Live bar on a terminal; --no-progress (or no terminal): a status line every --status-every seconds."),
    status_every: float = typer.Option(10.0, "--status-every", min=0, help="Seconds between plain status lines without a terminal (0: none)."),
    dry_run: bool = typer.Option(False, "--dry-run/--no-dry-run", help="Load the data, check the teacher, run a pilot of --pilot samples (kept in the run) and print the projected calls, tokens and wall time for the whole dataset; then exit."),
    pilot: int = typer.Option(4, "--pilot", min=1, help="Samples in the --dry-run pilot."),
    print_config: bool = typer.Option(False, "--print-config/--no-print-config", help="Print the resolved config and exit."),
    config_format: str = typer.Option("yaml", "--config-format", help="yaml | json (for --print-config)."),
) -> None:
    """Search grounded reasoning chains with a teacher VLM and store every tree."""
    from ..config import ConfigError, build_run_config, load_recipe
    from ..generate import Aborted, Interrupted, default_data, run_generate
    from ..planning import all_done, dump_config, finished_here
    from ..progress import count_samples, resume_line
    from ..protocol import inline_texts, load_with_protocol
    from ..samples import SampleLoadError
    from ..store import RunError
    from ..tasks import task_names
    from ..teachers.base import TeacherUnavailable

    if config_format not in ("yaml", "json"):
        fail(f"--config-format {config_format!r}: expected yaml or json")
    try:
        rec = load_recipe(recipe, task or "sat2") if recipe else None
        task = task or (rec or {}).get("task") or "sat2"
        if task not in task_names():
            fail(f"unknown task {task!r} (known: {', '.join(task_names())})")
        rec = rec if rec is not None else load_recipe(None, task)
        if protocol:
            rec = load_with_protocol(recipe, task, protocol)
        bundled = data is None
        choice = choose_teacher(teacher, base_url, model, recipe_teacher_kind(rec, set_), bundled)
        cfg = build_run_config(
            rec,
            set_,
            task=task,
            data=str(data if data is not None else default_data(task)),
            image_root=str(image_root) if image_root else None,
            limit=limit,
            seed=seed,
            teacher__kind=choice.kind,
            teacher__base_url=base_url,
            teacher__model=model,
            teacher__concurrency=concurrency,
            inputs__allow_outside_root=True if allow_outside_root else None,
        )
        cfg.multiturn = inline_texts(cfg.multiturn)  # @FILE texts recorded as text (config.json, hash)
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    out_dir = out or Path("runs") / f"{task}-{choice.kind}"
    if print_config:
        typer.echo(dump_config(cfg.to_dict(), config_format), nl=False)
        return
    kind = choice.kind
    if backend_missing(kind):
        fail(str(backend_missing(kind)))
    if kind == "sim":
        typer.echo(f"teacher: sim {choice.why} — a scripted simulated teacher driven by annotations, not a model", err=True)
    elif kind == "openai":
        typer.echo(f"teacher: openai {choice.why} — {cfg.teacher.model} at {public_urls(cfg.teacher.base_url)}", err=True)
    else:
        typer.echo(f"teacher: vllm (in-process) {choice.why} — {cfg.teacher.model}", err=True)
    data_path = Path(cfg.data or default_data(task))
    if not data_path.exists():
        fail(f"{data_path}: no such file or directory")
    total = count_samples(data_path, cfg.limit)
    typer.echo(f"data: {cfg.data} ({'?' if total is None else total} samples)   run: {out_dir}", err=True)
    done = finished_here(out_dir, cfg.hash())
    if done is not None and not dry_run:
        if total is not None and len(done) >= total and all_done(data_path, cfg, done):
            typer.echo(f"{out_dir}: {resume_line(len(done), total)} (the run is complete)", err=True)
            typer.echo(_next_export(out_dir), err=True)
            return
        if done:
            typer.echo(resume_line(len(done), total), err=True)
    if dry_run:
        _dry_run(cfg, out_dir, total, pilot, force, len(done or ()))
        return
    try:
        stats = run_generate(cfg, out_dir, force=force, progress=progress, status_every=status_every)
    except Aborted as exc:  # the teacher went down mid-run: what failed so far, then why it stopped
        _print_groups(_stored_stats(out_dir), out_dir)
        fail(str(exc))
    except (TeacherUnavailable, RunError, SampleLoadError, ValueError) as exc:
        fail(str(exc))
    except Interrupted as exc:  # SIGINT/SIGTERM: the trees in flight were checkpointed first
        typer.echo(str(exc), err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo(f"interrupted: finished samples are saved in {out_dir}; rerun the same command to resume", err=True)
        raise typer.Exit(130) from None
    _finish(stats, out_dir)


def _finish(s: dict[str, Any], out_dir: Path) -> None:
    """The summary line, failures grouped by kind, the next step; exit 1 when no sample succeeded."""
    typer.echo(
        f"done: {s['finished']} trees ({s['solved']} solved, {s['solve_rate']:.0%}), {s['failed']} failed, "
        f"{s['calls']} teacher calls, {s['nodes']} nodes → {out_dir}"
    )
    _print_groups(s, out_dir)
    if s["finished"] == 0:
        typer.echo("error: no sample succeeded", err=True)
        raise typer.Exit(1)
    typer.echo(_next_export(out_dir), err=True)


def _print_groups(s: dict[str, Any], out_dir: Path) -> None:
    from ..failures import FailureGroup, format_groups

    groups = [FailureGroup(g["kind"], g["count"], g["example"]) for g in s.get("failure_groups", [])]
    if groups:
        typer.echo(f"failures by kind ({out_dir / 'failures.jsonl'}):", err=True)
        for line in format_groups(groups):
            typer.echo(line, err=True)


def _stored_stats(out_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((out_dir / "stats.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _next_export(out_dir: Path) -> str:
    return f"next: mcts-engine export --run {out_dir}   (training data; `mcts-engine report --run {out_dir}` to look at the trees)"


def _dry_run(cfg: Any, out_dir: Path, total: int | None, k: int, force: bool, already: int) -> None:
    """A pilot of ``k`` samples not yet done (kept in the run: the real run resumes after them), then the projection."""
    from dataclasses import replace

    from ..generate import Aborted, run_generate
    from ..planning import pilot_limit, project, projection_lines
    from ..samples import SampleLoadError
    from ..store import RunError
    from ..teachers.base import TeacherUnavailable

    limit = pilot_limit(cfg.limit, already, k)
    typer.echo(f"dry run: pilot of {max(0, limit - already)} sample(s) into {out_dir} (kept: the real run resumes after them)", err=True)
    try:
        stats = run_generate(replace(cfg, limit=limit), out_dir, force=force, progress=False)
    except (TeacherUnavailable, RunError, SampleLoadError, Aborted, ValueError) as exc:
        fail(str(exc))
    sess = stats.get("session", {})
    rate = sess.get("calls_per_s") if sess.get("calls") else None
    try:
        proj = project(stats, total if total is not None else stats["finished"], rate)
    except ValueError as exc:
        _finish(stats, out_dir)  # prints why the pilot failed, exits 1
        fail(str(exc), 1)
    measured, projected = projection_lines(proj, stats, rate)
    typer.echo(measured)
    typer.echo(projected)
    if stats.get("failed"):
        typer.echo(f"pilot failures: {stats['failed']} (see {out_dir / 'failures.jsonl'})", err=True)
    typer.echo("next: run the same command without --dry-run", err=True)

