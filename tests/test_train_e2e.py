"""End to end from the command line: generate (sim teacher) → export → train SFT → train GRPO from that checkpoint."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from mcts_engine.cli import app
from mcts_engine.testing.tiny_model import build_tiny_model

runner = CliRunner()


def cli(*args: str):
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, f"{args[0]} failed ({res.exit_code}):\n{res.output}\n{res.exception!r}"
    return res


def test_generate_export_sft_grpo_from_the_cli(tmp_path):
    run, exp = tmp_path / "run", tmp_path / "export"
    cli("generate", "--teacher", "sim", "--limit", "4", "--out", str(run), "--seed", "1", "--no-progress")
    cli("export", "--run", str(run), "--kind", "sft,grpo", "--out", str(exp), "--quiet")
    sft_train = exp / "sft_train.parquet"
    grpo_train = exp / "grpo_train.parquet"
    assert sft_train.exists() and grpo_train.exists()
    val = exp / "sft_val.parquet"

    tiny = build_tiny_model(tmp_path / "tiny")
    sft_out = tmp_path / "sft"
    args = ["train", "--method", "sft", "--model", str(tiny), "--data", str(sft_train), "--out", str(sft_out),
            "--set", "train.max_steps=3", "--set", "train.num_workers=0", "--set", "train.lr=1e-3",
            "--set", "train.save_every=2"]
    if val.exists():
        args += ["--val", str(val)]
    res = cli(*args)
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 3 and summary["rows"] > 0 and summary["skipped"] == {}
    assert (sft_out / "final" / "model.safetensors").exists() and (sft_out / "checkpoint-000002").exists()
    metrics = [json.loads(x) for x in (sft_out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m and "event" not in m] == [1, 2, 3]

    grpo_out = tmp_path / "grpo"
    res = cli("train", "--method", "grpo", "--model", str(sft_out / "final"), "--data", str(grpo_train),
              "--out", str(grpo_out), "--set", "train.max_steps=2", "--set", "train.grpo.group_size=2",
              "--set", "train.grpo.prompts_per_step=2", "--set", "train.grpo.max_new_tokens=12",
              "--set", "train.batch_size=4")
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["method"] == "grpo" and summary["steps"] == 2
    steps = [json.loads(x) for x in (grpo_out / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if "reward" in s and "event" not in s]
    assert len(steps) == 2 and all(0.0 <= s["format_rate"] <= 1.0 for s in steps)
    assert (grpo_out / "final" / "config.json").exists()

    # a bad option is a one-line error, not a traceback
    res = runner.invoke(app, ["train", "--method", "grpo", "--model", str(tiny), "--data", str(sft_train),
                              "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "missing column 'prompt'" in res.output and "Traceback" not in res.output
