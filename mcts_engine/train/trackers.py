"""Where training metrics go: ``metrics.jsonl`` (always), experiment trackers (``train.report_to``), a progress bar.

- ``metrics.jsonl``: one JSON object per line (rank 0), appended to on ``--resume``, else started afresh.
- Trackers, each through its library's own public API and each an optional extra (``pip install
  'mcts-engine[tensorboard]'`` …): ``tensorboard`` (``torch.utils.tensorboard.SummaryWriter`` in ``<out>/tensorboard``),
  ``wandb`` (``wandb.init`` / ``run.log`` / ``run.finish``; project from ``WANDB_PROJECT``, else ``mcts-engine``),
  ``trackio`` (``trackio.init`` / ``trackio.log`` / ``trackio.finish``; project from ``TRACKIO_PROJECT``, else
  ``mcts-engine``), ``mlflow`` (``mlflow.start_run`` / ``log_params`` / ``log_metrics`` / ``end_run``; experiment from
  ``MLFLOW_EXPERIMENT_NAME``, else the tracking server's default). A requested tracker that is not installed is a
  one-line error with the install command, before any data or model is loaded (:func:`require_trackers`).
  Only the per-step numbers are sent (strings, nested records and the start/end events stay in ``metrics.jsonl``);
  the run's resolved configuration goes with the tracker's run (``config``/``log_params``).
- Progress: a ``tqdm`` bar on rank 0 (``train.progress``) with steps done, elapsed time, ETA and the step's main
  metric (SFT loss, GRPO reward); the per-step metric line is printed above it.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .errors import TrainSetupError

# tracker → (module to import, the extra that installs it)
TRACKER_MODULES = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "trackio": ("trackio", "trackio"),
    "mlflow": ("mlflow", "mlflow"),
}


def require_trackers(names: list[str]) -> None:
    """A one-line error for the first requested tracker whose library is not importable."""
    for name in names:
        module, extra = TRACKER_MODULES[name]
        try:
            importlib.import_module(module)
        except ImportError:
            raise TrainSetupError(
                f"train.report_to={name} needs the '{module}' package, which is not installed: "
                f"pip install 'mcts-engine[{extra}]' (or pip install {module}), or drop it from train.report_to"
            ) from None


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "time")}


class TensorBoard:
    def __init__(self, out: Path, run_name: str, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(out / "tensorboard"))
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```", 0)

    def log(self, values: dict[str, float], step: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        self.writer.close()


class WandB:
    def __init__(self, out: Path, run_name: str, config: dict[str, Any]) -> None:
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "mcts-engine"), name=run_name,
                              config=config, dir=str(out))

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class Trackio:
    def __init__(self, out: Path, run_name: str, config: dict[str, Any]) -> None:
        import trackio

        self.trackio = trackio
        trackio.init(project=os.environ.get("TRACKIO_PROJECT", "mcts-engine"), name=run_name, config=config)

    def log(self, values: dict[str, float], step: int) -> None:
        self.trackio.log(values, step=step)

    def close(self) -> None:
        self.trackio.finish()


class MLflow:
    def __init__(self, out: Path, run_name: str, config: dict[str, Any]) -> None:
        import mlflow

        self.mlflow = mlflow
        mlflow.start_run(run_name=run_name)
        mlflow.log_params(_flatten(config))

    def log(self, values: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(values, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = str(v)[:250]  # MLflow bounds a parameter value's length
    return out


TRACKERS = {"tensorboard": TensorBoard, "wandb": WandB, "trackio": Trackio, "mlflow": MLflow}


class Metrics:
    """Rank-0 metrics: ``metrics.jsonl``, the trackers of ``report_to``, a progress bar and a line per record on
    stderr. Every other rank holds a disabled instance (every call is a no-op)."""

    def __init__(self, out: Path, enabled: bool, append: bool = False, report_to: list[str] | None = None,
                 run_name: str = "", config: dict[str, Any] | None = None, total: int = 0, start: int = 0,
                 progress: bool = False, headline: str = "") -> None:
        self.enabled = enabled
        self.file = None
        self.trackers: list[Any] = []
        self.bar = None
        self.headline = headline
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        self.file = (out / "metrics.jsonl").open("a" if append else "w", encoding="utf-8")
        for name in report_to or []:
            self.trackers.append(TRACKERS[name](out, run_name or out.name, config or {}))
        if progress and total > 0:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True,
                            file=sys.stderr, smoothing=0.1)

    def log(self, record: dict[str, Any], echo: bool = True) -> None:
        if not self.enabled or self.file is None:
            return
        record = {"time": round(time.time(), 3), **record}
        self.file.write(json.dumps(record, default=float) + "\n")
        self.file.flush()
        step = int(record.get("step", 0))
        if "event" not in record:  # start/end summaries stay in metrics.jsonl (their numbers repeat a step's)
            values = _numbers(record)
            for tracker in self.trackers:
                tracker.log(values, step)
        if echo:
            shown = " ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                for k, v in record.items() if k != "time" and not isinstance(v, (dict, list))
            )
            if self.bar is not None:
                self.bar.write(shown, file=sys.stderr)
            else:
                print(shown, file=sys.stderr, flush=True)

    def advance(self, step: int, record: dict[str, Any] | None = None) -> None:
        """Move the progress bar to ``step`` (optimizer steps done), showing the step's headline metric."""
        if self.bar is None:
            return
        if record and isinstance(record.get(self.headline), (int, float)):
            self.bar.set_postfix({self.headline: f"{record[self.headline]:.4g}"}, refresh=False)
        self.bar.update(max(0, step - self.bar.n))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.file is not None:
            self.file.close()
        for tracker in self.trackers:
            tracker.close()


__all__ = ["TRACKERS", "TRACKER_MODULES", "Metrics", "require_trackers"]
