"""`mcts-engine export`: a run's trees → SFT / GRPO / DPO / PRM files (parquet or JSONL).

A multi-turn run (config.json ``multiturn.enabled``) exports multi-turn SFT and GRPO rows unless
``--mode single`` asks for single-turn chains.

Light at import time: the exporter (pyarrow, datasets, PIL) is imported inside the function.
"""

from __future__ import annotations

from pathlib import Path

import typer

from . import fail


def export(
    run: Path = typer.Option(..., "--run", help="Run directory (runs/NAME) written by `generate`."),
    format: str = typer.Option("parquet", "--format", help="parquet | jsonl"),
    kind: str = typer.Option("all", "--kind", help="sft | grpo | dpo | prm | all (comma-separated list allowed)."),
    flavor: str = typer.Option(
        "trl", "--flavor", help="trl (all kinds) | verl (grpo) | easyr1 (grpo) | llamafactory (sft, dpo)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Output directory (default: RUN/export/FLAVOR)."),
    val_fraction: float | None = typer.Option(None, "--val-fraction", help="Share of samples in *_val files (recipe default 0.05)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the train/val split (recipe default 0)."),
    strategy: str | None = typer.Option(
        None, "--strategy", help="SFT chains: comma-separated best,all_correct,backtrack (default all_correct,backtrack)."
    ),
    recipe: Path | None = typer.Option(None, "--recipe", help="Take the export: section from this recipe YAML."),
    protocol: str | None = typer.Option(None, "--protocol", help="Write rows in a released model's protocol (vigorl): system message, first turn, observations and crops (docs/protocols.md)."),
    set_: list[str] = typer.Option([], "--set", help="Override, e.g. --set export.max_chains_per_sample=12 or --set system_prompt=model."),
    image_root: Path | None = typer.Option(None, "--image-root", help="Where relative image paths resolve."),
    limit: int | None = typer.Option(None, "--limit", help="Export only the first N trees (N ≥ 1)."),
    allow_outside_root: bool = typer.Option(
        False, "--allow-outside-root",
        help="Read source images outside their image root (rescale_to_original, runs without cached frames); see docs/input-data.md.",
    ),
    mode: str = typer.Option(
        "auto", "--mode",
        help="auto (multi-turn rows when the run is multi-turn) | multiturn (insist on it) | single (single-turn chains).",
    ),
    quiet: bool = typer.Option(False, "--quiet", help="Print only the summary line."),
) -> None:
    """Linearize search trees into training data (TRL, verl, EasyR1, LLaMA-Factory)."""
    from ..config import ConfigError
    from ..export.config import FLAVORS, KINDS, MODES, ExportError, kinds_for, resolve_export_config, resolve_mode
    from ..export.console import detail_lines, next_train_hint, size_line
    from ..export.protocol_rows import protocol_settings, split_overrides
    from ..export.run import export_run
    from ..store import RunError, RunStore

    if flavor not in FLAVORS:
        fail(f"--flavor {flavor!r}: expected one of {', '.join(FLAVORS)}")
    if mode not in MODES:
        fail(f"--mode {mode!r}: expected one of {', '.join(MODES)}")
    if limit is not None and limit < 1:
        fail(f"--limit: {limit} is out of range (allowed: ≥ 1)")
    if out is not None and out.exists() and not out.is_dir():
        fail(f"--out {out}: is an existing file, not a directory (export writes a directory of files)")
    kinds = [k.strip() for k in kind.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in (*KINDS, "all")]
    if unknown or not kinds or ("all" in kinds and len(kinds) > 1):
        fail(f"--kind {(unknown or [kind])[0]!r}: expected one of {', '.join(KINDS)} (comma-separated) or all")
    try:
        store = RunStore.open_existing(run)
        if kinds == ["all"]:
            kinds = list(kinds_for(flavor, resolve_mode(store.config(), mode)))
        mine, rest = split_overrides(list(set_))
        task_name = str((store.config().get("config") or {}).get("task") or "sat2")
        prompt_settings = protocol_settings(task_name, protocol, mine)
        cfg, task_options = resolve_export_config(
            store.config(), recipe=str(recipe) if recipe else None, overrides=rest,
            val_fraction=val_fraction, seed=seed, strategies=strategy,
        )
        out_dir = out or (run / "export" / (flavor if format == "parquet" else f"{flavor}_{format}"))
        result = export_run(
            run, out_dir, kinds=kinds, cfg=cfg, fmt=format, flavor=flavor,
            image_root=str(image_root) if image_root else None, limit=limit, task_options=task_options, mode=mode,
            allow_outside_root=allow_outside_root,
            protocol=prompt_settings,
        )
    except (RunError, ExportError, ConfigError, ValueError) as exc:
        fail(str(exc).splitlines()[0])
    except OSError as exc:  # the output directory cannot be made or written (a file in its path, no space, ...)
        fail(f"cannot write {exc.filename or out or run}: {exc.strerror or exc}")
    if not quiet:
        for line in detail_lines(result):
            typer.echo(line)
    typer.echo(f"exported {result.samples_exported}/{result.trees} samples to {result.out_dir} in {result.seconds:.1f}s: "
               + size_line(result.output_bytes, result.unique_image_bytes, result.text_bytes) + "; details in export_summary.json")
    hint = next_train_hint(run, Path(result.out_dir), sorted(result.rows), format)
    if hint:
        typer.echo(hint, err=True)
