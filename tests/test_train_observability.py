"""Observability (issue 13): experiment trackers through their own APIs (a missing one is a one-line install hint),
a progress bar with ETA on rank 0, and `--model` checks that answer in one line before anything heavy loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types

import pytest

from mcts_engine.testing.tiny_model import sft_rows, write_parquet
from mcts_engine.train.config import RunArgs, train_config_from_recipe


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_parquet(sft_rows(4), tmp_path_factory.mktemp("d") / "train.parquet")


def _cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})}
    return subprocess.run([sys.executable, "-m", "mcts_engine.cli", "train", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


# --- trackers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,module", [("wandb", "wandb"), ("mlflow", "mlflow"), ("tensorboard", "tensorboard"),
                                         ("trackio", "trackio")])
def test_a_tracker_that_is_not_installed_is_one_line(tiny, data, tmp_path, monkeypatch, name, module):
    # Guards Observability: TensorBoard was skipped silently when missing; the others did not exist.
    monkeypatch.setitem(sys.modules, module, None)  # importing it raises ImportError, installed or not
    from typer.testing import CliRunner

    from mcts_engine.cli import app

    res = CliRunner().invoke(app, ["train", "--method", "sft", "--model", str(tiny), "--data", str(data),
                                   "--out", str(tmp_path / "o"), "--set", f"train.report_to={name}"])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"pip install 'mcts-engine[{name}]'" in lines[0], res.output
    assert not (tmp_path / "o").exists()  # refused before anything ran


class _FakeRun:
    def __init__(self, calls):
        self.calls = calls

    def log(self, values, step=None):
        self.calls.append(("log", dict(values), step))

    def finish(self):
        self.calls.append(("finish",))


def test_trackers_receive_every_record_through_their_own_api(tiny, data, tmp_path, monkeypatch):
    from mcts_engine.train.sft import run_sft

    calls: list = []
    wandb = types.ModuleType("wandb")
    wandb.init = lambda **kw: (calls.append(("wandb.init", kw)), _FakeRun(calls))[1]
    mlflow = types.ModuleType("mlflow")
    mlflow.start_run = lambda **kw: calls.append(("mlflow.start_run", kw))
    mlflow.log_params = lambda params: calls.append(("mlflow.log_params", params))
    mlflow.log_metrics = lambda values, step=None: calls.append(("mlflow.log_metrics", dict(values), step))
    mlflow.end_run = lambda: calls.append(("mlflow.end_run",))
    trackio = types.ModuleType("trackio")
    trackio.init = lambda **kw: calls.append(("trackio.init", kw))
    trackio.log = lambda values, step=None: calls.append(("trackio.log", dict(values), step))
    trackio.finish = lambda: calls.append(("trackio.finish",))
    tb = types.ModuleType("torch.utils.tensorboard")

    class SummaryWriter:
        def __init__(self, log_dir):
            calls.append(("tb.init", log_dir))

        def add_text(self, tag, text, step):
            calls.append(("tb.text", tag))

        def add_scalar(self, tag, value, step):
            calls.append(("tb.scalar", tag, value, step))

        def close(self):
            calls.append(("tb.close",))

    tb.SummaryWriter = SummaryWriter
    for name, mod in (("wandb", wandb), ("mlflow", mlflow), ("trackio", trackio), ("torch.utils.tensorboard", tb),
                      ("tensorboard", types.ModuleType("tensorboard"))):
        monkeypatch.setitem(sys.modules, name, mod)
    cfg = train_config_from_recipe({"train": {"max_steps": 2, "num_workers": 0, "progress": False,
                                              "report_to": "tensorboard,wandb,mlflow,trackio", "run_name": "r1"}})
    run_sft(RunArgs("sft", str(tiny), str(data), str(tmp_path / "run")), cfg)
    names = [c[0] for c in calls]
    init = next(c[1] for c in calls if c[0] == "wandb.init")
    assert init["name"] == "r1" and init["config"]["config"]["max_steps"] == 2
    assert next(c[1] for c in calls if c[0] == "mlflow.start_run") == {"run_name": "r1"}
    assert next(c[1] for c in calls if c[0] == "mlflow.log_params")["config.max_steps"] == "2"
    wandb_steps = [c for c in calls if c[0] == "log" and "loss" in c[1]]
    assert [c[2] for c in wandb_steps] == [1, 2]
    assert [c[2] for c in calls if c[0] == "mlflow.log_metrics" and "loss" in c[1]] == [1, 2]
    assert [c[2] for c in calls if c[0] == "trackio.log" and "loss" in c[1]] == [1, 2]
    assert all(isinstance(v, float) for c in wandb_steps for v in c[1].values())  # numbers only
    assert [c[3] for c in calls if c[0] == "tb.scalar" and c[1] == "loss"] == [1, 2]
    assert next(c[1] for c in calls if c[0] == "tb.init").endswith("tensorboard")
    assert set(names[-4:]) == {"tb.close", "finish", "mlflow.end_run", "trackio.finish"}  # every run closed
    # metrics.jsonl stays
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "loss" in r and "event" not in r] == [1, 2]


def test_progress_bar_with_eta_on_rank_0(tmp_path, capsys):
    from mcts_engine.train.trackers import Metrics

    m = Metrics(tmp_path, True, total=4, progress=True, headline="loss")
    for step in range(1, 5):
        m.log({"step": step, "loss": 1.0 / step})
        m.advance(step, {"loss": 1.0 / step})
    m.close()
    err = capsys.readouterr().err
    assert "4/4" in err and "loss=0.25" in err and "<" in err  # tqdm's "elapsed<remaining" (the ETA)
    off = Metrics(tmp_path / "r1", False, total=4, progress=True)  # other ranks: nothing at all
    assert off.bar is None and not (tmp_path / "r1").exists()


# --- --model ------------------------------------------------------------------------------------------


def test_a_missing_local_model_path_is_one_line_at_once(data, tmp_path):
    for missing in (str(tmp_path / "nope" / "model"), "./no/such/model", "~/no-such-model-dir"):
        t0 = time.perf_counter()
        res = _cli("--method", "sft", "--model", missing, "--data", str(data), "--out", str(tmp_path / "o"),
                   "--set", "train.progress=false")
        wall = time.perf_counter() - t0
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode == 2 and len(lines) == 1 and "no such directory" in lines[0], res.stderr
        assert wall < 20.0, wall  # a fresh interpreter under a shared machine's load; the check itself is timed below
    from mcts_engine.train.errors import TrainSetupError
    from mcts_engine.train.hub import check_model_arg

    t0 = time.perf_counter()
    with pytest.raises(TrainSetupError, match="no such directory"):
        check_model_arg("./no/such/model")
    assert time.perf_counter() - t0 < 1.0


def test_model_check_imports_nothing_heavy():
    code = ("import sys\nfrom mcts_engine.train.hub import check_model_arg\n"
            "try:\n    check_model_arg('./no/such/dir')\nexcept Exception as e:\n    print(type(e).__name__)\n"
            "print(sorted(m for m in ('torch', 'transformers', 'huggingface_hub') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}).stdout.split()
    assert out == ["TrainSetupError", "[]"]


def test_an_unreachable_hub_id_is_one_line(data, tmp_path, monkeypatch):
    # offline (HF_HUB_OFFLINE) and not cached: one line, no retries, no network
    res = _cli("--method", "sft", "--model", "some-org/not-cached-model", "--data", str(data), "--out",
               str(tmp_path / "o"), env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "HF_HUB_OFFLINE" in lines[0], res.stderr
    # the hub cannot be reached (simulated: the metadata request fails once): one line naming the id
    import huggingface_hub

    from mcts_engine.train.errors import TrainSetupError
    from mcts_engine.train.hub import check_model_arg

    asked = []

    def unreachable(self, repo_id, **kw):
        asked.append(repo_id)
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    with pytest.raises(TrainSetupError) as err:
        check_model_arg("some-org/not-cached-model")
    assert asked == ["some-org/not-cached-model"] and "\n" not in str(err.value)
    assert "unreachable" in str(err.value) and "some-org/not-cached-model" in str(err.value)


def test_local_looking_values():
    from mcts_engine.train.hub import looks_local

    assert all(looks_local(v) for v in ("/abs/x", "./x", "../x", "~/x", "a/b/c"))
    assert not any(looks_local(v) for v in ("Qwen/Qwen2.5-VL-3B-Instruct", "gpt2"))
