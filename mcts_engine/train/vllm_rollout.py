"""GRPO rollouts on an in-process vLLM engine colocated with the policy (``train.grpo.backend: vllm``).

An OPTIONAL extra, like the generation side's in-process teacher (``teachers/vllm_local.py``, whose import guard
this module reuses): vLLM pins its own torch/transformers, so the trainer runs with this backend only in an
environment built for vLLM (``pip install 'mcts-engine[vllm]'``). Without vllm, ``train.grpo.backend=vllm`` is a
one-line error before anything loads.

How it works (TRL's "colocate" mode, single process):
- Engine: ``vllm.LLM(model=<HF dir>, gpu_memory_utilization=…, max_model_len=…, limit_mm_per_prompt={"image": K},
  enable_prefix_caching=True, mm_processor_kwargs={min_pixels, max_pixels}, seed=…)`` on the policy's GPU. The
  directory is where the policy started: the resumed checkpoint, else ``--model`` when it is a local directory,
  else (a hub id) the initial policy saved to a temporary HF directory. ``K`` = the most images one episode holds
  (prompt images + one crop per zoom turn). The pixel bounds are the trainer's (fitted to the data's frames and
  crops), so vLLM's processor cuts the same image tokens as the trainer's. The engine runs in this process
  (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, set unless the user set it), which is what makes the weight sync a plain
  in-memory copy.
- Generation: each context is sent as ``{"prompt_token_ids": ids, "multi_modal_data": {"image": [PIL, …]}}`` with
  every run of image placeholder tokens collapsed to ONE ``<|image_pad|>`` (the chat template's form; vLLM expands
  it with its own processor), all images so far in placeholder order (multi-turn: the frame, then each crop).
  ``SamplingParams(n, temperature, top_p, top_k (-1 = off), max_tokens, stop, stop_token_ids = the end tokens,
  include_stop_str_in_output=True, skip_special_tokens=False, logit_bias = -100 on vision placeholder tokens)``.
  The returned token ids are cut by ``rollout.cut_turn`` exactly like the transformers backend's. π_old is the
  trainer's own policy; vLLM's log-prob of each sampled token (``logprobs=0``, engine ``logprobs_mode:
  processed_logprobs``) weights each token's loss by the truncated importance ratio min(π_old/π_vllm, C)
  (``train.grpo.vllm_importance_sampling_cap``, ``advantages.truncated_importance_weights``).
- Weight sync (``sync``), after every GRPO step's optimizer updates: every policy weight (unwrapped; LoRA merged)
  under the name the saved checkpoint uses (``model.checkpoint_tensors``: the renaming ``save_pretrained``
  applies), one ``load_weights([(name, tensor)])`` call per tensor on the engine's model object, then
  ``reset_prefix_cache()`` (cached KV blocks were computed with the old weights; with a trainable vision tower
  the multi-modal cache is reset too, when the vLLM version has ``reset_mm_cache``).
- One process only: under ``torchrun`` (several ranks) the backend refuses to start (each rank would need its own
  engine inside vLLM's own process groups — vLLM's ``external_launcher`` mode — which is not wired or tested here).

Nothing in this module was run against a real vLLM here (no GPU, vLLM cannot be installed next to this package's
pins); the tests drive it with a fake ``vllm`` module that records every call.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from .data import SpecialIds
from .model import TrainSetupError, checkpoint_tensors, image_pixel_bounds, save_pretrained
from .rollout import Completion, Context, RolloutBackend, Sampling

log = logging.getLogger("mcts_engine.train")

TRAIN_HINT = (
    "train.grpo.backend=vllm needs the 'vllm' package, which is not installed: install it in a separate environment "
    "with pip install 'mcts-engine[vllm]' (vLLM pins its own torch and transformers) and run the trainer there, "
    "or use train.grpo.backend=transformers"
)

# Where the in-process engine keeps the model object (vLLM V1 with the engine core in this process; verl and TRL
# use the same path). ``driver_worker`` is a wrapper that forwards to ``.worker`` in the versions seen so far.
ENGINE_MODEL_PATHS = (
    "llm_engine.model_executor.driver_worker.worker.model_runner.model",
    "llm_engine.model_executor.driver_worker.model_runner.model",
)
VISION_BIAS = -100.0  # logit bias on vision placeholder tokens (never sampled; same rule as the transformers path)


def require_vllm() -> Any:
    """``import vllm`` through the generation side's guard, with the trainer's one-line hint."""
    from ..teachers.base import TeacherUnavailable
    from ..teachers.vllm_local import INSTALL_HINT, import_vllm

    try:
        return import_vllm()
    except TeacherUnavailable as exc:
        raise TrainSetupError(str(exc).replace(INSTALL_HINT, TRAIN_HINT)) from None


def engine_model(llm: Any) -> Any:
    """The engine's ``nn.Module`` (the object whose ``load_weights`` takes ``(name, tensor)`` pairs)."""
    for path in ENGINE_MODEL_PATHS:
        cur: Any = llm
        for part in path.split("."):
            cur = getattr(cur, part, None)
            if cur is None:
                break
        if cur is not None and callable(getattr(cur, "load_weights", None)):
            return cur
    import sys

    version = getattr(sys.modules.get("vllm"), "__version__", "?")
    raise TrainSetupError(
        f"vLLM {version}: cannot reach the engine's model object for the weight sync (tried llm."
        f"{' and llm.'.join(ENGINE_MODEL_PATHS)}); the engine must run in this process "
        "(VLLM_ENABLE_V1_MULTIPROCESSING=0) and this vLLM version may have moved it: use a vLLM version "
        "docs/training-recipes.md names, or train.grpo.backend=transformers"
    )


