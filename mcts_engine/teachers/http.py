"""The teacher's HTTP transport: one ``aiohttp`` client session, one POST with timeouts, one-line failures.

What the session does (and why it is ``aiohttp``: ≈ 0.17 ms of CPU per request at 64 in flight here,
where ``httpx`` costs ≈ 2.5 ms; it parses HTTP/1.1 properly — keep-alive, chunked bodies, interim ``1xx``
replies, bytes a server sends beyond ``Content-Length`` — and speaks TLS and HTTP proxies itself):

- **Keep-alive pool** sized to the teacher's concurrency (``TCPConnector(limit=concurrency)``); an idle
  connection is kept :data:`KEEPALIVE_S` seconds (vLLM's uvicorn closes idle ones after 5 s, so the client
  lets go first instead of racing the server's close).
- **TLS**: the system's trusted CAs (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` honoured, read when the teacher is
  built) plus ``teacher.ca_file`` when set (a PEM bundle, e.g. the CA of a self-signed gateway).
- **Proxies**: ``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``NO_PROXY`` from the environment (``trust_env``); a SOCKS
  proxy (``socks5://`` / ``socks4://`` in ``ALL_PROXY`` or the scheme's variable) goes through the optional
  ``aiohttp-socks`` package (``pip install 'mcts-engine[socks]'``); without it the teacher refuses to start
  with one line naming the extra.
- **Timeouts**: ``timeout_s`` bounds a whole request (connect, send, the server's work, the reply);
  connecting alone is bounded by ``min(timeout_s, 10)`` seconds.
- **Failures** become :class:`RequestFailed` with a kind (``timeout`` | ``connect`` | ``protocol``) and a
  one-line message that names the server without credentials (the session never sees them: they are
  stripped from the URL and sent as a header, see ``urls.py``).

A reply is returned whatever its status; whether to retry is decided by ``retry.py``.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from .urls import public_url

KEEPALIVE_S = 4.0  # reuse an idle connection only this long (uvicorn closes idle ones after 5 s)
CONNECT_TIMEOUT_S = 10.0
SOCKS_EXTRA = "pip install 'mcts-engine[socks]'  (the aiohttp-socks package)"


class RequestFailed(Exception):
    """An attempt that got no complete HTTP reply. ``kind``: ``timeout`` | ``connect`` | ``protocol``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class TransportConfigError(ValueError):
    """The transport cannot be built as configured (CA file, SOCKS without its extra): one line."""


def one_line(text: object, limit: int = 300) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """The system's trusted CAs (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` honoured) plus ``ca_file``, if set."""
    ctx = ssl.create_default_context()
    if ca_file:
        path = Path(ca_file).expanduser()
        if not path.is_file():
            raise TransportConfigError(f"teacher.ca_file {ca_file}: no such file")
        try:
            ctx.load_verify_locations(cafile=str(path))
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise TransportConfigError(f"teacher.ca_file {ca_file}: not a PEM certificate bundle ({one_line(exc, 120)})") from None
    return ctx


