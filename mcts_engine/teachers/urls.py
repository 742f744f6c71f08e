"""Teacher server URLs: the list in ``teacher.base_url``, and the credentials a URL may carry.

A URL may name a user and password (``http://user:pass@gateway:8000/v1``, e.g. a vLLM server behind a
reverse proxy with Basic authentication). The engine strips them from the URL it connects to and sends
them as an ``Authorization: Basic …`` header instead (see :func:`split_credentials`); everything the
engine prints or stores — ``config.json``, the teacher's ``describe()``, error messages, the commands'
progress lines — shows :func:`public_url`, the URL without them. Pure functions, no imports beyond the
standard library (the config and the commands use them without loading the HTTP client).
"""

from __future__ import annotations

import base64
import functools
from urllib.parse import unquote, urlsplit, urlunsplit


def _netloc(host: str, port: int | None) -> str:
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"{host}:{port}" if port else host


@functools.lru_cache(maxsize=64)
def public_url(url: str) -> str:
    """``url`` without ``user:password@`` (safe to print, log and store). Every place that shows a
    teacher URL goes through this function."""
    try:
        parts = urlsplit(url)
        if "@" not in parts.netloc:
            return url
        port = parts.port
    except ValueError:  # an unparsable port: drop everything up to the last "@" all the same
        head, sep, rest = url.partition("://")
        return f"{head}{sep}{rest.rsplit('@', 1)[-1]}" if sep else url.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=_netloc(parts.hostname or "", port)))


def public_urls(base_url: str) -> str:
    """A comma-separated ``teacher.base_url`` with every URL's credentials stripped."""
    return ",".join(public_url(u.strip()) for u in base_url.split(",")) if "@" in base_url else base_url


def parse_base_urls(base_url: str) -> list[str]:
    """The servers of ``teacher.base_url`` (comma-separated), trailing slashes dropped; ValueError when empty."""
    urls = [u.strip().rstrip("/") for u in base_url.split(",") if u.strip()]
    if not urls:
        raise ValueError("teacher.base_url is empty: pass --base-url http://HOST:PORT/v1")
    for u in urls:
        parts = urlsplit(u)
        try:
            _ = parts.port  # raises ValueError when the port is not a number
        except ValueError:
            raise ValueError(f"teacher.base_url {public_url(u)!r}: the port is not a number") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"teacher.base_url {public_url(u)!r}: expected http(s)://HOST[:PORT]/PATH")
    return urls


def split_credentials(url: str) -> tuple[str, str | None]:
    """``(url without credentials, "Basic …" header value or None)``.

    The user and password are percent-decoded (``p%40ss`` → ``p@ss``) and sent as HTTP Basic
    authentication (RFC 7617: ``base64(user ":" password)``, UTF-8)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return public_url(url), f"Basic {token}"
