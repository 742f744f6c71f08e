"""The ``vllm`` teacher: an in-process ``vllm.LLM`` on this machine's GPU(s), behind the same protocol.

An OPTIONAL extra (``pip install 'mcts-engine[vllm]'``): vLLM pins its own torch/transformers, so it
usually cannot share an environment with the rest of this package. The import is guarded: without
vllm, constructing the teacher raises :class:`TeacherUnavailable` with a one-line message that says how
to install it, or how to use ``vllm serve`` + ``--teacher openai`` instead (the recommended path:
a server batches continuously across requests and scales to several GPUs and nodes).

How it works: ``complete()`` queues its request; one batcher hands every queued request to
``LLM.chat(...)`` in a worker thread (grouped by prompt style, since ``continue_final_message`` is per
call), so concurrent trees share each GPU batch. ``LLM.chat`` is offline batching: requests that
arrive while a batch runs wait for the next one. Prompts are the same chat messages the HTTP backend
sends (``build_messages``), siblings are ``SamplingParams(n=…)``, stops are the step protocol's closing
tags, and replies are assembled exactly as the HTTP backend does (pre-fill, re-attached stop string).
Token counts are exact here (token ids per choice).

Engine arguments: ``teacher.model`` is the model path/name; ``max_pixels``/``min_pixels`` go to the
processor (``mm_processor_kwargs``); prefix caching is on. Anything else for ``vllm.LLM`` (e.g.
``tensor_parallel_size``, ``max_model_len``, ``gpu_memory_utilization``, ``limit_mm_per_prompt``) goes
in ``teacher.extra_body.engine_args``; the other ``extra_body`` keys are passed to ``SamplingParams``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..config import TeacherConfig
from ..grounding import STEP_STOPS
from .base import Continuation, PromptState, TeacherError, TeacherReply, TeacherUnavailable, build_messages, stop_sequences
from .openai_compat import assemble_text

INSTALL_HINT = (
    "the in-process vLLM teacher (--teacher vllm) needs the 'vllm' package, which is not installed: "
    "install it in a separate environment with pip install 'mcts-engine[vllm]' (vLLM pins its own torch "
    "and transformers), or run `vllm serve MODEL` there (scripts/serve_vllm.sh) and use "
    "--teacher openai --base-url http://HOST:PORT/v1"
)


def import_vllm() -> Any:
    """``import vllm`` or a one-line :class:`TeacherUnavailable` saying what to do."""
    try:
        import vllm
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        if missing not in (None, "vllm") and not str(missing).startswith("vllm"):
            raise TeacherUnavailable(f"vllm is installed but cannot be imported (missing {missing!r}); {INSTALL_HINT}") from None
        raise TeacherUnavailable(INSTALL_HINT) from None
    return vllm


class VLLMTeacher:
    name = "vllm"

    def __init__(self, cfg: TeacherConfig) -> None:
        if cfg.prompt_style not in ("continue", "plain"):
            raise ValueError(f"teacher.prompt_style {cfg.prompt_style!r}: expected continue or plain")
        self._vllm = import_vllm()
        self.cfg = cfg
        extra = dict(cfg.extra_body)
        self.engine_args: dict[str, Any] = dict(extra.pop("engine_args", None) or {})
        self.sampling_extra = extra
        self._llm: Any = None
        self._pending: list[tuple[list[dict[str, Any]], Any, bool, asyncio.Future]] = []
        self._wake: asyncio.Event | None = None
        self._batcher: asyncio.Task | None = None
        self.batches = 0

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "vllm",
            "model": self.cfg.model,
            "vllm": getattr(self._vllm, "__version__", "?"),
            "prompt_style": self.cfg.prompt_style,
            "temperature": self.cfg.temperature,
            "top_p": self.cfg.top_p,
            "max_tokens": self.cfg.max_tokens,
            "stop": "per request: the sample's step stops (" + ", ".join(STEP_STOPS) + " by default)",
            "engine_args": self.engine_args,
            "sampling_extra": self.sampling_extra,
        }

    # --- engine ------------------------------------------------------------------------------
    def _build(self) -> Any:
        kwargs: dict[str, Any] = {
            "model": self.cfg.model,
            "enable_prefix_caching": True,
            "mm_processor_kwargs": {"max_pixels": self.cfg.max_pixels, "min_pixels": self.cfg.min_pixels},
            "limit_mm_per_prompt": {"image": 1},
        }
        kwargs.update(self.engine_args)
        return self._vllm.LLM(**kwargs)

    async def check(self) -> None:
        """Load the model (minutes for a large one) so a bad name or an OOM stops the run before any work."""
        if self._llm is None:
            try:
                self._llm = await asyncio.to_thread(self._build)
            except Exception as exc:  # noqa: BLE001 - vLLM raises many kinds
                msg = " ".join(str(exc).split())[:300] or type(exc).__name__
                raise TeacherUnavailable(f"vLLM cannot load model {self.cfg.model!r}: {msg}") from None

    async def aclose(self) -> None:
        if self._batcher is not None:
            self._batcher.cancel()
            await asyncio.gather(self._batcher, return_exceptions=True)
            self._batcher = None
        for *_, fut in self._pending:
            if not fut.done():
                fut.set_exception(TeacherError("teacher closed"))
        self._pending.clear()

    # --- requests ----------------------------------------------------------------------------
    def _sampling(self, n: int, stops: tuple[str, ...], final: bool = False) -> Any:
        """``final``: the reply must be the answer (``teacher.final_temperature`` applies when set)."""
        c = self.cfg
        temperature = c.final_temperature if final and c.final_temperature is not None else c.temperature
        return self._vllm.SamplingParams(
            n=n, temperature=temperature, top_p=c.top_p, max_tokens=c.max_tokens, stop=list(stops), **self.sampling_extra
        )

    async def complete(self, state: PromptState, n: int) -> TeacherReply:
        if self._llm is None:
            await self.check()
        loop = asyncio.get_running_loop()
        if self._batcher is None or self._batcher.get_loop() is not loop or self._batcher.done():
            self._wake = asyncio.Event()
            self._batcher = loop.create_task(self._run())
        messages, cont, prefill = build_messages(state, self.cfg.prompt_style)
        fut: asyncio.Future = loop.create_future()
        self._pending.append((messages, self._sampling(n, stop_sequences(state), state.force_answer), cont, fut))
        assert self._wake is not None
        self._wake.set()
        t0 = time.perf_counter()
        out = await fut
        return self._reply(out, n, prefill, time.perf_counter() - t0)

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            for cont in (False, True):
                group = [item for item in batch if item[2] == cont]
                if not group:
                    continue
                try:
                    outs = await asyncio.to_thread(self._chat, group, cont)
                except Exception as exc:  # noqa: BLE001 - one failed batch fails its requests, not the run
                    err = TeacherError(f"vLLM generate failed: {' '.join(str(exc).split())[:300] or type(exc).__name__}")
                    for *_, fut in group:
                        if not fut.done():
                            fut.set_exception(err)
                    continue
                for (*_, fut), out in zip(group, outs):
                    if not fut.done():
                        fut.set_result(out)
            self.batches += 1

    def _chat(self, group: list, cont: bool) -> list[Any]:
        outs = self._llm.chat(
            [g[0] for g in group],
            sampling_params=[g[1] for g in group],
            use_tqdm=False,
            add_generation_prompt=not cont,
            continue_final_message=cont,
        )
        if len(outs) != len(group):
            raise RuntimeError(f"vLLM returned {len(outs)} outputs for {len(group)} prompts")
        return list(outs)

    def _reply(self, out: Any, n: int, prefill: str, latency: float) -> TeacherReply:
        choices = []
        for o in sorted(out.outputs, key=lambda o: getattr(o, "index", 0)):
            finish = str(o.finish_reason or "stop")
            text = assemble_text(o.text, prefill, finish, getattr(o, "stop_reason", None))
            choices.append(Continuation(text=text, finish_reason=finish, completion_tokens=len(o.token_ids or ())))
        if len(choices) != n:
            raise TeacherError(f"vLLM returned {len(choices)} choices for n={n}")
        return TeacherReply(choices=choices, prompt_tokens=len(out.prompt_token_ids or ()), latency_s=latency)
