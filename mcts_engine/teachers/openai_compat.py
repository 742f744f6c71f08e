"""The ``openai`` teacher: any OpenAI-compatible chat-completions server (vLLM, SGLang, OpenAI).

Three request paths (``teacher.client``), one behaviour:

- ``direct`` (default): :class:`DirectClient` writes the request (JSON bytes) on :class:`Connections`, a
  keep-alive HTTP/1.1 pool, with the configured timeouts; on a failure the ``AsyncOpenAI`` client's own
  retry rules decide whether and when to retry (:class:`RetryPolicy`: connection errors, timeouts,
  408/409/429/5xx, backoff with jitter, ``Retry-After``, ``x-should-retry``, ``max_retries``).
- ``lean``: the SDK's request loop, ``client.post("chat/completions", cast_to=<http Response>,
  content=<JSON bytes>)``, over :class:`LeanTransport` (the same pool as an httpx2 transport).
- ``httpx``: the same ``post`` over the SDK's stock httpx2/httpcore client; chosen automatically when
  ``HTTP(S)_PROXY`` applies to a teacher URL (the other two speak HTTP themselves and know no proxies).

None of them uses ``chat.completions.create``: its pydantic request transform re-serializes every
message (the base64 image included) and its response model is parsed for nothing. ``check()`` (the
model list before any work) always goes through ``AsyncOpenAI``.

Client CPU per request at n=3, 64 in flight, measured here (README, "Generation benchmark"): ``create`` 2.8 ms;
``post`` on httpcore (``httpx``) 1.5 ms; ``post`` on :class:`LeanTransport` (``lean``) 0.6 ms;
:class:`DirectClient` (``direct``) 0.18 ms — the SDK's per-request request building (options models,
header merging, URL parsing, request/response objects) is most of the difference.

Choices made here (each one a measured or documented need):

- **Siblings in ONE request** with ``n``; ``stop`` = the closing tags that end one response
  (``SampleContext.stop``: ``STEP_STOPS``, or the multi-turn variant's; only ``</answer>`` one-shot).
- **Prompt styles** (``teacher.prompt_style``): ``continue`` sends vLLM's ``continue_final_message: true,
  add_generation_prompt: false`` whenever the path ends in an assistant message (steps so far, or the
  ``<answer>`` pre-fill of a forced answer), and the pre-fill is prepended to every returned choice;
  ``plain`` sends steps as assistant turns with a short user turn after each (any server).
- **Request bodies are spliced, not re-serialized**: the per-sample head (system + user turn with the
  base64 image) is serialized ONCE into ``SampleContext.cache`` and joined as bytes with the small tail
  (the path's steps) and the sampling parameters (cached per ``n``, prompt style and stops).
- **Stop strings re-attached**: vLLM reports the matched stop string as ``stop_reason`` and returns the
  text right up to it, so ``text + stop_reason`` is exactly what the model wrote. Without ``stop_reason``
  (other servers, or an EOS) the closing tag is inferred from the open tags
  (``grounding.complete_response``). A ``length`` finish is left as generated (the search rejects it as
  truncated). Leading whitespace of a continuation without pre-fill is dropped (the prompt renderer
  joins steps with a newline itself).
- **Completion tokens per choice**: the API only reports ``usage.completion_tokens`` for all ``n``
  choices together. A choice cut by ``length`` gets exactly ``max_tokens``; the rest of the total is split
  over the other choices in proportion to their text length (largest remainder, so the parts sum to the
  reported total). Without ``usage`` the counts are 0 (never invented).
- **In-flight bound**: one semaphore of ``concurrency`` requests for the whole teacher, shared by every tree.
- **Several servers**: ``base_url`` may list servers separated by commas; each request goes to the server
  with the fewest requests in flight (ties round-robin). ``concurrency`` is the total over all of them.
- **Errors**: after the client's retries a request raises :class:`TeacherError` with a one-line reason
  (HTTP status and message, timeout, unreachable, malformed reply: not JSON, no choices, no content,
  wrong choice count). ``check()`` lists the models on every server before any work and raises
  :class:`TeacherUnavailable` (unreachable server, refused key, model not served — naming what is).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

try:  # openai ≥ 3 is built on httpx2; earlier versions on httpx (same API for what is used here)
    import httpx2 as _hx
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx as _hx  # type: ignore[no-redef]

from ..config import TeacherConfig
from ..grounding import STEP_STOPS, complete_response
from .base import (
    Continuation,
    PromptState,
    stop_sequences,
    TeacherError,
    TeacherReply,
    TeacherUnavailable,
    head_messages,
    tail_messages,
)

HEAD_CACHE_KEY = "openai_compat.head_json"  # SampleContext.cache: the serialized system + user messages
KEEPALIVE_S = 4.0  # reuse an idle connection only this long (vLLM's uvicorn closes idle ones after 5 s)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _one_line(text: object, limit: int = 300) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


@functools.lru_cache(maxsize=64)
def public_url(url: str) -> str:
    """``url`` without user:password (safe for logs and the run config)."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def parse_base_urls(base_url: str) -> list[str]:
    urls = [u.strip().rstrip("/") for u in base_url.split(",") if u.strip()]
    if not urls:
        raise TeacherUnavailable("teacher.base_url is empty: pass --base-url http://HOST:PORT/v1")
    return urls


