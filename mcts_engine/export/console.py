"""What ``mcts-engine export`` prints about a finished export: the per-kind row counts, skips, sizes, next step.

Pure: an ``ExportResult`` (or plain numbers) in, lines of text out; the command echoes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def detail_lines(result: Any) -> list[str]:
    """The detail lines above the summary (multi-turn settings, rows per file, strategies, skip reasons)."""
    out: list[str] = []
    if result.mode == "multiturn":
        mt = result.multiturn or {}
        out.append(
            f"  multi-turn rows: ≤ {mt.get('max_turns')} turns, crop offset {mt.get('crop_offset')} → "
            f"{mt.get('crop_size')} px, dot {'on' if mt.get('draw_dot') else 'off'}; {result.crop_images} crops in sft rows"
        )
    for name, n in sorted(result.rows.items()):
        out.append(f"  {name:<22} {n:>8} rows")
    if result.strategies:
        out.append("  sft chains by strategy: " + ", ".join(f"{k}={v}" for k, v in sorted(result.strategies.items())))
    reasons: dict[str, int] = {}
    for s in result.skipped_records:
        reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
    for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:10]:
        out.append(f"  skipped {n} sample(s)/line(s): {reason}")
    for k, d in sorted(result.kind_skips.items()):
        for reason, n in sorted(d.items(), key=lambda kv: -kv[1]):
            out.append(f"  {k}: {n} sample(s) without rows: {reason}")
    return out


def size_line(on_disk: int, image_bytes: int, text_bytes: int) -> str:
    """The sizes, each under its own name: the files on disk (compressed, each image stored once per file
    that uses it) and, separately, what went in (unique images + row text before compression) with its own
    total, so no printed total is ever smaller than a part of it."""
    img, txt = round(image_bytes / 1e6, 2), round(text_bytes / 1e6, 2)
    return (f"{on_disk / 1e6:.2f} MB on disk; content before compression {img + txt:.2f} MB "
            f"= images {img:.2f} MB (unique) + text {txt:.2f} MB")


def next_train_hint(run: Path, out_dir: Path, row_names: list[str], fmt: str) -> str | None:
    """The `mcts-engine train` command that consumes this export (the bundled trainer reads TRL parquet)."""
    if fmt != "parquet":
        return None
    for method in ("sft", "grpo"):
        if f"{method}_train" in row_names or f"{method}_train.parquet" in row_names:
            val = f" --val {out_dir / 'sft_val.parquet'}" if method == "sft" and (out_dir / "sft_val.parquet").exists() else ""
            return (f"next: mcts-engine train --method {method} --model <student, e.g. Qwen/Qwen2.5-VL-3B-Instruct> "
                    f"--data {out_dir / f'{method}_train.parquet'}{val} --out {run / f'train-{method}'}")
    return None


__all__ = ["detail_lines", "size_line", "next_train_hint"]
