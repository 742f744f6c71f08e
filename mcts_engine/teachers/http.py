"""The teacher's HTTP transport: one ``aiohttp`` client session, one POST with timeouts, one-line failures.

What the session does (and why it is ``aiohttp``: ≈ 0.17 ms of CPU per request at 64 in flight here,
where ``httpx`` costs ≈ 2.5 ms; it parses HTTP/1.1 properly — keep-alive, chunked bodies, interim ``1xx``
replies, bytes a server sends beyond ``Content-Length`` — and speaks TLS and HTTP proxies itself):

- **Keep-alive pool** sized to the teacher's concurrency (``TCPConnector(limit=concurrency)``); an idle
  connection is kept :data:`KEEPALIVE_S` seconds (vLLM's uvicorn closes idle ones after 5 s, so the client
  lets go first instead of racing the server's close).
- **TLS**: the system's trusted CAs (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` honoured, read when the teacher is
  built) plus ``teacher.ca_file`` when set (a PEM bundle, e.g. the CA of a self-signed gateway).
- **Proxies** from the environment, resolved once per server when the transport is built (the scheme's
  ``HTTP_PROXY`` / ``HTTPS_PROXY``, else ``ALL_PROXY``; ``NO_PROXY`` bypasses): an HTTP proxy is passed to
  each request; a SOCKS proxy (``socks5://`` / ``socks4://``) goes through the optional ``aiohttp-socks``
  package (``pip install 'mcts-engine[socks]'``); without it the teacher refuses to start with one line
  naming the extra. (Not aiohttp's ``trust_env``: it looks the environment and ``~/.netrc`` up again on a
  worker thread for every request — ≈ 0.1 ms of CPU per choice in ``bench_generate.py`` — and ignores
  ``ALL_PROXY``.)
- **The keep-alive race**: a request whose connection turns out closed before any reply byte (see
  :func:`_stale`) is sent once more at once; every other failure is left to the retry rules.
- **No cookies** (``DummyCookieJar``): an API server sets none worth keeping, and filtering a jar costs
  CPU on every request.
- **Timeouts**: ``timeout_s`` bounds a whole request (connect, send, the server's work, the reply);
  connecting alone is bounded by ``min(timeout_s, 10)`` seconds.
- **Failures** become :class:`RequestFailed` with a kind (``timeout`` | ``connect`` | ``protocol``) and a
  one-line message that names the server without credentials (the session never sees them: they are
  stripped from the URL and sent as a header, see ``urls.py``).

A reply is returned whatever its status; whether to retry is decided by ``retry.py``.
"""

from __future__ import annotations

import asyncio
import errno
import ssl
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
from multidict import CIMultiDict
from yarl import URL

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


def is_socks(proxy: str | None) -> bool:
    return proxy is not None and urlsplit(proxy).scheme.lower().startswith("socks")


def _socks_connector_class(proxy: str) -> Any:
    try:
        from aiohttp_socks import ProxyConnector
    except ImportError:
        raise TransportConfigError(
            f"the environment sets a SOCKS proxy ({public_url(proxy)}) for the teacher; SOCKS needs an extra: {SOCKS_EXTRA}"
        ) from None
    return ProxyConnector


def _http_proxy(proxy: str) -> tuple[str, aiohttp.BasicAuth | None]:
    """An HTTP proxy URL without its credentials, and them as Basic auth for the proxy."""
    auth_url = urlsplit(proxy)
    auth = aiohttp.BasicAuth(unquote(auth_url.username or ""), unquote(auth_url.password or "")) if auth_url.username else None
    return public_url(proxy), auth