def _proxy_for(url: str) -> str | None:
    """The proxy the environment sets for ``url`` (HTTP(S)_PROXY / ALL_PROXY, minus NO_PROXY), or None."""
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


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


# --------------------------------------------------------------------------------------------
# A lean keep-alive HTTP/1.1 connection pool (under the openai client, or used directly)
# --------------------------------------------------------------------------------------------


class HTTPFailure(Exception):
    """A request that got no HTTP response. ``kind``: ``connect`` | ``timeout`` | ``protocol``."""

    def __init__(self, kind: str, message: str, phase: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.phase = phase  # for timeouts: connect | write | read


class _StaleConnection(Exception):
    """The server closed a connection before any byte of the response."""


class Connections:
    """Keep-alive HTTP/1.1 connections per origin, as a LIFO stack of idle ones: O(1) per request.

    Why: httpcore's pool scans every pooled connection (and polls its socket) on each request, so its
    cost grows with the number of open connections — at 64+ requests in flight it was the largest CPU
    cost of the teacher (profiled; README, "Generation benchmark").

    ``roundtrip(origin, payload, timeouts)`` sends one complete request (head + body bytes) and reads
    one complete response (``Content-Length``, chunked, or until close). Timeouts: ``connect`` bounds
    opening a connection, ``write`` sending, ``read`` the WHOLE response (the server sends nothing until
    the completion is done, so this is the per-request timeout). A reused connection the server had
    closed (keep-alive race) is retried once on a fresh one; idle connections older than
    ``KEEPALIVE_S`` are dropped rather than reused. HTTP and HTTPS (default SSL context); no HTTP/2,
    no streaming (the teacher never streams).
    """

    def __init__(self) -> None:
        self._idle: dict[tuple[str, str, int], list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]]] = {}
        self._ssl: Any = None
        self.opened = 0

    def close(self) -> None:
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for _, w, _ in conns:
                try:
                    w.close()
                except RuntimeError:  # its event loop is already closed: the socket went with it
                    pass

    @staticmethod
    def _take(idle: list) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The most recently used idle connection that is still usable (LIFO: the rest are older)."""
        now = time.monotonic()
        while idle:
            reader, writer, since = idle.pop()
            if now - since > KEEPALIVE_S:  # servers drop idle connections (uvicorn: after 5 s)
                writer.close()
                for _, w, _ in idle:
                    w.close()
                idle.clear()
                return None
            if reader.at_eof() or writer.is_closing():
                writer.close()
                continue
            return reader, writer
        return None

    async def _open(self, origin: tuple[str, str, int], timeout: float | None):
        ssl_ctx = None
        if origin[0] == "https":
            if self._ssl is None:
                import ssl

                self._ssl = ssl.create_default_context()
            ssl_ctx = self._ssl
        try:
            async with _timeout(timeout):
                conn = await asyncio.open_connection(origin[1], origin[2], ssl=ssl_ctx, limit=1 << 22)
        except TimeoutError:
            raise HTTPFailure("timeout", f"connect to {origin[1]}:{origin[2]} timed out", "connect") from None
        except OSError as exc:
            raise HTTPFailure("connect", _one_line(exc, 200) or type(exc).__name__) from None
        self.opened += 1
        return conn

    async def roundtrip(
        self, origin: tuple[str, str, int], payload: bytes, timeouts: dict[str, float | None]
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        idle = self._idle.setdefault(origin, [])
        for attempt in (0, 1):
            conn = self._take(idle) if attempt == 0 else None
            reused = conn is not None
            reader, writer = conn if conn is not None else await self._open(origin, timeouts.get("connect"))
            try:
                status, headers, content, keep = await self._exchange(reader, writer, payload, timeouts)
            except _StaleConnection:
                writer.close()
                if reused:
                    continue  # a keep-alive connection the server had closed: once more on a fresh one
                raise HTTPFailure("protocol", "server closed the connection without a response") from None
            except BaseException:
                writer.close()
                raise
            if keep:
                idle.append((reader, writer, time.monotonic()))
            else:
                writer.close()
            return status, headers, content
        raise AssertionError("unreachable")

    @staticmethod
    async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes, t: dict):
        try:
            writer.write(payload)
            if writer.transport.get_write_buffer_size():  # the socket did not take it all at once: wait
                async with _timeout(t.get("write")):
                    await writer.drain()
        except TimeoutError:
            raise HTTPFailure("timeout", "write timed out", "write") from None
        except OSError:
            raise _StaleConnection from None
        started = False  # a response byte arrived: from here on a dropped connection is an error, not stale
        try:
            async with _timeout(t.get("read")):
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as exc:
                    if not exc.partial:
                        raise _StaleConnection from None
                    raise HTTPFailure("protocol", "connection closed in the response headers") from None
                started = True
                lines = head.split(b"\r\n")
                parts = lines[0].split(None, 2)
                if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
                    raise HTTPFailure("protocol", f"bad status line {lines[0][:60]!r}")
                status = int(parts[1])
                headers: list[tuple[bytes, bytes]] = []
                length: int | None = None
                chunked = False
                keep = parts[0] != b"HTTP/1.0"
                for h in lines[1:]:
                    if not h:
                        continue
                    k, _, v = h.partition(b":")
                    k, v = k.strip(), v.strip()
                    headers.append((k, v))
                    lk = k.lower()
                    if lk == b"content-length":
                        length = int(v)
                    elif lk == b"transfer-encoding":
                        chunked = b"chunked" in v.lower()
                    elif lk == b"connection":
                        keep = v.lower() != b"close"
                if chunked:
                    chunks = []
                    while True:
                        size = int(((await reader.readline()).split(b";")[0].strip() or b"0"), 16)
                        if size == 0:
                            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        chunks.append(await reader.readexactly(size))
                        await reader.readline()
                    content = b"".join(chunks)
                    headers = [(k, v) for k, v in headers if k.lower() != b"transfer-encoding"]
                elif length is not None:
                    content = await reader.readexactly(length) if length else b""
                elif status in (204, 304) or 100 <= status < 200:
                    content = b""
                else:
                    content = await reader.read()
                    keep = False
        except TimeoutError:
            raise HTTPFailure("timeout", "read timed out", "read") from None
        except asyncio.IncompleteReadError:
            raise HTTPFailure("protocol", "connection closed in the response body") from None
        except asyncio.LimitOverrunError:
            raise HTTPFailure("protocol", "response headers too large") from None
        except (OSError, ValueError) as exc:
            if not started and isinstance(exc, (ConnectionResetError, BrokenPipeError)):
                raise _StaleConnection from None
            raise HTTPFailure("protocol", _one_line(exc, 200) or type(exc).__name__) from None
        return status, headers, content, keep


class LeanTransport(_hx.AsyncBaseTransport):
    """:class:`Connections` as an ``httpx2`` transport, under ``AsyncOpenAI``'s HTTP client.

    Everything above it is unchanged: the openai client builds the request, retries with backoff and
    maps errors; failures are raised as httpx2's exception types (``ConnectError``, ``ConnectTimeout``,
    ``ReadTimeout``, ``WriteTimeout``, ``RemoteProtocolError``), so the client's retry rules apply.
    """

    def __init__(self) -> None:
        self.pool = Connections()

    async def aclose(self) -> None:
        self.pool.close()

    async def handle_async_request(self, request: Any) -> Any:
        url = request.url
        scheme = url.scheme
        origin = (scheme, url.host, url.port or (443 if scheme == "https" else 80))
        body = await request.aread()
        head = [request.method.encode(), b" ", url.raw_path, b" HTTP/1.1\r\n"]
        for k, v in request.headers.raw:
            head += (k, b": ", v, b"\r\n")
        head.append(b"\r\n")
        try:
            status, headers, content = await self.pool.roundtrip(
                origin, b"".join(head) + body, request.extensions.get("timeout") or {}
            )
        except HTTPFailure as exc:
            if exc.kind == "timeout":
                cls = {"connect": _hx.ConnectTimeout, "write": _hx.WriteTimeout}.get(exc.phase, _hx.ReadTimeout)
            else:
                cls = _hx.ConnectError if exc.kind == "connect" else _hx.RemoteProtocolError
            raise cls(str(exc), request=request) from None
        return _hx.Response(status, headers=headers, content=content, extensions={"http_version": b"HTTP/1.1"})


if hasattr(asyncio, "timeout"):
    _timeout = asyncio.timeout  # type: ignore[attr-defined]
else:  # Python 3.10

    class _timeout:  # type: ignore[no-redef]
        """``asyncio.timeout`` for 3.10: cancel the current task after ``delay`` seconds."""

        def __init__(self, delay: float | None) -> None:
            self.delay = delay
            self.handle: asyncio.TimerHandle | None = None
            self.fired = False

        async def __aenter__(self) -> None:
            if self.delay is not None:
                task = asyncio.current_task()
                loop = asyncio.get_running_loop()

                def fire() -> None:
                    self.fired = True
                    task.cancel()  # type: ignore[union-attr]

                self.handle = loop.call_later(self.delay, fire)

        async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
            if self.handle is not None:
                self.handle.cancel()
            if self.fired and exc_type is asyncio.CancelledError:
                raise TimeoutError
            return False


# --------------------------------------------------------------------------------------------
# The direct client: the same requests without the SDK's per-request machinery (the default)
# --------------------------------------------------------------------------------------------

# The openai SDK's retry constants (openai/_constants.py); used only where the installed SDK lacks the
# retry methods :class:`RetryPolicy` asks it.
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
MAX_RETRY_AFTER_DELAY = 120.0
RETRY_STATUSES = frozenset({408, 409, 429})


def retry_delay(retries_taken: int, headers: list[tuple[bytes, bytes]] | None) -> float | None:
    """Seconds to wait before the next attempt, or None when the server said not to retry.

    The openai SDK's rules, written out: ``x-should-retry: false`` forbids; ``retry-after-ms`` /
    ``retry-after`` (seconds) are honoured up to two minutes (longer: no retry); else ``0.5·2^k`` s
    capped at 8 s, minus up to 25 % jitter."""
    h = {k.lower(): v for k, v in headers or ()}
    if h.get(b"x-should-retry") == b"false":
        return None
    for name, div in ((b"retry-after-ms", 1000.0), (b"retry-after", 1.0)):
        raw = h.get(name)
        if raw is None:
            continue
        try:
            after = float(raw) / div
        except ValueError:
            continue
        if after > MAX_RETRY_AFTER_DELAY:
            return None
        if after > 0:
            return after
        break
    delay = min(INITIAL_RETRY_DELAY * 2.0 ** min(retries_taken, 1000), MAX_RETRY_DELAY)
    return delay * (1 - 0.25 * random.random())


def should_retry_status(status: int, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether an HTTP error status is retried (the SDK's rules; ``x-should-retry`` wins)."""
    should = {k.lower(): v for k, v in headers}.get(b"x-should-retry")
    if should is not None and should in (b"true", b"false"):
        return should == b"true"
    return status in RETRY_STATUSES or status >= 500


