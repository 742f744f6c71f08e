"""The ``openai`` teacher: any OpenAI-compatible chat-completions server (vLLM, SGLang, OpenAI).

This module knows the API: request bodies, reply parsing and the teacher itself. The HTTP transport
(one ``aiohttp`` session, timeouts, TLS, proxies) is ``http.py``; when a failed attempt is retried and
how long to wait is ``retry.py``; URLs and their credentials are ``urls.py``.

Choices made here (each one a measured or documented need):

- **Siblings in ONE request** with ``n``; ``stop`` = the closing tags that end one response
  (``PromptContext.stop``: ``STEP_STOPS``, or the multi-turn variant's; only ``</answer>`` one-shot).
- **Prompt styles** (``teacher.prompt_style``): ``continue`` sends vLLM's ``continue_final_message: true,
  add_generation_prompt: false`` whenever the path ends in an assistant message (steps so far, or the
  ``<answer>`` pre-fill of a forced answer), and the pre-fill is prepended to every returned choice;
  ``plain`` sends steps as assistant turns with a short user turn after each (any server).
- **Request bodies are spliced, not re-serialized**: the per-sample head (system + user turn with the
  base64 image) is serialized ONCE into ``PromptContext.cache`` and joined as bytes with the small tail
  (the path's steps) and the sampling parameters (cached per ``n``, prompt style and stops). No SDK
  builds the request: the ``openai`` client's request models would re-serialize the image every time
  (≈ 2.8 ms of CPU per request against ≈ 0.2 ms here; docs/benchmarks.md, "Generation benchmark").
- **Stop strings re-attached**: vLLM reports the matched stop string as ``stop_reason`` and returns the
  text right up to it, so ``text + stop_reason`` is exactly what the model wrote. Without ``stop_reason``
  (other servers, or an EOS) the closing tag is inferred from the open tags
  (``grounding.complete_response``). A ``length`` finish is left as generated (the search rejects it as
  truncated). Leading whitespace of a continuation without pre-fill is dropped (the prompt renderer
  joins steps with a newline itself).
- **Log-probs** (``teacher.logprobs``): the request asks ``"logprobs": true`` and each choice's
  ``logprobs.content[*].logprob`` are summed into ``Continuation.logprob`` (None when the server sent
  none). Without the setting nothing is asked and nothing is read.
- **Completion tokens per choice**: the API only reports ``usage.completion_tokens`` for all ``n``
  choices together. A choice cut by ``length`` gets exactly ``max_tokens``; the rest of the total is split
  over the other choices in proportion to their text length (largest remainder, so the parts sum to the
  reported total). Without ``usage`` the counts are 0 (never invented).
- **In-flight bound**: one semaphore of ``concurrency`` requests for the whole teacher, shared by every
  tree; a request waiting out a retry's backoff gives its slot back meanwhile.
- **Several servers**: ``base_url`` may list servers separated by commas; each attempt goes to the server
  with the fewest requests in flight (ties round-robin), so a retry may land on another server.
  ``concurrency`` is the total over all of them.
- **Malformed replies are retried like a 5xx**: a 2xx reply that is not JSON, has no ``choices``, a
  choice without message content, or another number of choices than ``n``. After the retries
  (``retry.py``) a request raises :class:`TeacherError` with a one-line reason (HTTP status and message,
  timeout, unreachable, body cut short, malformed reply). ``check()`` lists the models on every server
  before any work and raises :class:`TeacherUnavailable` (unreachable server, refused key, model not
  served, a transport that cannot be built — naming what is).
- **Credentials**: ``user:password@`` in a server URL is sent as HTTP Basic authentication in place of
  the ``Bearer`` API key for that server (``urls.split_credentials``) and never shown: every message,
  ``describe()`` and the run's ``config.json`` carry ``urls.public_url``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from ..config import TeacherConfig
from ..grounding import STEP_STOPS, complete_response
from .base import (
    Continuation,
    PromptState,
    TeacherError,
    TeacherReply,
    TeacherUnavailable,
    head_messages,
    stop_sequences,
    tail_messages,
)
from .http import HTTPTransport, RequestFailed, TransportConfigError, one_line
from .retry import MALFORMED, NO_RESPONSE, retry_delay
from .urls import parse_base_urls, public_url, split_credentials

HEAD_CACHE_KEY = "openai_compat.head_json"  # PromptContext.cache: the serialized system + user messages
CHECK_TIMEOUT_S = 30.0  # GET /models before any work
_backoff_sleep = asyncio.sleep  # the wait before a retry (tests record the delays through it)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


class MalformedReply(Exception):
    """A complete 2xx reply the engine cannot use (retried like a 5xx)."""


def assemble_text(content: str, prefill: str, finish_reason: str, stop_reason: object) -> str:
    """One choice's stored text: the pre-fill put back, the stripped stop string re-attached (see above)."""
    text = prefill + (content if prefill else content.lstrip())
    if finish_reason != "stop":
        return text
    if isinstance(stop_reason, str) and stop_reason:
        return text + stop_reason  # exactly what was generated: the server cut right before the stop string
    return complete_response(text)