class HTTPTransport:
    """POST bytes to the teacher's servers over one ``aiohttp`` session (see the module docstring).

    Built (and checked: CA file, SOCKS extra) eagerly, bound to an event loop lazily: the session is made
    on the first request in a running loop and rebuilt when a later call runs in another loop.
    ``urls`` are the servers WITHOUT credentials; ``headers[i]`` go with every request to server ``i``.
    Request URLs and headers are built once (``yarl.URL``, ``CIMultiDict``), not per request."""

    def __init__(
        self, urls: list[str], headers: list[dict[str, str]], concurrency: int, timeout_s: float, ca_file: str | None = None
    ) -> None:
        if timeout_s <= 0:
            raise TransportConfigError(f"teacher.timeout_s must be > 0, got {timeout_s:g}")
        self.urls = urls
        self._headers = [CIMultiDict(h) for h in headers]
        self._targets: dict[tuple[int, str], URL] = {}
        self.limit = max(1, concurrency)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(timeout_s, CONNECT_TIMEOUT_S))
        self.timeout_s = timeout_s
        self._ssl = ssl_context(ca_file) if (ca_file or any(u.startswith("https:") for u in urls)) else None
        proxies = [env_proxy(u) for u in urls]
        self._socks = [p if is_socks(p) else None for p in proxies]  # per server: its SOCKS proxy, or None
        for proxy in {p for p in self._socks if p}:
            _socks_connector_class(proxy)  # the extra is there, or one line now
        # per server: the keyword arguments of its requests (an HTTP proxy and its credentials)
        self._kw: list[dict[str, Any]] = []
        for p in proxies:
            proxy, auth = _http_proxy(p) if p and not is_socks(p) else (None, None)
            self._kw.append({"proxy": proxy, "proxy_auth": auth} if proxy else {})
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sessions: list[aiohttp.ClientSession] = []  # per server: the session that reaches it
        self._own: list[aiohttp.ClientSession] = []  # distinct sessions (closed by aclose)

    def route(self, i: int) -> tuple[ssl.SSLContext | bool, str | None, str | None]:
        """Server ``i``'s TLS verification, HTTP proxy URL (with its credentials) and SOCKS proxy: what a second
        client (the ``openai`` SDK's, for ``check()``) needs to reach it the way the requests do."""
        kw = self._kw[i]
        proxy = None
        if kw.get("proxy"):
            auth = kw.get("proxy_auth")
            proxy = str(URL(kw["proxy"]).with_user(auth.login).with_password(auth.password)) if auth else kw["proxy"]
        return (self._ssl if self._ssl is not None else True), proxy, self._socks[i]

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
                kw: dict[str, Any] = {"limit": self.limit, "keepalive_timeout": KEEPALIVE_S}
                kw["ssl"] = self._ssl if self._ssl is not None else True
                if proxy:  # the SOCKS proxy lives in the connector
                    connector = _socks_connector_class(proxy).from_url(proxy, rdns=True, **kw)
                else:
                    connector = aiohttp.TCPConnector(**kw)
                session = by_route[proxy] = aiohttp.ClientSession(
                    connector=connector, timeout=self.timeout, cookie_jar=aiohttp.DummyCookieJar()
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
                    s.connector._close()  # type: ignore[attr-defined]  # close()'s synchronous half: no loop to await in
            except Exception:  # noqa: BLE001 - a transport whose loop is closed
                pass

    def _target(self, i: int, path: str) -> URL:
        url = self._targets.get((i, path))
        if url is None:
            url = self._targets[(i, path)] = URL(self.urls[i] + path)
        return url

    async def post(self, i: int, path: str, body: bytes) -> tuple[int, Mapping[str, str], bytes]:
        """POST ``body`` to server ``i``'s ``path``: ``(status, headers, body)`` of the complete reply, or
        :class:`RequestFailed`. Reply headers are case-insensitive."""
        self._bind()
        url = self._target(i, path)
        for again in (True, False):
            try:
                async with self._sessions[i].post(url, data=body, headers=self._headers[i], **self._kw[i]) as resp:
                    return resp.status, resp.headers, await resp.read()
            except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as exc:
                if again and _stale(exc):
                    continue  # a kept-alive connection the server had closed: once more, not counted as a retry
                raise _failure(exc, url, self.timeout_s) from None
        raise AssertionError("unreachable")

    async def get(self, i: int, path: str, timeout_s: float) -> tuple[int, Mapping[str, str], bytes]:
        """GET server ``i``'s ``path`` within ``min(timeout_s, teacher.timeout_s)`` seconds; as :meth:`post`."""
        self._bind()
        url = self._target(i, path)
        t = min(timeout_s, self.timeout_s)
        timeout = aiohttp.ClientTimeout(total=t, sock_connect=min(t, CONNECT_TIMEOUT_S))
        try:
            async with self._sessions[i].get(url, headers=self._headers[i], timeout=timeout, **self._kw[i]) as resp:
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


def _stale(exc: BaseException) -> bool:
    """Whether the connection was gone before any byte of a reply came back: the request could not be
    written, or the connection closed or was reset with no reply. On a kept-alive connection that is the
    keep-alive race (the server closed it between two requests); the request is then sent once more at
    once, not counted as a retry (RFC 9112 §9.3.1; re-asking a completion has no side effect). aiohttp
    does not say whether the connection was a reused one, so a fresh connection reset by the server gets
    the same one extra try before the retry rules take over. Timeouts, refused connections and bodies cut
    short are never this."""
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return True
    if not isinstance(exc, aiohttp.ClientOSError) or isinstance(exc, aiohttp.ClientConnectorError):
        return False
    return exc.errno in (errno.ECONNRESET, errno.EPIPE) or "Can not write request body" in str(exc)


def _failure(exc: BaseException, url: URL, timeout_s: float) -> RequestFailed:
    """One attempt's failure as a kind and one line naming the server (never its credentials)."""
    where = public_url(str(url))
    cause = one_line(exc, 200) or type(exc).__name__
    if isinstance(exc, asyncio.TimeoutError):
        return RequestFailed("timeout", f"request to {where} timed out after {timeout_s:g}s")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return RequestFailed("protocol", f"reply from {where} cut short ({cause})")
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, OSError)):
        return RequestFailed("connect", f"cannot reach {where}: {cause}")
    return RequestFailed("protocol", f"bad reply from {where}: {cause}")  # e.g. an unparsable status line


__all__ = ["HTTPTransport", "RequestFailed", "TransportConfigError", "env_proxy", "ssl_context"]
