"""`mcts-engine report`: one offline HTML page for a run — statistics, failures by kind, solve rate per question
type, an index of every tree with filters, and each sample's card rendered when opened (PIL imported lazily)."""

from __future__ import annotations

from pathlib import Path

import typer

from . import fail


def report(
    run: Path = typer.Option(..., "--run", help="Run directory (runs/NAME) written by `generate`."),
    out: Path | None = typer.Option(None, "--out", help="HTML file to write (default: RUN/report.html)."),
    limit: int | None = typer.Option(None, "--limit", min=0, help="At most N trees in the index and cards (default: all; statistics cover every tree)."),
    image_root: Path | None = typer.Option(None, "--image-root", help="Where relative image paths resolve."),
    self_contained: bool | None = typer.Option(
        None, "--self-contained/--linked",
        help="Inline every image (one portable file) or link the run directory's images (small page). Default: inline up to 100 trees, link above.",
    ),
) -> None:
    """Render run statistics, failures and every tree (index with filters; cards on demand) as one offline HTML page."""
    from ..export.report import build_report
    from ..store import RunError

    try:
        res = build_report(run, out, limit=limit, image_root=str(image_root) if image_root else None,
                           self_contained=self_contained)
    except RunError as exc:
        fail(str(exc))
    where = "images inlined" if res.self_contained else f"images linked from {run} (keep the page beside the run)"
    typer.echo(
        f"wrote {res.path} ({res.bytes / 1e6:.1f} MB): {res.trees} trees, {res.solved} solved, "
        f"{res.samples_shown} shown; {where}"
    )
