"""Planning a run before and between sessions: is it finished, what will the whole dataset cost (``--dry-run``).

Pure apart from reading the run directory and the data's sample ids (no teacher): ``generate`` calls these before
it starts the search. A *pilot* is the first ``k`` samples not yet done, searched for real and kept in the run (the
real run resumes after them); its per-finished-tree averages × the dataset size give the projection.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def project(stats: dict[str, Any], total: int, calls_per_s: float | None) -> dict[str, Any]:
    """Whole-dataset projection from a pilot: per-finished-tree averages × ``total`` samples; wall time
    at the measured call rate (None when no call was timed). Pure: ``stats`` is ``summarize``'s dict."""
    n = int(stats.get("finished", 0))
    if n == 0:
        raise ValueError("no pilot sample finished: nothing to project from")
    per = {k: stats.get(k, 0) / n for k in ("calls", "choices", "prompt_tokens", "completion_tokens")}
    out: dict[str, Any] = {"pilot_trees": n, "samples": total, "per_sample": per}
    out.update({k: round(v * total) for k, v in per.items()})
    out["wall_s"] = out["calls"] / calls_per_s if calls_per_s else None
    return out


def pilot_limit(limit: int | None, already: int, k: int) -> int:
    """The ``limit`` a pilot of ``k`` more samples runs with, after ``already`` finished ones (within ``--limit``)."""
    return already + k if limit is None else min(limit, already + k)


def projection_lines(proj: dict[str, Any], stats: dict[str, Any], rate: float | None) -> tuple[str, str]:
    """What ``--dry-run`` prints: the pilot's per-sample measurement and the whole-dataset projection."""
    from .progress import fmt_duration

    per = proj["per_sample"]
    measured = (f"measured on {proj['pilot_trees']} tree(s) in the run ({stats['solved']} solved): per sample {per['calls']:.1f} calls, "
                f"{per['choices']:.1f} choices, {per['prompt_tokens']:.0f} prompt + {per['completion_tokens']:.0f} completion tokens")
    wall = "unknown (no call timed in this session)" if proj["wall_s"] is None else (
        f"{fmt_duration(proj['wall_s'])} at the pilot's {rate:.2f} calls/s (more trees in flight usually go faster)")
    projected = (
        f"projected for {proj['samples']} samples: {proj['calls']:,} calls, {proj['choices']:,} choices, "
        f"{proj['prompt_tokens']:,} prompt tokens, {proj['completion_tokens']:,} completion tokens, wall time {wall}"
    )
    return measured, projected


def finished_here(out_dir: Path, config_hash: str) -> set[str] | None:
    """Sample ids already finished in ``out_dir`` when it is a run of this same config, else None."""
    from .store import RunStore

    cfg_path = out_dir / "config.json"
    if not cfg_path.exists():
        return None
    try:
        if json.loads(cfg_path.read_text()).get("hash") != config_hash:
            return None
    except (OSError, json.JSONDecodeError):
        return None
    return RunStore(out_dir).finished_ids()


def all_done(data_path: Path, cfg: Any, done: set[str]) -> bool:
    """Whether every sample id the data yields (up to ``--limit``) is finished (ids read, no teacher)."""
    from .samples import Sample, SampleLoadError, load_samples, unique_samples

    try:
        items = unique_samples(load_samples(data_path, cfg.image_root, cfg.task), cfg.limit)
        return all(isinstance(it, Sample) and it.id in done for it in items)
    except (SampleLoadError, OSError, ValueError):
        return False


def dump_config(d: dict[str, Any], fmt: str) -> str:
    """The resolved config as YAML or JSON text (``--print-config``)."""
    if fmt == "json":
        return json.dumps(d, indent=2, sort_keys=False, default=str) + "\n"
    import yaml

    return yaml.safe_dump(json.loads(json.dumps(d, default=str)), sort_keys=False)


__all__ = ["project", "pilot_limit", "projection_lines", "finished_here", "all_done", "dump_config"]
