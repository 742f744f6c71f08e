"""Fault injection for the stand-in server: which chat request misbehaves, and how.

A **fault plan** is a list of :class:`FaultSpec` — a kind, and either a rate (each chat request draws it
with that probability, from a generator seeded by the server's seed and the request's index, so a run is
reproducible) or ``first = K`` (the first K chat requests; several such specs take consecutive ranges in
the order given). Rates add up to at most 1; a mix is e.g.
``parse_faults("5xx=10%,hang=5%,reset=2%,malformed=5%")``.

Kinds (:data:`FAULT_KINDS`):

- ``5xx`` — an error status (``StubConfig.fail_status``, 500 by default) with an OpenAI-style error body.
- ``429`` — ``429 Too Many Requests`` with ``Retry-After: StubConfig.retry_after_s`` (seconds).
- ``hang`` — the reply waits ``StubConfig.hang_s`` before it is computed (past a client's timeout).
- ``reset`` — the connection is reset (TCP RST) instead of a reply.
- ``not_json``, ``no_choices``, ``no_content``, ``too_few`` (one choice fewer than ``n``), ``wrong_count``
  (one more): a 200 reply the client cannot use. ``malformed`` picks one of these four-plus-one per request.
- ``extra_bytes`` — the reply, then a complete forged second reply on the same connection (bytes beyond
  ``Content-Length``) that no request asked for: its text is :data:`FORGED`.
- ``interim_1xx`` — a ``103 Early Hints`` interim reply before the real one.
- ``cut_chunked`` — a ``Transfer-Encoding: chunked`` reply cut after its first chunk (the connection
  closes without the final zero-size chunk).
"""

from __future__ import annotations

import json
import random
import socket
import struct
from dataclasses import dataclass
from typing import Any

MALFORMED_KINDS = ("not_json", "no_choices", "no_content", "too_few", "wrong_count")
WIRE_KINDS = ("reset", "extra_bytes", "interim_1xx", "cut_chunked")
FAULT_KINDS = ("5xx", "429", "hang") + MALFORMED_KINDS + WIRE_KINDS + ("malformed",)
FORGED = "FORGED-REPLY-NOBODY-ASKED-FOR"


@dataclass(frozen=True)
class FaultSpec:
    kind: str
    rate: float = 0.0  # probability per chat request
    first: int = 0  # or: the first K chat requests (after earlier specs' ranges)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {self.kind!r}: expected one of {', '.join(FAULT_KINDS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault {self.kind}: rate {self.rate} is not within 0..1")
        if self.first < 0:
            raise ValueError(f"fault {self.kind}: first {self.first} is negative")


def parse_faults(text: str) -> tuple[FaultSpec, ...]:
    """``"5xx=10%,hang=0.05,reset=first:3"`` → specs: ``KIND=RATE`` (a fraction or ``N%``) or
    ``KIND=first:K``. Empty text → no faults. ValueError (one line) for anything else."""
    specs = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        kind, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not value:
            raise ValueError(f"fault {item!r}: expected KIND=RATE or KIND=first:K")
        try:
            if value.startswith("first:"):
                specs.append(FaultSpec(kind, first=int(value[6:])))
            elif value.endswith("%"):
                specs.append(FaultSpec(kind, rate=float(value[:-1]) / 100.0))
            else:
                specs.append(FaultSpec(kind, rate=float(value)))
        except ValueError as exc:
            raise ValueError(f"fault {item!r}: {exc}") from None
    return tuple(specs)


class FaultPlan:
    """Decides each chat request's fault (or none) from its index alone: reproducible, order-free."""

    def __init__(self, specs: tuple[FaultSpec, ...] | list[FaultSpec], seed: int = 0) -> None:
        self.specs = tuple(specs)
        self.seed = seed
        total = sum(s.rate for s in self.specs)
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault rates add up to {total:g} > 1")
        self._ranges: list[tuple[int, str]] = []  # (end index, kind) of the first-K specs, in order
        end = 0
        for s in self.specs:
            if s.first:
                end += s.first
                self._ranges.append((end, s.kind))
        self._rates = [(s.kind, s.rate) for s in self.specs if s.rate > 0]

    def __bool__(self) -> bool:
        return bool(self._ranges or self._rates)

    def pick(self, index: int) -> str | None:
        """The fault of chat request ``index`` (0-based), ``malformed`` resolved to one concrete kind."""
        kind = None
        for end, k in self._ranges:
            if index < end:
                kind = k
                break
        rng = random.Random(f"{self.seed}:fault:{index}")
        if kind is None and self._rates:
            u, acc = rng.random(), 0.0
            for k, rate in self._rates:
                acc += rate
                if u < acc:
                    kind = k
                    break
        if kind == "malformed":
            kind = rng.choice(MALFORMED_KINDS)
        return kind


def spoil(reply: dict[str, Any], kind: str, payload: bytes) -> bytes:
    """The body of a malformed reply of ``kind`` (``reply`` is the good reply, ``payload`` its JSON)."""
    if kind == "not_json":
        return payload[: max(1, len(payload) // 3)]
    reply = dict(reply)
    choices = [dict(c, message=dict(c["message"])) for c in reply.get("choices", [])]
    if kind == "no_choices":
        reply.pop("choices", None)
    elif kind == "no_content":
        for c in choices:
            c["message"].pop("content", None)
        reply["choices"] = choices
    elif kind == "too_few":
        reply["choices"] = choices[:-1]
    elif kind == "wrong_count":
        reply["choices"] = choices + [dict(choices[0], index=len(choices))] if choices else choices
    return json.dumps(reply, separators=(",", ":")).encode()


def forged_reply() -> bytes:
    """A complete, well-formed HTTP reply nobody asked for (sent beyond a reply's ``Content-Length``)."""
    body = json.dumps({
        "id": "chatcmpl-forged", "object": "chat.completion", "model": "stub-model",
        "choices": [{"index": i, "message": {"role": "assistant", "content": f"<answer> {FORGED} </answer>"},
                     "finish_reason": "stop"} for i in range(8)],
    }).encode()
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


def reset(writer: Any) -> None:
    """Drop the connection with a TCP RST (SO_LINGER 0), not a clean FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


def wire_bytes(kind: str, head: bytes, payload: bytes) -> tuple[bytes, bool]:
    """What goes on the wire for a wire-level fault: ``(bytes, close after)``. ``head`` is the status line
    and headers of the good reply (with its ``content-length``), ``payload`` its body."""
    if kind == "extra_bytes":
        return head + payload + forged_reply(), False
    if kind == "interim_1xx":
        return b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n" + head + payload, False
    if kind == "cut_chunked":
        status_line, _, rest = head.partition(b"\r\n")
        kept = [h for h in rest.split(b"\r\n") if h and not h.lower().startswith(b"content-length")]
        chunked_head = b"\r\n".join([status_line, *kept, b"transfer-encoding: chunked", b"", b""])
        half = payload[: max(1, len(payload) // 2)]
        return chunked_head + b"%x\r\n%s\r\n" % (len(half), half), True
    raise ValueError(f"not a wire-level fault: {kind}")