def collapse_image_tokens(ids: list[int], image: int) -> list[int]:
    """Every run of ``image`` placeholder tokens → one token (the chat template's form; vLLM expands each)."""
    out: list[int] = []
    for t in ids:
        if t == image and out and out[-1] == image:
            continue
        out.append(t)
    return out


def engine_dir(model_arg: str, resume_from: Path | None) -> str | None:
    """The HF directory the engine starts from (where the policy started), or None when the policy came from the
    hub and must be saved first."""
    if resume_from is not None:
        return str(resume_from)
    if Path(model_arg).is_dir():
        return str(model_arg)
    return None


def sampled_logprobs(output: Any) -> list[float] | None:
    """vLLM's log-prob of each sampled token of one ``CompletionOutput`` (``logprobs`` = one {token: Logprob}
    per position), or None when it did not report them."""
    per_position = getattr(output, "logprobs", None)
    if not per_position:
        return None
    out = []
    for token, entry in zip(output.token_ids, per_position):
        lp = entry.get(token) if isinstance(entry, dict) else None
        if lp is None:
            return None
        out.append(float(getattr(lp, "logprob", lp)))
    return out


class VLLMBackend(RolloutBackend):
    """Generation on a colocated ``vllm.LLM``; ``sync`` copies the policy's weights into it."""

    name = "vllm"

    def __init__(self, vllm: Any, llm: Any, ids: SpecialIds, engine_args: dict[str, Any],
                 vision_trainable: bool = False, tmpdir: str | None = None, logprobs: bool = False) -> None:
        self.vllm, self.llm, self.ids = vllm, llm, ids
        self.logprobs = logprobs  # ask for each sampled token's log-prob (truncated importance sampling)
        self.engine_args = engine_args
        self.vision_trainable = vision_trainable
        self._tmpdir = tmpdir
        self.model = engine_model(llm)  # fail at start, not after the first step
        self.syncs = 0
        self.sync_s = 0.0  # seconds spent in the last sync

    @classmethod
    def start(
        cls,
        model: torch.nn.Module,
        processor: Any,
        ids: SpecialIds,
        *,
        model_arg: str,
        resume_from: Path | None,
        gpu_memory_utilization: float,
        max_model_len: int,
        max_images: int,
        seed: int,
        engine_args: dict[str, Any] | None = None,
        vision_trainable: bool = False,
        logprobs: bool = False,
    ) -> VLLMBackend:
        """Build the engine from the directory the policy started from (see the module docstring)."""
        vllm = require_vllm()
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine core in this process
        tmpdir = None
        path = engine_dir(model_arg, resume_from)
        if path is None:
            tmpdir = tempfile.mkdtemp(prefix="mcts-engine-vllm-")
            save_pretrained(model, processor, tmpdir)
            path = tmpdir
        lo, hi = image_pixel_bounds(processor.image_processor)
        kwargs: dict[str, Any] = {
            "model": path,
            "gpu_memory_utilization": gpu_memory_utilization,
            "max_model_len": max_model_len,
            "limit_mm_per_prompt": {"image": max(1, max_images), "video": 0},
            "mm_processor_kwargs": {"min_pixels": lo, "max_pixels": hi},
            "enable_prefix_caching": True,
            "seed": seed,
        }
        if logprobs:  # the log-probs of the distribution actually sampled (after temperature), as TRL asks for
            kwargs["logprobs_mode"] = "processed_logprobs"
        kwargs.update(engine_args or {})
        try:
            llm = vllm.LLM(**kwargs)
        except Exception as exc:  # noqa: BLE001 - vLLM raises many kinds (OOM, bad config, CUDA)
            if tmpdir:
                shutil.rmtree(tmpdir, ignore_errors=True)
            msg = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise TrainSetupError(f"vLLM cannot load {path} for GRPO rollouts: {msg}") from None
        try:
            return cls(vllm, llm, ids, kwargs, vision_trainable, tmpdir, logprobs)
        except TrainSetupError:
            if tmpdir:
                shutil.rmtree(tmpdir, ignore_errors=True)
            raise

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "vllm": getattr(self.vllm, "__version__", "?"),
                "engine_args": {k: v for k, v in self.engine_args.items()}}

    # --- generation ----------------------------------------------------------------------------
    def sampling_params(self, n: int, sampling: Sampling, stops: tuple[str, ...]) -> Any:
        kwargs: dict[str, Any] = dict(
            n=n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k if sampling.top_k > 0 else -1,
            max_tokens=sampling.max_new_tokens,
            stop=list(stops),
            stop_token_ids=list(self.ids.eos),
            include_stop_str_in_output=True,
            skip_special_tokens=False,
            repetition_penalty=1.0,  # every field explicit: nothing from the checkpoint's generation_config
            presence_penalty=0.0,
            frequency_penalty=0.0,
            min_p=sampling.min_p,
        )
        if self.logprobs:
            kwargs["logprobs"] = 0  # the sampled token's own log-prob
        if self.ids.vision:
            kwargs["logit_bias"] = {int(t): VISION_BIAS for t in self.ids.vision}
        return self.vllm.SamplingParams(**kwargs)

    def request(self, context: Context) -> dict[str, Any]:
        """A token prompt: the context's ids with image runs collapsed, and its PIL images."""
        ids = collapse_image_tokens(context.row["input_ids"].tolist(), self.ids.image)
        placeholders = sum(1 for t in ids if t == self.ids.image)
        if placeholders != len(context.images):
            raise RuntimeError(f"vLLM backend: the context holds {placeholders} image placeholders but "
                               f"{len(context.images)} images")
        prompt: dict[str, Any] = {"prompt_token_ids": ids}
        if context.images:
            prompt["multi_modal_data"] = {"image": list(context.images)}
        return prompt

    def generate(self, contexts: list[Context], n: int, sampling: Sampling, stops: tuple[str, ...]) -> list[list[Completion]]:
        prompts = [self.request(c) for c in contexts]
        outs = self.llm.generate(prompts, sampling_params=self.sampling_params(n, sampling, stops), use_tqdm=False)
        if len(outs) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(outs)} outputs for {len(prompts)} prompts")
        result = []
        for out in outs:
            choices = sorted(out.outputs, key=lambda o: getattr(o, "index", 0))
            result.append([Completion(list(o.token_ids), str(o.text or ""), str(o.finish_reason or ""),
                                      sampled_logprobs(o) if self.logprobs else None) for o in choices])
        return result

    # --- weights -------------------------------------------------------------------------------
    @torch.no_grad()
    def sync(self, model: torch.nn.Module) -> None:
        """Copy every policy weight into the engine under its checkpoint name, then drop cached KV blocks."""
        t0 = time.perf_counter()
        for name, tensor in checkpoint_tensors(model).items():
            self.model.load_weights([(name, tensor)])
        self.llm.reset_prefix_cache()
        if self.vision_trainable and callable(getattr(self.llm, "reset_mm_cache", None)):
            self.llm.reset_mm_cache()
        self.syncs += 1
        self.sync_s = time.perf_counter() - t0

    def close(self) -> None:
        self.llm = self.model = None
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None


__all__ = ["TRAIN_HINT", "VLLMBackend", "collapse_image_tokens", "engine_dir", "engine_model", "require_vllm",
           "sampled_logprobs"]