class RetryPolicy:
    """When to retry a request and how long to wait first, decided by an ``AsyncOpenAI`` client.

    The direct client sends requests itself, but on a failure (no response, or an error status) it
    asks the SDK client's own rules — ``_should_retry(response)`` and ``_calculate_retry_timeout(
    remaining, options, headers)``, the methods the SDK's request loop calls — so ``max_retries``,
    backoff, jitter, ``Retry-After`` and ``x-should-retry`` behave exactly as with the SDK. Those are
    private SDK methods: where the installed openai lacks them (or they change shape), the same rules
    written out here (:func:`should_retry_status`, :func:`retry_delay`) are used instead. Only failures
    reach this code: the success path costs nothing.
    """

    def __init__(self, max_retries: int, client: Any = None) -> None:
        self.max_retries = max_retries
        self.client = client
        self._options: Any = None
        if client is not None and hasattr(client, "_should_retry") and hasattr(client, "_calculate_retry_timeout"):
            try:
                from openai._models import FinalRequestOptions

                self._options = FinalRequestOptions.construct(method="post", url="chat/completions", max_retries=max_retries)
            except Exception:  # noqa: BLE001 - an SDK without this model: the written-out rules apply
                self._options = None

    @property
    def from_sdk(self) -> bool:
        return self._options is not None

    def wait(self, attempt: int, status: int = 0, headers: list[tuple[bytes, bytes]] | None = None) -> float | None:
        """Seconds to wait before retrying after attempt ``attempt`` (0-based) failed, or None to give up.
        ``status`` 0: no response (connection failure or timeout)."""
        if attempt >= self.max_retries:
            return None
        if self._options is not None:
            try:
                return self._sdk_wait(attempt, status, headers)
            except Exception:  # noqa: BLE001 - an SDK whose private retry methods changed shape
                self._options = None
        if status and not should_retry_status(status, headers or []):
            return None
        return retry_delay(attempt, headers)

    def _sdk_wait(self, attempt: int, status: int, headers: list[tuple[bytes, bytes]] | None) -> float | None:
        response = _hx.Response(status, headers=headers or []) if status else None
        if response is not None and not self.client._should_retry(response):
            return None
        remaining = self.max_retries - attempt
        return float(self.client._calculate_retry_timeout(remaining, self._options, response.headers if response is not None else None))