def split_tokens(total: int | None, lengths: list[int], finishes: list[str], max_tokens: int) -> list[int]:
    """Per-choice completion tokens from the request total (see the module docstring)."""
    k = len(lengths)
    if not total or total <= 0 or k == 0:
        return [0] * k
    if k == 1:  # the common case (a rollout step): no split
        return [max_tokens if finishes[0] == "length" and max_tokens <= total else total]
    out = [0] * k
    free = list(range(k))
    n_length = sum(1 for f in finishes if f == "length")
    if 0 < n_length and n_length * max_tokens <= total:
        free = [i for i in range(k) if finishes[i] != "length"]
        for i in range(k):
            if finishes[i] == "length":
                out[i] = max_tokens
        total -= n_length * max_tokens
        if not free:
            return out
    weights = [max(1, lengths[i]) for i in free]
    wsum = sum(weights)
    shares = [total * w / wsum for w in weights]
    floors = [int(s) for s in shares]
    rest = total - sum(floors)
    order = sorted(range(len(free)), key=lambda j: shares[j] - floors[j], reverse=True)
    for j in order[:rest]:
        floors[j] += 1
    for j, i in enumerate(free):
        out[i] = floors[j]
    return out


def choice_logprob(choice: dict[str, Any]) -> float | None:
    """Sum of ``logprobs.content[*].logprob`` of one chat-completion choice; None when absent."""
    lp = choice.get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if not isinstance(content, list) or not content:
        return None
    total = 0.0
    for tok in content:
        v = tok.get("logprob") if isinstance(tok, dict) else None
        if not isinstance(v, (int, float)):
            return None
        total += v
    return total


