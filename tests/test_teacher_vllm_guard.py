"""The in-process vLLM teacher: the guarded import (vllm is not installed here) and, with a fake
``vllm`` module standing in for the real one, the batching and reply assembly."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import types
from dataclasses import dataclass, field

import pytest
from PIL import Image

from mcts_engine.config import TeacherConfig
from mcts_engine.grounding import parse_step
from mcts_engine.samples import Sample, encode_image
from mcts_engine.teachers import make_teacher
from mcts_engine.teachers.base import PromptContext, PromptState, TeacherUnavailable, Turn
from mcts_engine.teachers.vllm_local import INSTALL_HINT


def _cfg(**kw) -> TeacherConfig:
    return TeacherConfig(kind="vllm", model="Qwen/Qwen2.5-VL-7B-Instruct", **kw)


def test_missing_vllm_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(TeacherUnavailable) as ei:
        make_teacher(_cfg())
    msg = str(ei.value)
    assert "\n" not in msg
    assert "pip install 'mcts-engine[vllm]'" in msg and "separate environment" in msg
    assert "vllm serve" in msg and "--teacher openai" in msg


def test_the_real_import_is_guarded_where_vllm_is_absent():
    # Nothing patched: the teacher's own `import vllm` fails here and must come back as the one-line hint.
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed in this environment: the unpatched guard cannot be exercised")
    assert "vllm" not in sys.modules
    with pytest.raises(TeacherUnavailable) as ei:
        make_teacher(_cfg())
    assert str(ei.value) == INSTALL_HINT


def test_installed_vllm_missing_a_dependency_names_the_dependency(monkeypatch, tmp_path):
    # A `vllm` package that imports but lacks one of its own dependencies (a half-broken install).
    (tmp_path / "vllm").mkdir()
    (tmp_path / "vllm" / "__init__.py").write_text("import mcts_engine_absent_dependency_for_test\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    with pytest.raises(TeacherUnavailable) as ei:
        make_teacher(_cfg())
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg == f"vllm is installed but cannot be imported (missing 'mcts_engine_absent_dependency_for_test'); {INSTALL_HINT}"
    assert "vllm" not in sys.modules  # a failed import leaves nothing half-initialised behind


# --------------------------------------------------------------------------------------------
# A fake vllm: records LLM kwargs and chat calls, answers like vLLM (stop string cut, stop_reason set)
# --------------------------------------------------------------------------------------------


@dataclass
class _Out:
    index: int
    text: str
    token_ids: list
    finish_reason: str
    stop_reason: object


@dataclass
class _ReqOut:
    prompt_token_ids: list
    outputs: list = field(default_factory=list)


def _fake_vllm(calls: list, built: list):
    mod = types.ModuleType("vllm")
    mod.__version__ = "0.0-fake"

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class LLM:
        def __init__(self, **kw):
            built.append(kw)

        def chat(self, messages, sampling_params, use_tqdm, add_generation_prompt, continue_final_message):
            calls.append({"n_prompts": len(messages), "cont": continue_final_message, "gen": add_generation_prompt,
                          "messages": messages, "params": [p.kw for p in sampling_params]})
            outs = []
            for msgs, p in zip(messages, sampling_params):
                forced = continue_final_message and msgs[-1]["content"].endswith("<answer>")
                full = " left </answer>" if forced else "<think> Look at (5, 6). </think>"
                cut = min(full.find(s) for s in p.kw["stop"] if s in full)
                stop = next(s for s in p.kw["stop"] if full.find(s) == cut)
                outs.append(_ReqOut([1] * 50, [_Out(i, full[:cut], [7] * (3 + i), "stop", stop) for i in range(p.kw["n"])]))
            return outs

    mod.LLM, mod.SamplingParams = LLM, SamplingParams
    return mod


def _ctx() -> PromptContext:
    enc, _ = encode_image(Image.new("RGB", (64, 48), (9, 9, 9)), max_pixels=1280 * 28 * 28)
    s = Sample(id="v", images=[], question="q", answer="left", choices=["left", "right"])
    return PromptContext(sample=s, system="sys", user_text="q\nOptions:\n(A) left\n(B) right", images=(enc,), truth={})


def test_fake_engine_batches_concurrent_requests_and_assembles_replies(monkeypatch):
    calls: list = []
    built: list = []
    monkeypatch.setitem(sys.modules, "vllm", _fake_vllm(calls, built))
    t = make_teacher(_cfg(extra_body={"engine_args": {"tensor_parallel_size": 2}, "repetition_penalty": 1.05}))
    root = PromptState(_ctx())
    deep = root.child(Turn("<think> First (1, 2). </think>"))

    async def go():
        await t.check()
        replies = await asyncio.gather(
            t.complete(root, 3), t.complete(deep, 2), t.complete(deep.forced(), 2), t.complete(root, 1)
        )
        await t.aclose()
        return replies

    r_root, r_deep, r_forced, r_one = asyncio.run(go())
    assert built == [{
        "model": "Qwen/Qwen2.5-VL-7B-Instruct",
        "enable_prefix_caching": True,
        "mm_processor_kwargs": {"max_pixels": 1280 * 28 * 28, "min_pixels": 56 * 56},
        "limit_mm_per_prompt": {"image": 1},
        "tensor_parallel_size": 2,
    }]
    # all four requests went in one batch: one chat call per prompt style
    assert sorted((c["cont"], c["n_prompts"]) for c in calls) == [(False, 2), (True, 2)]
    plain_call = next(c for c in calls if not c["cont"])
    assert plain_call["gen"] is True
    assert all(p["stop"] == ["</think>", "</answer>"] and p["repetition_penalty"] == 1.05 for c in calls for p in c["params"])
    assert [c.text for c in r_root.choices] == ["<think> Look at (5, 6). </think>"] * 3
    assert [c.completion_tokens for c in r_root.choices] == [3, 4, 5] and r_root.prompt_tokens == 50
    assert len(r_deep.choices) == 2 and len(r_one.choices) == 1
    for c in r_forced.choices:
        assert c.text == "<answer> left </answer>" and parse_step(c.text).answer == "left"
    assert t.describe()["kind"] == "vllm"


def test_fake_engine_load_failure_is_teacher_unavailable(monkeypatch):
    mod = _fake_vllm([], [])

    class Broken:
        def __init__(self, **kw):
            raise RuntimeError("CUDA out of memory\nwhile profiling")

    mod.LLM = Broken
    monkeypatch.setitem(sys.modules, "vllm", mod)
    t = make_teacher(_cfg())
    with pytest.raises(TeacherUnavailable, match="cannot load model") as ei:
        asyncio.run(t.check())
    assert "\n" not in str(ei.value)