def env_proxy(url: str) -> str | None:
    """The proxy the environment sets for ``url`` (the scheme's ``*_PROXY``, else ``ALL_PROXY``; None
    when ``NO_PROXY`` bypasses the host or none is set)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


def socks_proxy(url: str) -> str | None:
    """The SOCKS proxy the environment sets for ``url``, or None (no proxy, or an HTTP one)."""
    proxy = env_proxy(url)
    return proxy if proxy and urlsplit(proxy).scheme.lower().startswith("socks") else None


def _socks_missing(proxy: str) -> str:
    return f"the environment sets a SOCKS proxy ({public_url(proxy)}) for the teacher; SOCKS needs an extra: {SOCKS_EXTRA}"


def _socks_connector(proxy: str, limit: int, ctx: ssl.SSLContext | None) -> Any:
    try:
        from aiohttp_socks import ProxyConnector
    except ImportError:
        raise TransportConfigError(_socks_missing(proxy)) from None
    kw: dict[str, Any] = {"limit": limit, "keepalive_timeout": KEEPALIVE_S}
    if ctx is not None:
        kw["ssl"] = ctx
    return ProxyConnector.from_url(proxy, rdns=True, **kw)


class HTTPTransport:
    """POST bytes to the teacher's servers over one ``aiohttp`` session (see the module docstring).

    Built (and checked: CA file, SOCKS extra) eagerly, bound to an event loop lazily: the session is made
    on the first request in a running loop and rebuilt when a later call runs in another loop.
    ``urls`` are the servers WITHOUT credentials."""

    def __init__(self, urls: list[str], concurrency: int, timeout_s: float, ca_file: str | None = None) -> None:
        if timeout_s <= 0:
            raise TransportConfigError(f"teacher.timeout_s must be > 0, got {timeout_s:g}")
        self.urls = urls
        self.limit = max(1, concurrency)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(timeout_s, CONNECT_TIMEOUT_S))
        self.timeout_s = timeout_s
        self._ssl = ssl_context(ca_file) if (ca_file or any(u.startswith("https:") for u in urls)) else None
        self._socks = [socks_proxy(u) for u in urls]
        for proxy in {p for p in self._socks if p}:
            self._check_socks(proxy)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sessions: list[aiohttp.ClientSession] = []  # per server: the session that reaches it
        self._own: list[aiohttp.ClientSession] = []  # distinct sessions (closed by aclose)

    @staticmethod
    def _check_socks(proxy: str) -> None:
        try:
            import aiohttp_socks  # noqa: F401
        except ImportError:
            raise TransportConfigError(_socks_missing(proxy)) from None

    def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        self._drop()
        by_route: dict[str | None, aiohttp.ClientSession] = {}
        sessions = []
        for proxy in self._socks:
            session = by_route.get(proxy)
            if session is None:
                if proxy:
                    connector = _socks_connector(proxy, self.limit, self._ssl)
                else:
                    connector = aiohttp.TCPConnector(
                        limit=self.limit, keepalive_timeout=KEEPALIVE_S, ssl=self._ssl if self._ssl is not None else True
                    )
                # SOCKS routes carry their proxy in the connector; plain ones take HTTP(S)_PROXY from the env
                session = by_route[proxy] = aiohttp.ClientSession(
                    connector=connector, timeout=self.timeout, trust_env=proxy is None, auto_decompress=True
                )
            sessions.append(session)
        self._sessions = sessions
        self._own = list(by_route.values())
        self._loop = loop

    def _drop(self) -> None:
        """Forget sessions of a finished event loop (their sockets closed with it)."""
        own, self._own, self._sessions, self._loop = self._own, [], [], None
        for s in own:
            try:
                if not s.closed and s.connector is not None:
                    s.connector._close()  # type: ignore[attr-defined]  # no loop left to await close() in
            except Exception:  # noqa: BLE001 - a transport whose loop is closed
                pass
            s._connector = None  # type: ignore[attr-defined]  # closed above; silences the unclosed warning

    async def post(self, i: int, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, Mapping[str, str], bytes]:
        """POST ``body`` to ``url`` (server ``i``): ``(status, headers, body)`` of the complete reply, or
        :class:`RequestFailed`. Reply headers are case-insensitive."""
        self._bind()
        try:
            async with self._sessions[i].post(url, data=body, headers=headers) as resp:
                return resp.status, resp.headers, await resp.read()
        except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _failure(exc, url, self.timeout_s) from None

    async def get(self, i: int, url: str, headers: Mapping[str, str], timeout_s: float) -> tuple[int, Mapping[str, str], bytes]:
        """GET ``url`` (server ``i``) within ``min(timeout_s, teacher.timeout_s)`` seconds; as :meth:`post`."""
        self._bind()
        t = min(timeout_s, self.timeout_s)
        timeout = aiohttp.ClientTimeout(total=t, sock_connect=min(t, CONNECT_TIMEOUT_S))
        try:
            async with self._sessions[i].get(url, headers=headers, timeout=timeout) as resp:
                return resp.status, resp.headers, await resp.read()
        except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _failure(exc, url, t) from None

    async def aclose(self) -> None:
        own, self._own, self._sessions = self._own, [], []
        loop, self._loop = self._loop, None
        running = asyncio.get_running_loop()
        for s in own:
            if loop is running:
                await s.close()
        if loop is not running:
            self._own = own
            self._drop()


def _failure(exc: BaseException, url: str, timeout_s: float) -> RequestFailed:
    """One attempt's failure as a kind and one line naming the server (never its credentials)."""
    where = public_url(url)
    cause = one_line(exc, 200) or type(exc).__name__
    if isinstance(exc, asyncio.TimeoutError):
        return RequestFailed("timeout", f"request to {where} timed out after {timeout_s:g}s")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return RequestFailed("protocol", f"reply from {where} cut short ({cause})")
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, OSError)):
        return RequestFailed("connect", f"cannot reach {where}: {cause}")
    return RequestFailed("protocol", f"bad reply from {where}: {cause}")  # e.g. an unparsable status line


__all__ = ["HTTPTransport", "RequestFailed", "TransportConfigError", "env_proxy", "socks_proxy", "ssl_context"]
