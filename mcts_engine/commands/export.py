"""`mcts-engine export`: a run's trees → SFT / GRPO / DPO / PRM files (parquet or JSONL).

A multi-turn run (config.json ``multiturn.enabled``) exports multi-turn SFT and GRPO rows unless
``--mode single`` asks for single-turn chains.

Light at import time: the exporter (pyarrow, datasets, PIL) is imported inside the function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import fail


def export(
    run: Path = typer.Option(..., "--run", help="Run directory (runs/NAME) written by `generate`."),
    format: str = typer.Option("parquet", "--format", help="parquet | jsonl"),
    kind: str = typer.Option("all", "--kind", help="sft | grpo | dpo | prm | all (comma-separated list allowed)."),
    flavor: str = typer.Option(
        "trl", "--flavor", help="trl (all kinds) | verl (grpo) | easyr1 (grpo) | llamafactory (sft, dpo)."
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Output directory (default: RUN/export/FLAVOR)."),
    val_fraction: Optional[float] = typer.Option(None, "--val-fraction", help="Share of samples in *_val files (recipe default 0.05)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the train/val split (recipe default 0)."),
    strategy: Optional[str] = typer.Option(
        None, "--strategy", help="SFT chains: comma-separated best,all_correct,backtrack (default all_correct,backtrack)."
    ),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="Take the export: section from this recipe YAML."),
    set_: list[str] = typer.Option([], "--set", help="Override, e.g. --set export.max_chains_per_sample=12."),
    image_root: Optional[Path] = typer.Option(None, "--image-root", help="Where relative image paths resolve."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Export only the first N trees."),
    mode: str = typer.Option(
        "auto", "--mode",
        help="auto (multi-turn rows when the run is multi-turn) | multiturn (insist on it) | single (single-turn chains).",
    ),
    quiet: bool = typer.Option(False, "--quiet", help="Print only the summary line."),
) -> None:
    """Linearize search trees into training data (TRL, verl, EasyR1, LLaMA-Factory)."""
    from ..config import ConfigError
    from ..export.formats import FLAVORS, MODES, ExportError, export_run, kinds_for, resolve_export_config, resolve_mode
    from ..store import RunError, RunStore

    if flavor not in FLAVORS:
        fail(f"--flavor {flavor!r}: expected one of {', '.join(FLAVORS)}")
    if mode not in MODES:
        fail(f"--mode {mode!r}: expected one of {', '.join(MODES)}")
    kinds = [k.strip() for k in kind.split(",") if k.strip()]
    try:
        store = RunStore.open_existing(run)
        if kinds == ["all"]:
            kinds = list(kinds_for(flavor, resolve_mode(store.config(), mode)))
        cfg, task_options = resolve_export_config(
            store.config(), recipe=str(recipe) if recipe else None, overrides=list(set_),
            val_fraction=val_fraction, seed=seed, strategies=strategy,
        )
        out_dir = out or (run / "export" / (flavor if format == "parquet" else f"{flavor}_{format}"))
        result = export_run(
            run, out_dir, kinds=kinds, cfg=cfg, fmt=format, flavor=flavor,
            image_root=str(image_root) if image_root else None, limit=limit, task_options=task_options, mode=mode,
        )
    except (RunError, ExportError, ConfigError, ValueError) as exc:
        fail(str(exc).splitlines()[0])
    if not quiet:
        if result.mode == "multiturn":
            mt = result.multiturn or {}
            typer.echo(
                f"  multi-turn rows: ≤ {mt.get('max_turns')} turns, crop offset {mt.get('crop_offset')} → "
                f"{mt.get('crop_size')} px, dot {'on' if mt.get('draw_dot') else 'off'}; {result.crop_images} crops in sft rows"
            )
        for name, n in sorted(result.rows.items()):
            typer.echo(f"  {name:<22} {n:>8} rows")
        if result.strategies:
            typer.echo("  sft chains by strategy: " + ", ".join(f"{k}={v}" for k, v in sorted(result.strategies.items())))
        reasons: dict[str, int] = {}
        for s in result.skipped_records:
            reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:10]:
            typer.echo(f"  skipped {n} sample(s)/line(s): {reason}")
        for k, d in sorted(result.kind_skips.items()):
            for reason, n in sorted(d.items(), key=lambda kv: -kv[1]):
                typer.echo(f"  {k}: {n} sample(s) without rows: {reason}")
    typer.echo(
        f"exported {result.samples_exported}/{result.trees} samples to {result.out_dir} in {result.seconds:.1f}s "
        f"({result.output_bytes / 1e6:.1f} MB; images {result.unique_image_bytes / 1e6:.1f} MB unique, "
        f"text {result.text_bytes / 1e6:.1f} MB); details in export_summary.json"
    )