def error_message(content: bytes) -> str:
    """The ``message`` of an OpenAI-style error body (``{"error": {"message": …}}`` or vLLM's flat form)."""
    try:
        body = json.loads(content)
    except ValueError:
        return _one_line(content.decode("utf-8", "replace"), 200)
    err = body.get("error", body) if isinstance(body, dict) else None
    msg = err.get("message") if isinstance(err, dict) else None
    return _one_line(msg, 200) if isinstance(msg, str) else ""


class DirectClient:
    """POST JSON bytes to one server on :class:`Connections`; retries decided by :class:`RetryPolicy`.

    The default request path (``OpenAITeacher(cfg, client="direct")``): it skips the SDK's per-request
    request building (options models, header merging, URL parsing, httpx2 request/response objects),
    about 0.4 ms of CPU per request here, and keeps its behaviour: the timeouts of the configured
    ``timeout_s`` (connect ≤ 10 s), and on a failure the ``AsyncOpenAI`` client's own retry decision
    and backoff (connection failures, timeouts, 408/409/429/5xx, ``Retry-After``, ``x-should-retry``).
    """

    def __init__(self, base_url: str, api_key: str, timeout_s: float, max_retries: int, policy: RetryPolicy | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"teacher.base_url {public_url(base_url)!r}: expected http(s)://HOST[:PORT]/PATH")
        self.origin = (parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        path = (parts.path.rstrip("/") or "") + "/chat/completions"
        netloc = parts.hostname if not parts.port else f"{parts.hostname}:{parts.port}"
        if ":" in parts.hostname:  # IPv6 literal
            netloc = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: {netloc}\r\nAccept: application/json\r\n"
            f"Content-Type: application/json\r\nUser-Agent: mcts-engine\r\nAuthorization: Bearer {api_key}\r\n"
        ).encode("latin-1")
        self.timeouts = {"connect": min(timeout_s, 10.0), "write": timeout_s, "read": timeout_s}
        self.policy = policy or RetryPolicy(max_retries)
        self.pool = Connections()

    async def post(self, body: bytes) -> tuple[int, bytes, str]:
        """``(status, content, failure)``: failure is "" on a response, else ``timeout``/``connect``/``protocol``
        with the last attempt's message after ``content``."""
        payload = b"".join((self.head, b"Content-Length: ", str(len(body)).encode(), b"\r\n\r\n", body))
        attempt = 0
        while True:
            try:
                status, headers, content = await self.pool.roundtrip(self.origin, payload, self.timeouts)
            except HTTPFailure as exc:
                delay = self.policy.wait(attempt)
                if delay is None:
                    return 0, str(exc).encode(), exc.kind
            else:
                if status < 400:
                    return status, content, ""
                delay = self.policy.wait(attempt, status, headers)
                if delay is None:
                    return status, content, ""
            await asyncio.sleep(delay)
            attempt += 1

    def close(self) -> None:
        self.pool.close()