def parse_reply(raw: bytes, n: int, prefill: str, max_tokens: int, logprobs: bool) -> tuple[list[Continuation], int]:
    """``(choices, prompt_tokens)`` of a chat-completion body; :class:`MalformedReply` (one line) if unusable."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise MalformedReply(f"body is not JSON ({len(raw)} bytes)") from None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices:
        raise MalformedReply("no 'choices'")
    if len(choices) != n:
        raise MalformedReply(f"{len(choices)} choices for n={n}")
    if n > 1 and all(isinstance(c, dict) and isinstance(c.get("index"), int) for c in choices):
        choices = sorted(choices, key=lambda c: c["index"])
    texts: list[str] = []
    finishes: list[str] = []
    lengths: list[int] = []
    for j, c in enumerate(choices):
        msg = c.get("message") if isinstance(c, dict) else None
        content = msg.get("content") if isinstance(msg, dict) else None
        if not isinstance(content, str):
            raise MalformedReply(f"choice {j} has no message content")
        finish = str(c.get("finish_reason") or "stop")
        texts.append(assemble_text(content, prefill, finish, c.get("stop_reason")))
        finishes.append(finish)
        lengths.append(len(content))
    usage = data.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    completion = usage.get("completion_tokens")
    prompt_tokens = usage.get("prompt_tokens")
    tokens = split_tokens(completion if isinstance(completion, int) else None, lengths, finishes, max_tokens)
    lps = [choice_logprob(c) for c in choices] if logprobs else [None] * n
    out = [Continuation(text=t, finish_reason=f, completion_tokens=k, logprob=lp) for t, f, k, lp in zip(texts, finishes, tokens, lps)]
    return out, prompt_tokens if isinstance(prompt_tokens, int) else 0


def error_message(content: bytes) -> str:
    """The ``message`` of an OpenAI-style error body (``{"error": {"message": …}}`` or vLLM's flat form)."""
    try:
        body = json.loads(content)
    except ValueError:
        return one_line(content.decode("utf-8", "replace"), 200)
    err = body.get("error", body) if isinstance(body, dict) else None
    msg = err.get("message") if isinstance(err, dict) else None
    return one_line(msg, 200) if isinstance(msg, str) else ""


class OpenAITeacher:
    """An OpenAI-compatible server (or several) as the teacher. See the module docstring."""

    name = "openai"

    def __init__(self, cfg: TeacherConfig) -> None:
        try:
            urls = parse_base_urls(cfg.base_url)
        except ValueError as exc:
            raise TeacherUnavailable(str(exc)) from None
        if cfg.prompt_style not in ("continue", "plain"):
            raise ValueError(f"teacher.prompt_style {cfg.prompt_style!r}: expected continue or plain")
        if cfg.concurrency < 1:
            raise ValueError(f"teacher.concurrency must be ≥ 1, got {cfg.concurrency}")
        self.cfg = cfg
        self.urls = [public_url(u) for u in urls]  # what is connected to, shown and stored
        api_key = os.environ.get(cfg.api_key_env) or "EMPTY"  # vLLM accepts any key
        self._headers: list[dict[str, str]] = []
        for u in urls:
            basic = split_credentials(u)[1]
            self._headers.append(
                {
                    "Authorization": basic or f"Bearer {api_key}",
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                    "User-Agent": "mcts-engine",
                }
            )
        self._http: HTTPTransport | None = None
        self._params: dict[tuple[int, bool, tuple[str, ...], bool], bytes] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sem: asyncio.Semaphore | None = None
        self._inflight = [0] * len(self.urls)
        self._rr = 0
        # counters (read by benchmarks and stats)
        self.requests = 0  # requests asked (each may take several attempts)
        self.attempts = 0  # attempts sent
        self.retried = 0  # attempts that failed and were retried
        self.retried_choices = 0  # choices those attempts asked for (asked again by the retry)
        self.failed = 0  # requests that raised TeacherError after their retries
        self.prompt_bytes = 0
        self.max_inflight = 0

    # --- set-up ------------------------------------------------------------------------------
    def _transport(self) -> HTTPTransport:
        """The HTTP transport, built on first use (raises :class:`TeacherUnavailable`, one line)."""
        if self._http is None:
            c = self.cfg
            try:
                self._http = HTTPTransport(self.urls, self._headers, c.concurrency, c.timeout_s, c.ca_file)
            except TransportConfigError as exc:
                raise TeacherUnavailable(str(exc)) from None
        return self._http

    def _ensure(self) -> HTTPTransport:
        """The semaphore belongs to the running event loop; (re)build it on a new loop."""
        http = self._transport()
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._sem = asyncio.Semaphore(self.cfg.concurrency)
            self._inflight = [0] * len(self.urls)
            self._loop = loop
        return http

    def describe(self) -> dict[str, Any]:
        import aiohttp

        c = self.cfg
        return {
            "kind": "openai",
            "base_urls": list(self.urls),
            "model": c.model,
            "prompt_style": c.prompt_style,
            "temperature": c.temperature,
            "top_p": c.top_p,
            "max_tokens": c.max_tokens,
            "logprobs": c.logprobs,
            "stop": "per request: the sample's step stops (" + ", ".join(STEP_STOPS) + " by default)",
            "concurrency": c.concurrency,
            "timeout_s": c.timeout_s,
            "max_retries": c.max_retries,
            "api_key_env": c.api_key_env,
            "ca_file": c.ca_file,
            "extra_body": c.extra_body,
            "client": f"aiohttp {aiohttp.__version__}",
        }

    # --- check -------------------------------------------------------------------------------
    async def check(self) -> None:
        """List the models of every server; raise :class:`TeacherUnavailable` (one line) if one cannot serve.

        Through the ``openai`` SDK (``client.models.list()``, no retries, ``min(timeout_s, 30)`` seconds) on its
        aiohttp client, given the same TLS context, proxy and credentials as the requests' transport. A server
        behind a SOCKS proxy (which the SDK's client does not speak) is checked with one ``GET /models`` through
        the requests' own transport."""
        http = self._ensure()
        for i, url in enumerate(self.urls):
            verify, proxy, socks = http.route(i)
            if socks:
                served = await self._models_direct(http, i, url)
            else:
                served = await self._models_sdk(i, url, verify, proxy)
            if self.cfg.model not in served:
                listed = ", ".join(served[:10]) + (" …" if len(served) > 10 else "") if served else "none"
                raise TeacherUnavailable(
                    f"model {self.cfg.model!r} is not served at {url} (served: {listed}); pass --model with one of these"
                )

    async def _models_sdk(self, i: int, url: str, verify: Any, proxy: str | None) -> list[str]:
        import openai

        timeout = min(self.cfg.timeout_s, CHECK_TIMEOUT_S)
        http_client = openai.DefaultAioHttpClient(verify=verify, proxy=proxy, trust_env=False, timeout=timeout)
        client = openai.AsyncOpenAI(
            base_url=url, api_key="unused", max_retries=0, timeout=timeout, http_client=http_client,
            default_headers={"Authorization": self._headers[i]["Authorization"], "User-Agent": "mcts-engine"},
        )
        try:
            return [str(m.id) async for m in client.models.list()]
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise TeacherUnavailable(
                f"teacher at {url} refused the API key (HTTP {exc.status_code}); set ${self.cfg.api_key_env}"
            ) from None
        except openai.APIStatusError as exc:
            msg = error_message(exc.response.content)
            raise TeacherUnavailable(
                f"teacher at {url} answered GET /models with HTTP {exc.status_code}" + (f": {msg}" if msg else "")
            ) from None
        except openai.APIConnectionError as exc:  # APITimeoutError included: the innermost cause says which
            cause: BaseException = exc
            while cause.__cause__ is not None:
                cause = cause.__cause__
            reason = "timed out" if isinstance(cause, TimeoutError) or not str(cause) else one_line(cause)
            raise TeacherUnavailable(f"cannot reach teacher at {url}: {reason}") from None
        except (openai.APIResponseValidationError, ValueError, TypeError, AttributeError):
            raise TeacherUnavailable(f"teacher at {url}: GET /models is not an OpenAI model list") from None
        finally:
            await client.close()

    async def _models_direct(self, http: HTTPTransport, i: int, url: str) -> list[str]:
        try:
            status, _, content = await http.get(i, "/models", CHECK_TIMEOUT_S)
        except RequestFailed as exc:
            reason = "timed out" if exc.kind == "timeout" else str(exc).split(": ", 1)[-1]
            raise TeacherUnavailable(f"cannot reach teacher at {url}: {reason}") from None
        if status in (401, 403):
            raise TeacherUnavailable(f"teacher at {url} refused the API key (HTTP {status}); set ${self.cfg.api_key_env}")
        if status >= 400:
            msg = error_message(content)
            raise TeacherUnavailable(f"teacher at {url} answered GET /models with HTTP {status}" + (f": {msg}" if msg else ""))
        try:
            return [str(m["id"]) for m in json.loads(content)["data"]]
        except (ValueError, KeyError, TypeError):
            raise TeacherUnavailable(f"teacher at {url}: GET /models is not an OpenAI model list") from None

    async def aclose(self) -> None:
        self._loop = None
        if self._http is not None:
            await self._http.aclose()

    # --- requests ----------------------------------------------------------------------------
    def _param_bytes(self, n: int, cont: bool, stops: tuple[str, ...], final: bool = False) -> bytes:
        """The request's parameters as JSON bytes (cached per shape); ``final``: the reply must be the answer, so
        ``teacher.final_temperature`` applies when set."""
        key = (n, cont, stops, final)
        b = self._params.get(key)
        if b is None:
            c = self.cfg
            temperature = c.final_temperature if final and c.final_temperature is not None else c.temperature
            params: dict[str, Any] = {
                "model": c.model,
                "n": n,
                "temperature": temperature,
                "top_p": c.top_p,
                "max_tokens": c.max_tokens,
                "stop": list(stops),
            }
            if c.logprobs:
                params["logprobs"] = True
            if cont:
                params["continue_final_message"] = True
                params["add_generation_prompt"] = False
            params.update(c.extra_body)
            params["n"] = n
            b = self._params[key] = b"," + _dumps(params)[1:]
        return b

    def request_body(self, state: PromptState, n: int) -> tuple[bytes, str]:
        """The request's JSON bytes and the pre-fill to prepend to each choice."""
        ctx = state.context
        head = ctx.cache.get(HEAD_CACHE_KEY)
        if head is None:
            head = ctx.cache[HEAD_CACHE_KEY] = _dumps(head_messages(ctx))[1:-1]
        tail, cont, prefill = tail_messages(state, self.cfg.prompt_style)
        params = self._param_bytes(n, cont, stop_sequences(state), state.force_answer)
        if tail:
            body = b"".join((b'{"messages":[', head, b",", _dumps(tail)[1:-1], b"]", params))
        else:
            body = b"".join((b'{"messages":[', head, b"]", params))
        return body, prefill

    def _pick(self) -> int:
        k = len(self._inflight)
        if k == 1:
            return 0
        start = self._rr = (self._rr + 1) % k
        best = start
        for j in range(1, k):
            i = (start + j) % k
            if self._inflight[i] < self._inflight[best]:
                best = i
        return best

    async def complete(self, state: PromptState, n: int) -> TeacherReply:
        http = self._ensure()
        body, prefill = self.request_body(state, n)
        sem = self._sem
        assert sem is not None
        self.requests += 1
        cfg = self.cfg
        retries = 0
        t0 = time.perf_counter()
        while True:
            async with sem:
                i = self._pick()
                url = self.urls[i]
                self._inflight[i] += 1
                self.attempts += 1
                self.prompt_bytes += len(body)
                inflight = sum(self._inflight)
                if inflight > self.max_inflight:
                    self.max_inflight = inflight
                headers: Any = None
                try:
                    status, headers, content = await http.post(i, "/chat/completions", body)
                    if 200 <= status < 300:
                        try:
                            choices, prompt_tokens = parse_reply(content, n, prefill, cfg.max_tokens, cfg.logprobs)
                            return TeacherReply(choices=choices, prompt_tokens=prompt_tokens, latency_s=time.perf_counter() - t0)
                        except MalformedReply as exc:
                            status, headers, reason = MALFORMED, None, f"malformed reply from {url}: {exc}"
                    else:
                        msg = error_message(content)
                        reason = f"{url} answered HTTP {status}" + (f": {msg}" if msg else "")
                except RequestFailed as exc:
                    status, reason = NO_RESPONSE, str(exc)
                finally:
                    self._inflight[i] -= 1
            delay = retry_delay(retries, cfg.max_retries, status, headers, now=time.time())
            if delay is None:
                self.failed += 1
                tried = f" (after {retries} {'retry' if retries == 1 else 'retries'})" if retries else ""
                raise TeacherError(reason + tried)
            retries += 1
            self.retried += 1
            self.retried_choices += n
            await _backoff_sleep(delay)
