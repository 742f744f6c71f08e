"""GRPO with the in-process vLLM rollout backend (``train.grpo.backend=vllm``). vLLM is not installable here: a FAKE
``vllm`` module in ``sys.modules`` records the engine's construction, every ``generate`` call (token prompts, PIL
images, sampling parameters) and every ``load_weights``/``reset_prefix_cache``, and answers with scripted completions
tokenized by the tiny model's own tokenizer. Real GRPO steps run on the tiny model around it."""

from __future__ import annotations

import json
import math
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from mcts_engine.testing.tiny_model import (
    chain,
    grpo_rows,
    mt_grpo_rows,
    tool_turn,
    write_mt_parquet,
    write_parquet,
)
from mcts_engine.train.config import RunArgs, train_config_from_recipe


@pytest.fixture(scope="module")
def tokenizer(tiny):
    from mcts_engine.train.model import load_processor

    return load_processor(str(tiny)).tokenizer


# --------------------------------------------------------------------------------------------
# The fake vllm
# --------------------------------------------------------------------------------------------


@dataclass
class _Out:  # vllm.CompletionOutput
    index: int
    text: str
    token_ids: list
    finish_reason: str
    stop_reason: Any
    logprobs: Any = None  # one {token_id: Logprob} per sampled token when SamplingParams asked for logprobs


@dataclass
class _ReqOut:  # vllm.RequestOutput
    prompt_token_ids: list
    outputs: list = field(default_factory=list)


class FakeVLLM:
    """``module`` is the fake ``vllm``; ``script(prompt_text, k) -> reply text`` answers sample k of a prompt (the
    prompt decoded with special tokens). A reply that ends with a stop string stops there (stop_reason = it);
    otherwise the end token <|im_end|> is appended (EOS, stop_reason None), as vLLM returns them."""

    def __init__(self, tokenizer: Any, script: Any) -> None:
        self.tok, self.script = tokenizer, script
        self.built: list[dict] = []
        self.calls: list[dict] = []
        self.events: list[tuple] = []  # ("load", name, tensor) | ("reset",) in call order
        self.built_dir_files: list[list[str]] = []
        self.logprob = -1.0  # what the fake engine reports as each sampled token's log-prob
        fake = self
        mod = types.ModuleType("vllm")
        mod.__version__ = "0.0-fake"

        class SamplingParams:
            def __init__(self, **kw):
                self.kw = kw

        class Model:
            def load_weights(self, weights):
                for name, tensor in weights:
                    fake.events.append(("load", name, tensor.detach().clone()))
                return {name for name, _ in weights}

        class LLM:
            def __init__(self, **kw):
                fake.built.append(kw)
                fake.built_dir_files.append(sorted(p.name for p in Path(kw["model"]).iterdir()))
                worker = types.SimpleNamespace(model_runner=types.SimpleNamespace(model=Model()))
                self.llm_engine = types.SimpleNamespace(
                    model_executor=types.SimpleNamespace(driver_worker=types.SimpleNamespace(worker=worker)))

            def generate(self, prompts, sampling_params=None, use_tqdm=True):
                fake.calls.append({"prompts": prompts, "params": dict(sampling_params.kw), "use_tqdm": use_tqdm})
                end = fake.tok.convert_tokens_to_ids("<|im_end|>")
                outs = []
                for p in prompts:
                    text = fake.tok.decode(p["prompt_token_ids"], skip_special_tokens=False)
                    choices = []
                    for k in range(sampling_params.kw["n"]):
                        reply = fake.script(text, k)
                        ids = fake.tok.encode(reply, add_special_tokens=False)
                        stop = next((s for s in sampling_params.kw["stop"] if reply.endswith(s)), None)
                        if stop is None:
                            ids = ids + [end]
                        lps = None
                        if sampling_params.kw.get("logprobs") is not None:
                            lps = [{t: types.SimpleNamespace(logprob=fake.logprob, rank=1)} for t in ids]
                        choices.append(_Out(k, reply, ids, "stop", stop, lps))
                    outs.append(_ReqOut(list(p["prompt_token_ids"]), choices))
                return outs

            def reset_prefix_cache(self):
                fake.events.append(("reset",))
                return True

        mod.LLM, mod.SamplingParams = LLM, SamplingParams
        self.module = mod

    @property
    def loads(self) -> list[tuple[str, torch.Tensor]]:
        return [(e[1], e[2]) for e in self.events if e[0] == "load"]