class OpenAITeacher:
    """An OpenAI-compatible server (or several) as the teacher. See the module docstring."""

    name = "openai"

    CLIENTS = ("lean", "httpx", "direct")

    def __init__(self, cfg: TeacherConfig, client: str | None = None) -> None:
        """``client``: ``direct`` — :class:`DirectClient`, retries decided by the ``AsyncOpenAI`` client
        (the config's default); ``lean`` — ``AsyncOpenAI``'s request loop over :class:`LeanTransport`;
        ``httpx`` — ``AsyncOpenAI`` over its stock httpcore pool. ``check()`` always goes through
        ``AsyncOpenAI``. Without the argument, ``cfg.client``."""
        client = client or cfg.client
        if client not in self.CLIENTS:
            raise ValueError(f"client {client!r}: expected one of {', '.join(self.CLIENTS)}")
        self.urls = parse_base_urls(cfg.base_url)
        proxied = [u for u in self.urls if _proxy_for(u)]
        if client != "httpx" and proxied:
            # The lean and direct paths speak HTTP themselves and know no proxies: let the SDK's stock
            # client (which honours HTTP(S)_PROXY / NO_PROXY) carry the requests instead.
            client = "httpx"
        self.client = client
        if cfg.prompt_style not in ("continue", "plain"):
            raise ValueError(f"teacher.prompt_style {cfg.prompt_style!r}: expected continue or plain")
        if cfg.concurrency < 1:
            raise ValueError(f"teacher.concurrency must be ≥ 1, got {cfg.concurrency}")
        self.cfg = cfg
        self._api_key = os.environ.get(cfg.api_key_env) or "EMPTY"  # vLLM accepts any key
        self._params: dict[tuple[int, bool, tuple[str, ...]], bytes] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients: list[Any] = []
        self._direct: list[DirectClient] = []
        self._sem: asyncio.Semaphore | None = None
        self._inflight = [0] * len(self.urls)
        self._rr = 0
        self._response_type: Any = None
        self._post_options: dict[str, Any] = {}
        # counters (read by benchmarks and stats)
        self.requests = 0
        self.prompt_bytes = 0
        self.max_inflight = 0

    # --- set-up ------------------------------------------------------------------------------
    def _ensure(self) -> None:
        """Clients and the semaphore belong to the running event loop; (re)build them on a new loop."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        import openai
        from openai._models import FinalRequestOptions

        self._response_type = _hx.Response
        # Only send the auth selector where this openai version knows it (3.x); 1.x adds the key always.
        fields = getattr(FinalRequestOptions, "model_fields", {})
        self._post_options = {"security": {"bearer_auth": True}} if "security" in fields else {}
        timeout = openai.Timeout(self.cfg.timeout_s, connect=min(self.cfg.timeout_s, 10.0))
        self._clients = [
            openai.AsyncOpenAI(
                base_url=url,
                api_key=self._api_key,
                max_retries=self.cfg.max_retries,
                timeout=timeout,
                http_client=self._http_client(openai, timeout),
            )
            for url in self.urls
        ]
        if self.client == "direct":
            self._direct = [
                DirectClient(u, self._api_key, self.cfg.timeout_s, self.cfg.max_retries, RetryPolicy(self.cfg.max_retries, c))
                for u, c in zip(self.urls, self._clients)
            ]
        self._sem = asyncio.Semaphore(self.cfg.concurrency)
        self._inflight = [0] * len(self.urls)
        self._loop = loop

    def _http_client(self, openai: Any, timeout: Any) -> Any:
        if self.client != "httpx":
            return openai.DefaultAsyncHttpxClient(transport=LeanTransport(), timeout=timeout)
        conns = self.cfg.concurrency + 8
        limits = _hx.Limits(max_connections=conns, max_keepalive_connections=conns)
        return openai.DefaultAsyncHttpxClient(limits=limits, timeout=timeout)

    def describe(self) -> dict[str, Any]:
        import openai

        c = self.cfg
        return {
            "kind": "openai",
            "base_urls": [public_url(u) for u in self.urls],
            "model": c.model,
            "prompt_style": c.prompt_style,
            "temperature": c.temperature,
            "top_p": c.top_p,
            "max_tokens": c.max_tokens,
            "stop": "per request: the sample's step stops (" + ", ".join(STEP_STOPS) + " by default)",
            "concurrency": c.concurrency,
            "timeout_s": c.timeout_s,
            "max_retries": c.max_retries,
            "api_key_env": c.api_key_env,
            "extra_body": c.extra_body,
            "client": f"openai {openai.__version__} ({self.client})",
        }

    # --- check -------------------------------------------------------------------------------
    async def check(self) -> None:
        """List the models of every server; raise :class:`TeacherUnavailable` (one line) if one cannot serve."""
        import openai

        self._ensure()
        opts = {"max_retries": min(1, self.cfg.max_retries), "timeout": min(self.cfg.timeout_s, 30.0)}
        for url, client in zip(self.urls, self._clients):
            shown = public_url(url)
            try:
                resp = await client.get("models", cast_to=self._response_type, options=opts | self._post_options)
            except openai.APIConnectionError as exc:
                cause = exc.__cause__ or exc
                kind = "timed out" if isinstance(exc, openai.APITimeoutError) else _one_line(cause, 200) or type(cause).__name__
                raise TeacherUnavailable(f"cannot reach teacher at {shown}: {kind}") from None
            except openai.APIStatusError as exc:
                if exc.status_code in (401, 403):
                    raise TeacherUnavailable(
                        f"teacher at {shown} refused the API key (HTTP {exc.status_code}); set ${self.cfg.api_key_env}"
                    ) from None
                raise TeacherUnavailable(f"teacher at {shown} answered GET /models with {_one_line(exc, 200)}") from None
            try:
                data = json.loads(resp.content)
                served = [str(m["id"]) for m in data["data"]]
            except (ValueError, KeyError, TypeError):
                raise TeacherUnavailable(f"teacher at {shown}: GET /models is not an OpenAI model list") from None
            if self.cfg.model not in served:
                listed = ", ".join(served[:10]) + (" …" if len(served) > 10 else "") if served else "none"
                raise TeacherUnavailable(
                    f"model {self.cfg.model!r} is not served at {shown} (served: {listed}); pass --model with one of these"
                )

    async def aclose(self) -> None:
        clients, self._clients, self._loop = self._clients, [], None
        for d in self._direct:
            d.close()
        self._direct = []
        for c in clients:
            try:
                await c.close()
            except Exception:  # noqa: BLE001 - closing a client bound to a finished loop
                pass

    # --- requests ----------------------------------------------------------------------------
    def _param_bytes(self, n: int, cont: bool, stops: tuple[str, ...]) -> bytes:
        key = (n, cont, stops)
        b = self._params.get(key)
        if b is None:
            c = self.cfg
            params: dict[str, Any] = {
                "model": c.model,
                "n": n,
                "temperature": c.temperature,
                "top_p": c.top_p,
                "max_tokens": c.max_tokens,
                "stop": list(stops),
            }
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
        params = self._param_bytes(n, cont, stop_sequences(state))
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
        self._ensure()
        body, prefill = self.request_body(state, n)
        assert self._sem is not None
        async with self._sem:
            i = self._pick()
            url = self.urls[i]
            self._inflight[i] += 1
            self.requests += 1
            self.prompt_bytes += len(body)
            inflight = sum(self._inflight)
            if inflight > self.max_inflight:
                self.max_inflight = inflight
            t0 = time.perf_counter()
            try:
                if self._direct:
                    raw = await self._post_direct(i, body)
                else:
                    raw = await self._post_sdk(i, body)
            finally:
                self._inflight[i] -= 1
            latency = time.perf_counter() - t0
        return self._parse(raw, n, prefill, url, latency)

    async def _post_sdk(self, i: int, body: bytes) -> bytes:
        import openai

        where = public_url(self.urls[i])
        try:
            resp = await self._clients[i].post(
                "chat/completions", cast_to=self._response_type, content=body, options=self._post_options
            )
        except openai.APITimeoutError:
            raise TeacherError(
                f"request to {where} timed out after {self.cfg.timeout_s:g}s ({self.cfg.max_retries} retries)"
            ) from None
        except openai.APIConnectionError as exc:
            raise TeacherError(f"cannot reach {where}: {_one_line(exc.__cause__ or exc, 200)}") from None
        except openai.APIStatusError as exc:
            raise TeacherError(f"{where} answered {_one_line(exc, 300)}") from None
        return resp.content

    async def _post_direct(self, i: int, body: bytes) -> bytes:
        where = public_url(self.urls[i])
        status, content, failure = await self._direct[i].post(body)
        if failure == "timeout":
            raise TeacherError(
                f"request to {where} timed out after {self.cfg.timeout_s:g}s ({self.cfg.max_retries} retries)"
            )
        if failure:
            raise TeacherError(f"cannot reach {where}: {_one_line(content.decode('utf-8', 'replace'), 200)}")
        if status >= 400:
            msg = error_message(content)
            raise TeacherError(f"{where} answered Error code: {status}" + (f" - {msg}" if msg else ""))
        return content

    def _parse(self, raw: bytes, n: int, prefill: str, url: str, latency: float) -> TeacherReply:
        where = public_url(url)
        try:
            data = json.loads(raw)
        except ValueError:
            raise TeacherError(f"malformed reply from {where}: body is not JSON ({len(raw)} bytes)") from None
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices:
            raise TeacherError(f"malformed reply from {where}: no 'choices'")
        if len(choices) != n:
            raise TeacherError(f"malformed reply from {where}: {len(choices)} choices for n={n}")
        if all(isinstance(c, dict) and isinstance(c.get("index"), int) for c in choices):
            choices = sorted(choices, key=lambda c: c["index"])
        texts: list[str] = []
        finishes: list[str] = []
        gen_lengths: list[int] = []
        for j, c in enumerate(choices):
            msg = c.get("message") if isinstance(c, dict) else None
            content = msg.get("content") if isinstance(msg, dict) else None
            if not isinstance(content, str):
                raise TeacherError(f"malformed reply from {where}: choice {j} has no message content")
            finish = str(c.get("finish_reason") or "stop")
            texts.append(assemble_text(content, prefill, finish, c.get("stop_reason")))
            finishes.append(finish)
            gen_lengths.append(len(content))
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        completion_total = usage.get("completion_tokens") if isinstance(usage.get("completion_tokens"), int) else None
        prompt_tokens = usage.get("prompt_tokens") if isinstance(usage.get("prompt_tokens"), int) else 0
        tokens = split_tokens(completion_total, gen_lengths, finishes, self.cfg.max_tokens)
        return TeacherReply(
            choices=[Continuation(text=t, finish_reason=f, completion_tokens=k) for t, f, k in zip(texts, finishes, tokens)],
            prompt_tokens=prompt_tokens,
            latency_s=latency,
        )
