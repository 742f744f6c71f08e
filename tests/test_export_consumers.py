"""Exported files meet each consumer's column conventions (exact nesting; no network, no model).

Each check mirrors what the consumer does with a row: TRL renders ``messages``/``prompt`` with the
model's chat template (here Qwen2-VL's, rendered with jinja2 as transformers does) and pairs image parts
with the ``images`` column; verl splits string contents on ``<image>``; EasyR1 splits its ``prompt`` on
``<image>`` and sends ``answer`` as the ground truth; LLaMA-Factory reads ``dataset_info.json`` and
requires one ``<image>`` per image in sharegpt messages.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from datasets import load_dataset
from jinja2.sandbox import ImmutableSandboxedEnvironment
from PIL import Image

from mcts_engine.export.config import ExportConfig
from mcts_engine.export.rewards import easyr1_compute_score
from mcts_engine.export.run import export_run
from mcts_engine.testing.synthetic_runs import make_image, make_run, rich_tree

# Qwen2-VL's chat template (image parts → one vision block each; string or list contents).
QWEN2VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def render(messages: list[dict], add_generation_prompt: bool = False) -> str:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(QWEN2VL_TEMPLATE).render(messages=messages, add_generation_prompt=add_generation_prompt)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("consumers")
    data = tmp / "data"
    for i in range(3):
        make_image(data / f"img{i}.png", seed=i)
    run = make_run(tmp, [rich_tree(f"s{i}", f"img{i}.png") for i in range(3)], data=str(data / "x.jsonl"))
    cfg = ExportConfig(val_fraction=0.0, strategies="best,backtrack")
    out = {}
    for flavor, kinds in (("trl", ["sft", "grpo", "dpo", "prm"]), ("verl", ["grpo"]), ("easyr1", ["grpo"]),
                          ("llamafactory", ["sft", "dpo"])):
        out[flavor] = tmp / flavor
        export_run(run, out[flavor], kinds=kinds, cfg=cfg, flavor=flavor)
    return out


def _assert_parts(messages: list[dict]) -> None:
    for m in messages:
        assert set(m) == {"role", "content"} and isinstance(m["role"], str)
        assert isinstance(m["content"], list) and m["content"]
        for part in m["content"]:
            assert set(part) == {"type", "text"} and part["type"] in {"image", "text"}
            assert (part["text"] is None) == (part["type"] == "image")


def test_trl_sft_conversational_vlm(exports: dict[str, Path]) -> None:
    ds = load_dataset("parquet", data_files=str(exports["trl"] / "sft_train.parquet"), split="train")
    assert {"messages", "images"} <= set(ds.column_names)
    for row in ds:
        _assert_parts(row["messages"])
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
        assert all(isinstance(im, Image.Image) for im in row["images"])
        text = render(row["messages"])
        assert text.count("<|image_pad|>") == len(row["images"]) == 1
        assert text.rstrip().endswith("</answer><|im_end|>")
        assert "<|im_start|>system\nYou answer spatial questions" in text  # the student prompt


def test_trl_grpo_and_dpo(exports: dict[str, Path]) -> None:
    g = load_dataset("parquet", data_files=str(exports["trl"] / "grpo_train.parquet"), split="train")
    assert {"prompt", "images", "answer", "task", "ground_truth", "root_value", "solved"} <= set(g.column_names)
    for row in g:
        _assert_parts(row["prompt"])
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
        text = render(row["prompt"], add_generation_prompt=True)
        assert text.count("<|image_pad|>") == len(row["images"]) and text.endswith("<|im_start|>assistant\n")
        json.loads(row["ground_truth"])
    d = load_dataset("parquet", data_files=str(exports["trl"] / "dpo_train.parquet"), split="train")
    assert {"prompt", "chosen", "rejected", "images"} <= set(d.column_names) and len(d) > 0
    for row in d:
        _assert_parts(row["prompt"])
        for col in ("chosen", "rejected"):
            _assert_parts(row[col])
            assert [m["role"] for m in row[col]] == ["assistant"]
    p = load_dataset("parquet", data_files=str(exports["trl"] / "prm_train.parquet"), split="train")
    assert {"prompt", "completions", "labels"} <= set(p.column_names)
    assert all(len(r["completions"]) == len(r["labels"]) for r in p)


def _verl_build_messages(row: dict) -> list[dict]:
    """verl RLHFDataset._build_messages: string contents split on <image>/<video>."""
    messages = row["prompt"]
    for message in messages:
        segments = [s for s in re.split("(<image>|<video>)", message["content"]) if s != ""]
        message["content"] = [{"type": "image"} if s == "<image>" else {"type": "text", "text": s} for s in segments]
    return messages


def test_verl_columns(exports: dict[str, Path]) -> None:
    rows = pq.read_table(exports["verl"] / "grpo_train.parquet").to_pylist()
    assert rows
    for i, row in enumerate(rows):
        assert isinstance(row["data_source"], str) and isinstance(row["ability"], str)
        assert row["reward_model"]["style"] == "rule" and isinstance(row["reward_model"]["ground_truth"], str)
        assert row["extra_info"]["split"] == "train" and row["extra_info"]["index"] == i
        assert all(isinstance(im["bytes"], bytes) for im in row["images"])
        assert all(isinstance(m["content"], str) for m in row["prompt"])
        msgs = _verl_build_messages(row)
        assert sum(1 for m in msgs for c in m["content"] if c["type"] == "image") == len(row["images"])
        assert msgs[1]["content"][0] == {"type": "image"}
    assert "compute_score" in (exports["verl"] / "reward.py").read_text()


def _load_reward(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"reward_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.compute_score


def test_reward_files_new_and_old_import_paths_score_the_rows(exports: dict[str, Path], tmp_path: Path) -> None:
    """Generated reward.py files import from export.rewards; one written by an earlier version (importing
    from export.formats, now a re-export) still loads and gives the same scores."""
    from mcts_engine.export import rewards

    verl_file, easyr1_file = exports["verl"] / "reward.py", exports["easyr1"] / "reward.py"
    assert "from mcts_engine.export.rewards import verl_compute_score" in verl_file.read_text()
    assert "from mcts_engine.export.rewards import easyr1_compute_score" in easyr1_file.read_text()
    old = tmp_path / "reward_old.py"
    old.write_text("from mcts_engine.export.formats import verl_compute_score as compute_score  # noqa: F401\n")
    assert _load_reward(verl_file) is _load_reward(old) is rewards.verl_compute_score
    assert _load_reward(easyr1_file) is rewards.easyr1_compute_score
    row = pq.read_table(exports["verl"] / "grpo_train.parquet").to_pylist()[0]
    good = "<think>\nThe cup (10, 10).\n</think>\n<answer> left </answer>"
    args = (row["data_source"], good, row["reward_model"]["ground_truth"], row["extra_info"])
    assert _load_reward(old)(*args)["score"] == 1.0
    assert _load_reward(verl_file)(row["data_source"], "<answer> right </answer>", *args[2:])["score"] == 0.0


def test_rewards_module_loads_no_image_or_parquet_library() -> None:
    """A reward worker of an outside trainer imports export.rewards alone (fresh interpreter)."""
    code = ("import sys, mcts_engine.export.rewards; "
            "print(sorted(m for m in ('PIL', 'datasets', 'pyarrow', 'torch') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env, check=True)
    assert out.stdout.strip() == "[]"


def test_easyr1_columns(exports: dict[str, Path]) -> None:
    ds = load_dataset("parquet", data_files=str(exports["easyr1"] / "grpo_train.parquet"), split="train")
    for row in ds:
        prompt: str = row["prompt"]
        content = []
        for i, piece in enumerate(prompt.split("<image>")):  # EasyR1 RLHFDataset
            if i != 0:
                content.append({"type": "image"})
            if piece:
                content.append({"type": "text", "text": piece})
        assert sum(1 for c in content if c["type"] == "image") == len(row["images"])
        gt = row["answer"]
        good = "<think>\nThe cup (10, 10).\n</think>\n<answer> left </answer>"
        assert easyr1_compute_score({"response": good, "ground_truth": gt})["overall"] == 1.0
        assert easyr1_compute_score([{"response": "<answer> right </answer>", "ground_truth": gt}])[0]["overall"] == 0.0


def test_llamafactory_sharegpt(exports: dict[str, Path]) -> None:
    out = exports["llamafactory"]
    info = json.loads((out / "dataset_info.json").read_text())
    sft = info["mcts_sft_train"]
    assert sft["formatting"] == "sharegpt" and sft["columns"] == {"messages": "messages", "images": "images"}
    assert sft["tags"] == {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                           "assistant_tag": "assistant", "system_tag": "system"}
    for name, entry in info.items():
        assert (out / entry["file_name"]).exists(), name
    for row in pq.read_table(out / sft["file_name"]).to_pylist():
        msgs = row["messages"]
        assert msgs[0]["role"] == "system"
        turns = msgs[1:]
        assert [m["role"] for m in turns] == ["user", "assistant"]  # alternate, user first, assistant last
        assert sum(m["content"].count("<image>") for m in msgs) == len(row["images"])
    dpo = info["mcts_dpo_train"]
    assert dpo["ranking"] is True and dpo["columns"]["chosen"] == "chosen"
    rows = pq.read_table(out / dpo["file_name"]).to_pylist()
    assert rows
    for row in rows:
        assert [m["role"] for m in row["messages"]] == ["system", "user"]  # ends with the user turn
        assert row["chosen"]["role"] == row["rejected"]["role"] == "assistant"
        assert row["chosen"]["content"] != row["rejected"]["content"]


def test_trl_reward_function_reads_the_grpo_columns(exports: dict[str, Path]) -> None:
    from mcts_engine.export.rewards import trl_accuracy_reward

    rows = pq.read_table(exports["trl"] / "grpo_train.parquet").to_pylist()
    good = [{"role": "assistant", "content": "<think>\nThe cup (10, 10).\n</think>\n<answer> left </answer>"}]
    bad = [{"role": "assistant", "content": "<think>\nThe cup (10, 10).\n</think>\n<answer> right </answer>"}]
    kwargs = {k: [r[k] for r in rows[:1]] * 2 for k in rows[0] if k != "prompt"}  # what TRL passes
    assert trl_accuracy_reward([good, bad], **kwargs) == [1.0, 0.0]