def saved_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def run(cfg_train: dict, tiny: Path, data: Path, out: Path):
    from mcts_engine.train.grpo import run_grpo

    cfg = train_config_from_recipe({"train": cfg_train})
    summary = run_grpo(RunArgs("grpo", str(tiny), str(data), str(out)), cfg)
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return summary, recs


# --------------------------------------------------------------------------------------------
# A single-turn GRPO step on the fake engine
# --------------------------------------------------------------------------------------------

G = 4
REPLIES = [chain("left", [(10, 20)]), chain("left", [(30, 40), (12, 8)]), chain("right", [(10, 20)]),
           chain("right", [(5, 50)])]  # correct, correct, wrong, wrong (all well formed and grounded)


def test_grpo_step_generates_on_vllm_and_syncs_updated_weights(tiny, tokenizer, tmp_path, monkeypatch):
    import mcts_engine.train.grpo as grpo_mod
    from mcts_engine.train.data import GRPO_REQUIRED, RowSource, SpecialIds, decode_images
    from mcts_engine.train.grpo import PromptSet
    from mcts_engine.train.model import fit_processor_to_frames, load_processor
    from mcts_engine.train.vllm_rollout import collapse_image_tokens

    fake = FakeVLLM(tokenizer, lambda prompt, k: REPLIES[k])
    monkeypatch.setitem(sys.modules, "vllm", fake.module)
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    losses: list[dict] = []
    batches: list[dict] = []
    real_loss, real_collate = grpo_mod.grpo_loss, grpo_mod.collate

    def spy_loss(logp, old, adv, weights, *a, **kw):
        losses.append({"adv": adv.detach().clone(), "n": int(logp.numel()), "old": old.detach().clone(),
                       "is": a[-1].clone() if a and a[-1] is not None else None})
        return real_loss(logp, old, adv, weights, *a, **kw)

    def spy_collate(rows, pad, left=False):
        batch = real_collate(rows, pad, left)
        batches.append(batch)
        return batch

    monkeypatch.setattr(grpo_mod, "grpo_loss", spy_loss)
    monkeypatch.setattr(grpo_mod, "collate", spy_collate)

    data = write_parquet(grpo_rows(2), tmp_path / "grpo.parquet")
    out = tmp_path / "out"
    summary, recs = run({
        "lr": 1e-2, "max_steps": 1, "batch_size": 8, "num_workers": 0, "warmup_ratio": 0.0, "max_length": 1024,
        "shuffle": False,
        "grpo": {"group_size": G, "prompts_per_step": 2, "max_new_tokens": 48, "top_k": 0, "temperature": 0.9,
                 "backend": "vllm", "vllm_gpu_memory_utilization": 0.25,
                 "vllm_engine_args": {"enforce_eager": True}}}, tiny, data, out)

    # the engine: built once, from the --model directory, with the knobs; the engine core in this process
    processor = load_processor(str(tiny))
    src = RowSource(data, GRPO_REQUIRED, "GRPO")
    lo, hi = fit_processor_to_frames(processor, [(56, 56)])
    assert fake.built == [{
        "model": str(tiny), "gpu_memory_utilization": 0.25, "max_model_len": 1024,
        "limit_mm_per_prompt": {"image": 1, "video": 0}, "mm_processor_kwargs": {"min_pixels": lo, "max_pixels": hi},
        "enable_prefix_caching": True, "seed": 0, "logprobs_mode": "processed_logprobs", "enforce_eager": True,
    }]
    import os

    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"

    # one generate call: both prompts, n = G, the sampling knobs, the sampled tokens' log-probs asked for (TIS)
    ids = SpecialIds.from_processor(processor)
    assert len(fake.calls) == 1
    call = fake.calls[0]
    p = call["params"]
    assert p["n"] == G and p["max_tokens"] == 48 and p["temperature"] == 0.9 and p["top_k"] == -1 and p["top_p"] == 1.0
    assert p["stop"] == ["</answer>"] and p["include_stop_str_in_output"] is True and p["skip_special_tokens"] is False
    assert p["repetition_penalty"] == 1.0 and p["min_p"] == 0.0
    # the model's EOS list (<|im_end|>, <|endoftext|>) ∪ <|im_end|>
    assert p["stop_token_ids"] == [ids.end, tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    assert set(p["logit_bias"]) == set(ids.vision)
    assert p["logprobs"] == 0 and call["use_tqdm"] is False
    # prompts: the trainer's token ids (image run collapsed to one placeholder) + the row's PIL image
    prompts = PromptSet(src, [0, 1], processor)
    assert len(call["prompts"]) == 2
    for i, sent in enumerate(call["prompts"]):
        enc, meta = prompts.get(i)
        full = enc["input_ids"].tolist()
        assert full.count(ids.image) == 4  # 56x56 frame → 4 image tokens in the trainer's encoding
        assert sent["prompt_token_ids"] == collapse_image_tokens(full, ids.image)
        assert sent["prompt_token_ids"].count(ids.image) == 1
        (image,) = sent["multi_modal_data"]["image"]
        want = decode_images(src.row(i)["images"], "x")[0]
        assert image.size == (56, 56) and image.tobytes() == want.tobytes()

    # the loss trained on the returned completions, with their advantages
    step = next(r for r in recs if "reward" in r and "event" not in r)
    assert step["accuracy"] == pytest.approx(0.5) and step["format_rate"] == 1.0
    assert step["reward"] == pytest.approx((2.0 + 2.0 + 1.0 + 1.0) / 4)
    lengths = [len(tokenizer.encode(r, add_special_tokens=False)) for r in REPLIES]  # each stops at </answer>
    assert step["completion_len"] == pytest.approx(sum(lengths) / G)
    assert "sync_s" in step
    (train_batch,) = batches  # iterations 1, beta 0: one collate, the training micro-batch
    texts = [tokenizer.decode(row[mask].tolist(), skip_special_tokens=False)
             for row, mask in zip(train_batch["input_ids"], train_batch["target_mask"])]
    assert texts == list(REPLIES) * 2
    (loss,) = losses
    a = 0.5 / math.sqrt(1 / 3)  # rewards 2, 2, 1, 1: (r - 1.5) / sample std
    per_token = torch.cat([torch.full((n,), s) for _ in range(2) for n, s in zip(lengths, (a, a, -a, -a))])
    assert loss["n"] == sum(lengths) * 2
    assert torch.allclose(loss["adv"], per_token, atol=1e-3)
    # truncated importance sampling (issue 13 item 5): each token weighted by min(π_old / π_vllm, 2)
    ratio = torch.exp(loss["old"] + 1.0)
    assert loss["is"] is not None and torch.allclose(loss["is"], ratio.clamp(max=2.0), atol=1e-5)
    assert step["is_ratio_mean"] == pytest.approx(float(ratio.mean()), rel=1e-4)
    assert step["is_ratio_max"] == pytest.approx(float(ratio.max()), rel=1e-4)
    assert step["is_ratio_min"] == pytest.approx(float(ratio.min()), rel=1e-4)
    assert step["is_truncated_frac"] == pytest.approx(float((ratio > 2.0).float().mean()))

    # after the optimizer step: every weight, under the checkpoint's names, with the updated values; then a reset
    final, initial = saved_tensors(Path(summary["final"])), saved_tensors(tiny)
    loads = fake.loads
    assert sorted(n for n, _ in loads) == sorted(final) == sorted(initial)  # each name exactly once, checkpoint names
    assert fake.events[-1] == ("reset",) and sum(e[0] == "reset" for e in fake.events) == 1
    changed = set()
    for name, tensor in loads:
        assert torch.equal(tensor, final[name]), name
        if not torch.equal(tensor, initial[name]):
            changed.add(name)
    assert not any(n.startswith("visual.") for n in changed)  # the vision tower is frozen (sent, unchanged)
    trained = [n for n in final if n.startswith("model.") and any(k in n for k in ("mlp.", "o_proj", "q_proj.weight"))]
    assert trained and set(trained) <= changed and "model.embed_tokens.weight" in changed


# --------------------------------------------------------------------------------------------
# Multi-turn: every turn through the engine, with the growing context and all images so far
# --------------------------------------------------------------------------------------------


def test_multiturn_turns_go_through_the_engine_with_all_images(tiny, tokenizer, tmp_path, monkeypatch):
    from mcts_engine.config import MultiTurnConfig
    from mcts_engine.train.data import GRPO_REQUIRED, RowSource, SpecialIds, decode_images
    from mcts_engine.zoom.environment import MULTITURN_STOPS, zoom

    def script(prompt: str, k: int) -> str:
        return "<answer> left </answer>" if "Zoomed view around" in prompt else tool_turn((20 + 40 * k, 30))

    fake = FakeVLLM(tokenizer, script)
    monkeypatch.setitem(sys.modules, "vllm", fake.module)
    data = write_mt_parquet(mt_grpo_rows(1, frame=(112, 84)), tmp_path / "mt.parquet")
    out = tmp_path / "out"
    _, recs = run({"lr": 1e-3, "max_steps": 1, "batch_size": 4, "num_workers": 0, "max_length": 2048,
                   "grpo": {"group_size": 2, "prompts_per_step": 1, "max_new_tokens": 64, "backend": "vllm"}},
                  tiny, data, out)
    assert fake.built[0]["limit_mm_per_prompt"] == {"image": 4, "video": 0}  # frame + 3 crops (max_turns 4)
    assert fake.built[0]["max_model_len"] == 2048 and fake.built[0]["gpu_memory_utilization"] == 0.3
    first, second = fake.calls
    ids = SpecialIds.from_processor(types.SimpleNamespace(tokenizer=tokenizer, image_token_id=None))
    # turn 1: one prompt, the whole group (n = 2), the multi-turn stop strings
    assert first["params"]["n"] == 2 and first["params"]["stop"] == list(MULTITURN_STOPS)
    (p0,) = first["prompts"]
    assert len(p0["multi_modal_data"]["image"]) == 1
    # turn 2: one request per episode (n = 1): the previous context + the sampled turn + the observation, and both
    # images (the frame, then the crop the environment cut at that episode's point)
    assert second["params"]["n"] == 1 and len(second["prompts"]) == 2
    frame = decode_images(RowSource(data, GRPO_REQUIRED, "GRPO").row(0)["images"], "x")[0]
    env = MultiTurnConfig(enabled=True, crop_offset=28, crop_size=56, draw_dot=False, dot_radius=6)
    for k, p in enumerate(second["prompts"]):
        turn = tokenizer.encode(tool_turn((20 + 40 * k, 30)), add_special_tokens=False)
        assert p["prompt_token_ids"][: len(p0["prompt_token_ids"]) + len(turn)] == p0["prompt_token_ids"] + turn
        assert p["prompt_token_ids"].count(ids.image) == 2
        images = p["multi_modal_data"]["image"]
        assert len(images) == 2 and images[0].tobytes() == frame.tobytes()
        crop, _ = zoom(frame, (20 + 40 * k, 30), env)
        assert images[1].size == crop.size and images[1].tobytes() == crop.tobytes()
        tail = tokenizer.decode(p["prompt_token_ids"][len(p0["prompt_token_ids"]) + len(turn):])
        assert f"Zoomed view around ({20 + 40 * k}, 30)" in tail and tail.endswith("<|im_start|>assistant\n")
    step = next(r for r in recs if "reward" in r and "event" not in r)
    assert step["accuracy"] == 1.0 and step["zooms"] == 1.0 and step["turns"] == 2.0
    assert [e[0] for e in fake.events][-1] == "reset" and len(fake.loads) == len(saved_tensors(tiny))


# --------------------------------------------------------------------------------------------
# Guards and edges
# --------------------------------------------------------------------------------------------


def test_without_vllm_the_cli_prints_the_install_hint_and_exits_2(tiny, tmp_path, monkeypatch):
    from mcts_engine.cli import app

    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    data = write_parquet(grpo_rows(2), tmp_path / "grpo.parquet")
    res = CliRunner().invoke(app, ["train", "--method", "grpo", "--model", str(tiny), "--data", str(data),
                                   "--out", str(tmp_path / "out"), "--set", "train.grpo.backend=vllm"])
    assert res.exit_code == 2, res.output
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in res.output
    assert "train.grpo.backend=vllm needs the 'vllm' package" in lines[0]
    assert "pip install 'mcts-engine[vllm]'" in lines[0] and "train.grpo.backend=transformers" in lines[0]
    assert not (tmp_path / "out" / "final").exists()


def test_vllm_backend_is_refused_under_torchrun(monkeypatch):
    from mcts_engine.train.grpo import _check
    from mcts_engine.train.model import TrainSetupError
    from mcts_engine.train.runtime import Runtime

    cfg = train_config_from_recipe({"train": {"grpo": {"backend": "vllm"}}})
    rt = Runtime(rank=0, world=2, local_rank=0, device=torch.device("cpu"), param_dtype=torch.float32,
                 autocast_dtype=None, distributed=True)
    with pytest.raises(TrainSetupError, match="under torchrun"):
        _check(cfg, rt)


def test_config_knobs_are_validated():
    from mcts_engine.config import ConfigError

    cfg = train_config_from_recipe({"train": {"grpo": {"backend": "vllm"}}})
    assert (cfg.grpo.vllm_gpu_memory_utilization, cfg.grpo.vllm_max_model_len, cfg.grpo.vllm_engine_args) == (0.3, 0, {})
    with pytest.raises(ConfigError, match="vllm_gpu_memory_utilization"):
        train_config_from_recipe({"train": {"grpo": {"vllm_gpu_memory_utilization": 1.5}}})
    with pytest.raises(ConfigError, match="vllm_engine_args"):
        train_config_from_recipe({"train": {"grpo": {"vllm_engine_args": "not a mapping"}}})


def test_hub_models_start_from_a_saved_copy_and_engine_failures_are_one_line(tiny, tokenizer, monkeypatch):
    from mcts_engine.train.data import SpecialIds
    from mcts_engine.train.model import TrainSetupError, load_model, load_processor
    from mcts_engine.train.vllm_rollout import VLLMBackend, engine_dir

    assert engine_dir("Qwen/Qwen2.5-VL-3B-Instruct", None) is None
    assert engine_dir(str(tiny), None) == str(tiny) and engine_dir(str(tiny), Path("/ck/x")) == "/ck/x"
    fake = FakeVLLM(tokenizer, lambda prompt, k: "")
    monkeypatch.setitem(sys.modules, "vllm", fake.module)
    processor = load_processor(str(tiny))
    model = load_model(str(tiny), torch.float32)
    ids = SpecialIds.from_processor(processor)
    kw = dict(model_arg="Qwen/Qwen2.5-VL-3B-Instruct", resume_from=None, gpu_memory_utilization=0.3,
              max_model_len=512, max_images=1, seed=0)
    backend = VLLMBackend.start(model, processor, ids, **kw)
    built = Path(fake.built[0]["model"])
    assert built != tiny and {"config.json", "model.safetensors", "preprocessor_config.json"} <= set(fake.built_dir_files[0])
    backend.close()
    assert not built.exists()  # the temporary copy is removed

    class Broken:
        def __init__(self, **kw):
            raise RuntimeError("CUDA out of memory\nwhile profiling")

    monkeypatch.setattr(fake.module, "LLM", Broken)
    with pytest.raises(TrainSetupError, match="vLLM cannot load") as ei:
        VLLMBackend.start(model, processor, ids, **{**kw, "model_arg": str(tiny)})
    assert "\n" not in str(ei.value)

    class Moved:  # a vLLM whose engine keeps the model elsewhere
        def __init__(self, **kw):
            self.llm_engine = types.SimpleNamespace()

    monkeypatch.setattr(fake.module, "LLM", Moved)
    with pytest.raises(TrainSetupError, match="VLLM_ENABLE_V1_MULTIPROCESSING=0") as ei:
        VLLMBackend.start(model, processor, ids, **{**kw, "model_arg": str(tiny)})
    assert "\n" not in str(ei.value) and "0.0-fake" in str(ei.value)


def test_collapse_image_tokens():
    from mcts_engine.train.vllm_rollout import collapse_image_tokens

    assert collapse_image_tokens([1, 9, 9, 9, 2, 5, 1, 9, 9, 2, 9], 9) == [1, 9, 2, 5, 1, 9, 2, 9]
    assert collapse_image_tokens([], 9) == []
