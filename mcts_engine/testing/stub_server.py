"""A stand-in OpenAI-compatible server (``/v1/models``, ``/v1/chat/completions``) for tests and benchmarks.

It is NOT a model. It answers chat-completion requests with scripted replies that follow the step
protocol (``<think> … (x, y). </think>`` steps with points inside the prompt image's frame, and
``<answer> option </answer>`` answers picked from the ``(A) …`` options of the question), behaves like
vLLM where the engine depends on it (``n`` choices per request; ``stop`` strings cut and reported as
``stop_reason``; ``continue_final_message`` continues the last assistant message; ``max_tokens`` →
``finish_reason = "length"``; unknown model → 404), and models a GPU's decoding capacity:

- ``capacity`` sequences decode at once; each choice holds one slot for ``latency_s`` seconds, and
  choices beyond the capacity queue (FIFO). The ideal throughput is ``capacity / latency_s`` choices/s.
- Fault injection (``faults.py``): ``faults`` is a plan of kinds — 5xx, 429 with ``Retry-After``, hangs,
  connection resets, malformed replies (not JSON, no ``choices``, no content, too few / too many
  choices), bytes beyond ``Content-Length``, an interim ``1xx`` reply, a chunked body cut short — each at
  a rate (seeded: reproducible) or for the first K chat requests, e.g.
  ``StubServer(faults="5xx=10%,hang=5%,reset=2%,malformed=5%", hang_s=1)`` or ``--faults`` on the
  command line. Shorthands: ``fail_first`` (HTTP ``fail_status``), ``hang_first``, ``malformed`` +
  ``malformed_first`` add first-K faults.
- Records every chat request (n, body bytes, model, times; the parsed body if ``keep_bodies``) and
  requests in flight (now, max, time-weighted mean), readable in-process (``server.stats``) or over
  HTTP (``GET /stats``, ``POST /stats/reset``) when it runs as its own process.

A plain asyncio server (raw HTTP/1.1, keep-alive, listen backlog 4096), so hundreds of concurrent
connections neither reset nor cost a thread each. Use it in a thread (``with StubServer(...) as s:``)
or as a process::

    python -m mcts_engine.testing.stub_server --port 8011 --capacity 256 --latency-ms 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from typing import Any

from .faults import FAULT_KINDS, MALFORMED_KINDS, WIRE_KINDS, FaultPlan, FaultSpec, parse_faults, reset, spoil, wire_bytes
from .prompt_view import PromptView, image_size, read_prompt  # noqa: F401 - image_size: re-exported


@dataclass
class StubConfig:
    models: tuple[str, ...] = ("stub-model",)
    capacity: int = 256  # sequences decoded at once
    latency_s: float = 0.0  # per choice, holding one slot
    jitter: float = 0.0  # latency × uniform(1 − jitter, 1 + jitter)
    seed: int = 0
    fail_first: int = 0  # the first K chat requests answer HTTP fail_status
    fail_status: int = 500
    hang_first: int = 0  # the first K chat requests wait hang_s before answering
    hang_s: float = 30.0
    malformed: str | None = None  # one of MALFORMED_KINDS
    malformed_first: int = 1 << 62
    retry_after_ms: float | None = None  # sent with injected 5xx failures (clients back off this long)
    # fault plan (faults.py): specs or text like "5xx=10%,hang=5%,reset=first:3"; the shorthands above add to it
    faults: tuple[FaultSpec, ...] | str = ()
    retry_after_s: float = 1.0  # Retry-After (seconds) of injected 429 replies
    report_stop_reason: bool = True  # vLLM reports the matched stop string; OpenAI does not
    drop_keepalive: bool = False  # close each connection after answering, without saying so (stale keep-alive)
    keep_bodies: bool = False  # keep each parsed request body in the records (tests)
    # replies(body, index, rng) -> full text of choice ``index`` (closing tag included), or (text, mean token
    # log-prob | None): sent as OpenAI-format ``logprobs`` when the request asks (``truth_model.py``); None = scripted
    replies: Callable[[dict[str, Any], int, random.Random], str | tuple[str, float | None]] | None = None


@dataclass
class StubStats:
    chat_requests: int = 0
    model_requests: int = 0
    choices: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    injected: int = 0  # faults served (failures, hangs, resets, malformed or cut replies, ...)
    faults: dict[str, int] = field(default_factory=dict)  # by kind
    inflight: int = 0
    max_inflight: int = 0
    decoding: int = 0
    max_decoding: int = 0
    inflight_area: float = 0.0  # ∫ inflight dt
    t_first: float | None = None
    t_last: float | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    _t_mark: float = 0.0

    def _tick(self, now: float) -> None:
        if self.t_first is None:
            self.t_first = now
        else:
            self.inflight_area += self.inflight * (now - self._t_mark)
        self._t_mark = now
        self.t_last = now

    def summary(self) -> dict[str, Any]:
        span = (self.t_last - self.t_first) if (self.t_first is not None and self.t_last is not None) else 0.0
        d = {k: v for k, v in asdict(self).items() if k not in ("records", "_t_mark")}
        d["mean_inflight"] = self.inflight_area / span if span > 0 else 0.0
        d["span_s"] = span
        return d


# --------------------------------------------------------------------------------------------
# Scripted replies (pure)
# --------------------------------------------------------------------------------------------


def scripted_reply(view: PromptView, index: int, rng: random.Random) -> str:
    """A full reply (closing tag included): a grounded step or an answer, more often an answer deeper."""
    option = rng.choice(view.options) if view.options else "yes"
    if view.forced:
        return f" {option} </answer>" if view.continuing else f"<answer> {option} </answer>"
    if rng.random() < min(0.85, 0.15 + 0.25 * view.steps):
        return f"<answer> {option} </answer>"
    w, h = view.frame
    x, y = rng.randrange(w), rng.randrange(h)
    return f"<think> Step {view.steps + 1}: I look at the region that matters for the question around ({x}, {y}). </think>"


def finish_text(text: str, stops: list[str], max_tokens: int | None) -> tuple[str, str, str | None, int]:
    """Apply vLLM's stop handling: cut at the earliest stop string (excluded) and report it; a reply
    longer than ``max_tokens`` (≈ 4 characters per token) is truncated with ``finish_reason = length``.
    Returns ``(text, finish_reason, stop_reason, completion_tokens)``."""
    cut, reason = len(text), None
    for s in stops:
        i = text.find(s) if s else -1
        if 0 <= i < cut:
            cut, reason = i, s
    out = text[:cut]
    tokens = max(1, math.ceil(len(out) / 4))
    if max_tokens is not None and tokens > max_tokens:
        return out[: max_tokens * 4], "length", None, max_tokens
    return out, "stop", reason, tokens


def token_logprobs(text: str, mean: float | None, seed: str) -> dict[str, Any]:
    """A chat-completion choice's ``logprobs`` as vLLM sends them when asked: one entry per ≈ 4-character
    token of ``text``, each ``mean`` when a reply hook set one (a truth model's prior), else a seeded
    log-probability in (−2, 0]."""
    toks = [text[k : k + 4] for k in range(0, len(text), 4)] or [""]
    rng = random.Random(seed)
    return {"content": [{"token": t, "logprob": mean if mean is not None else -2.0 * rng.random(),
                         "bytes": list(t.encode()), "top_logprobs": []} for t in toks]}


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _error(status: int, message: str) -> tuple[int, bytes]:
    return status, _json({"object": "error", "message": message, "type": HTTPStatus(status).phrase, "param": None, "code": status})


def fault_specs(cfg: StubConfig) -> tuple[FaultSpec, ...]:
    """The config's fault plan: ``faults`` plus the first-K shorthands (hangs, then failures, then
    malformed replies — the order the shorthands always had)."""
    specs = list(parse_faults(cfg.faults) if isinstance(cfg.faults, str) else cfg.faults)
    if cfg.hang_first:
        specs.append(FaultSpec("hang", first=cfg.hang_first))
    if cfg.fail_first:
        specs.append(FaultSpec("5xx", first=cfg.fail_first))
    if cfg.malformed:
        specs.append(FaultSpec(cfg.malformed, first=min(cfg.malformed_first, 1 << 40)))
    return tuple(specs)


class StubServer:
    def __init__(
        self, config: StubConfig | None = None, host: str = "127.0.0.1", port: int = 0, tls: Any = None, **overrides: Any
    ) -> None:
        """``tls``: an ``ssl.SSLContext`` (server side) to serve HTTPS instead of HTTP."""
        cfg = config or StubConfig()
        for k, v in overrides.items():
            if not hasattr(cfg, k):
                raise TypeError(f"unknown StubConfig field {k!r}")
            setattr(cfg, k, v)
        if cfg.malformed is not None and cfg.malformed not in MALFORMED_KINDS:
            raise ValueError(f"malformed must be one of {MALFORMED_KINDS}, got {cfg.malformed!r}")
        self.cfg = cfg
        self.faults = FaultPlan(fault_specs(cfg), cfg.seed)
        self.host = host
        self.port = port
        self.tls = tls
        self.stats = StubStats()
        self.last_headers: dict[str, str] = {}
        self._server: asyncio.base_events.Server | None = None
        self._slots: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/v1"

    def reset(self) -> None:
        inflight, decoding = self.stats.inflight, self.stats.decoding
        self.stats = StubStats(inflight=inflight, decoding=decoding)

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(max(1, self.cfg.capacity))
        self._server = await asyncio.start_server(
            self._on_conn, self.host, self.port, backlog=4096, limit=1 << 20, ssl=self.tls
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def start_in_thread(self) -> StubServer:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # noqa: BLE001 - reported to the caller
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="stub-openai-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop_thread(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> StubServer:
        return self.start_in_thread()

    def __exit__(self, *exc: Any) -> None:
        self.stop_thread()

    # --- HTTP ------------------------------------------------------------------------------
    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                parts = line.decode("latin-1").split()
                if len(parts) < 2:
                    return
                method, target = parts[0].upper(), parts[1]
                headers: dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    body = await self._read_chunked(reader)
                else:
                    length = int(headers.get("content-length") or 0)
                    body = await reader.readexactly(length) if length else b""
                keep = headers.get("connection", "").lower() != "close"
                status, payload, *fault = await self._route(method, target.split("?", 1)[0], headers, body)
                extra, wire = fault if fault else ("", None)
                if wire == "reset":
                    reset(writer)
                    return
                if not keep:
                    extra += "connection: close\r\n"
                head = (
                    f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(payload)}\r\n{extra}\r\n"
                ).encode("latin-1")
                data, close = wire_bytes(wire, head, payload) if wire else (head + payload, False)
                writer.write(data)
                await writer.drain()
                self.stats.bytes_out += len(payload)
                if close or not keep or self.cfg.drop_keepalive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            return
        except asyncio.CancelledError:
            return
        finally:
            if task is not None:
                self._tasks.discard(task)
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - a closed transport
                pass

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        chunks = []
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readline()

    async def _route(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[Any, ...]:
        """``(status, payload)``, or for a chat request ``(status, payload, extra header lines, wire fault)``."""
        path = path.rstrip("/")
        if path in ("/v1/models", "/models") and method == "GET":
            self.stats.model_requests += 1
            self.last_headers = headers
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "stub"} for m in self.cfg.models]
            return 200, _json({"object": "list", "data": data})
        if path in ("/v1/chat/completions", "/chat/completions") and method == "POST":
            return await self._chat(headers, body)
        if path == "/stats" and method == "GET":
            return 200, _json(self.stats.summary() | {"records": self.stats.records})
        if path == "/stats/reset" and method == "POST":
            self.reset()
            return 200, b"{}"
        if path in ("/health", "/v1/health"):
            return 200, b"{}"
        return _error(404, f"no route {method} {path}")

    async def _chat(self, headers: dict[str, str], raw: bytes) -> tuple[int, bytes, str, str | None]:
        st = self.stats
        index = st.chat_requests
        st.chat_requests += 1
        st.bytes_in += len(raw)
        self.last_headers = headers
        t0 = time.perf_counter()
        st._tick(t0)
        st.inflight += 1
        st.max_inflight = max(st.max_inflight, st.inflight)
        record: dict[str, Any] = {"index": index, "bytes": len(raw), "t0": t0}
        st.records.append(record)
        fault = self.faults.pick(index) if self.faults else None
        extra, wire = "", None
        if fault is not None:
            st.injected += 1
            st.faults[fault] = st.faults.get(fault, 0) + 1
            record["fault"] = fault
        try:
            if fault == "hang":
                await asyncio.sleep(self.cfg.hang_s)
            if fault == "5xx":
                status, payload = _error(self.cfg.fail_status, f"injected failure (request {index})")
                if self.cfg.retry_after_ms is not None:
                    extra = f"retry-after-ms: {self.cfg.retry_after_ms:g}\r\n"
            elif fault == "429":
                status, payload = _error(429, f"injected rate limit (request {index})")
                extra = f"retry-after: {self.cfg.retry_after_s:g}\r\n"
            else:
                status, payload = await self._chat_inner(index, raw, record, fault)
                wire = fault if fault in WIRE_KINDS else None
        finally:
            t1 = time.perf_counter()
            st._tick(t1)
            st.inflight -= 1
            record["t1"] = t1
        record["status"] = status
        return status, payload, extra, wire

    async def _chat_inner(self, index: int, raw: bytes, record: dict[str, Any], fault: str | None = None) -> tuple[int, bytes]:
        st, cfg = self.stats, self.cfg
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("body is not an object")
        except ValueError as exc:
            return _error(400, f"invalid JSON body: {exc}")
        n = int(body.get("n") or 1)
        record.update(n=n, model=body.get("model"))
        if cfg.keep_bodies:
            record["body"] = body
        if body.get("model") not in cfg.models:
            return _error(404, f"The model `{body.get('model')}` does not exist.")
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return _error(400, "messages must be a non-empty list")
        rng = random.Random(f"{cfg.seed}:{index}")
        view = read_prompt(body)
        outs = [cfg.replies(body, i, rng) if cfg.replies else scripted_reply(view, i, rng) for i in range(n)]
        texts = [o[0] if isinstance(o, tuple) else o for o in outs]
        means = [o[1] if isinstance(o, tuple) else None for o in outs]
        if cfg.latency_s > 0:
            await asyncio.gather(*(self._decode(rng.uniform(1 - cfg.jitter, 1 + cfg.jitter) * cfg.latency_s) for _ in range(n)))
        stop = body.get("stop") or []
        stops = [stop] if isinstance(stop, str) else list(stop)
        choices, completion = [], 0
        for i, text in enumerate(texts):
            out, finish, stop_reason, tokens = finish_text(text, stops, body.get("max_tokens"))
            completion += tokens
            choices.append(
                {
                    "index": i,
                    "message": {"role": "assistant", "content": out, "tool_calls": []},
                    "logprobs": token_logprobs(out, means[i], f"{cfg.seed}:{index}:{i}") if body.get("logprobs") else None,
                    "finish_reason": finish,
                    "stop_reason": stop_reason,
                }
            )
            if not cfg.report_stop_reason:
                choices[-1].pop("stop_reason")
        st.choices += n
        reply: dict[str, Any] = {
            "id": f"chatcmpl-stub-{index}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": choices,
            "usage": {"prompt_tokens": view.prompt_tokens, "completion_tokens": completion, "total_tokens": view.prompt_tokens + completion},
        }
        payload = _json(reply)
        if fault in MALFORMED_KINDS:
            return 200, spoil(reply, fault, payload)
        return 200, payload

    async def _decode(self, seconds: float) -> None:
        assert self._slots is not None
        async with self._slots:
            st = self.stats
            st.decoding += 1
            st.max_decoding = max(st.max_decoding, st.decoding)
            try:
                await asyncio.sleep(seconds)
            finally:
                st.decoding -= 1


# --------------------------------------------------------------------------------------------
# CLI: python -m mcts_engine.testing.stub_server
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Stand-in OpenAI-compatible server (scripted replies, set capacity and latency).")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8011, help="0 picks a free port (printed, and written to --ready-file)")
    ap.add_argument("--model", action="append", dest="models", help="served model name (repeatable); default stub-model")
    ap.add_argument("--capacity", type=int, default=256, help="sequences decoded at once")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="per-choice decode time (holds one slot)")
    ap.add_argument("--jitter", type=float, default=0.0, help="latency × uniform(1-j, 1+j)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--faults", default="", help=f"fault plan, e.g. '5xx=10%%,hang=5%%,reset=2%%,malformed=5%%' or "
                    f"'429=first:3' (kinds: {', '.join(FAULT_KINDS)})")
    ap.add_argument("--fail-status", type=int, default=500, help="status of injected 5xx faults")
    ap.add_argument("--hang-s", type=float, default=30.0, help="how long an injected hang waits")
    ap.add_argument("--retry-after-s", type=float, default=1.0, help="Retry-After of injected 429 replies")
    ap.add_argument("--ready-file", default=None, help="write the bound port here once listening")
    args = ap.parse_args(argv)
    cfg = StubConfig(
        models=tuple(args.models or ["stub-model"]), capacity=args.capacity, latency_s=args.latency_ms / 1000.0,
        jitter=args.jitter, seed=args.seed, faults=args.faults, fail_status=args.fail_status, hang_s=args.hang_s,
        retry_after_s=args.retry_after_s,
    )
    try:
        server = StubServer(cfg, host=args.host, port=args.port)
    except ValueError as exc:
        raise SystemExit(f"stub_server: {exc}") from None

    serve_forever(server, args.ready_file, f"(capacity {cfg.capacity}, latency {args.latency_ms} ms)")


def serve_forever(server: StubServer, ready_file: str | None = None, note: str = "") -> None:
    """Run ``server`` as this process until Ctrl-C: print where it listens, write its port to ``ready_file``."""

    async def serve() -> None:
        await server.start()
        print(f"stub server listening on {server.url} {note}".rstrip(), flush=True)
        if ready_file:
            with open(ready_file, "w") as fh:
                fh.write(str(server.port))
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
