"""When a teacher request is retried, and how long to wait first (pure: no I/O, no clock of its own).

The rules are the ones the ``openai`` Python SDK documents for its own client ("Retries": connection
errors, 408 Request Timeout, 409 Conflict, 429 Rate Limit and ≥ 500 Internal errors are retried, by default
twice, with a short exponential backoff), written out here so the engine owns them:

1. **Budget.** A request is sent at most ``1 + max_retries`` times.
2. **What is retried.** No response at all (connection refused or reset, timeout, a body cut short) and
   a reply the engine cannot use (:data:`MALFORMED`: not JSON, no ``choices``, a choice without content,
   fewer choices than ``n``) are always retried. An HTTP status is retried when it is 408, 409, 429 or
   ≥ 500 — unless the server says otherwise with ``x-should-retry: true`` / ``false`` (that header wins
   over the status list).
3. **A server-named wait.** ``retry-after-ms`` (milliseconds), else ``retry-after`` (seconds, or an
   HTTP-date): a wait in ``(0, MAX_RETRY_AFTER_S]`` is used as is; a wait longer than
   :data:`MAX_RETRY_AFTER_S` (two minutes) means "do not retry" (a search waiting minutes for one
   expansion stalls every tree behind it); zero, negative or unreadable values fall back to backoff.
4. **Backoff.** Otherwise ``min(INITIAL_RETRY_DELAY · 2^k, MAX_RETRY_DELAY) · (1 − 0.25 · u)`` seconds
   before retry ``k + 1`` (``k`` = retries already taken, ``u`` uniform in [0, 1)): 0.5, 1, 2, 4, 8, 8 …
   seconds, each shortened by up to 25 % of jitter so that requests that failed together do not come back
   together.

:func:`retry_delay` is the one decision: seconds to wait, or ``None`` to give up.
"""

from __future__ import annotations

import email.utils
import math
import random
from collections.abc import Callable, Mapping

INITIAL_RETRY_DELAY = 0.5  # s, before the first retry
MAX_RETRY_DELAY = 8.0  # s, the backoff's ceiling
MAX_RETRY_AFTER_S = 120.0  # s: a longer server-named wait is not waited for (the request fails)
JITTER = 0.25  # the backoff is shortened by up to this fraction
RETRY_STATUSES = frozenset({408, 409, 429})  # plus every status ≥ 500

NO_RESPONSE = 0  # ``status`` for a request that got no complete HTTP response
MALFORMED = -1  # ``status`` for a complete 2xx reply the engine cannot use


def parse_retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds the server asks to wait, from ``retry-after-ms`` or ``retry-after`` (seconds or an
    HTTP-date, relative to ``now``, a Unix time); None when neither is present or readable.
    ``headers`` keys are lower case."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            continue
        if math.isnan(value):
            continue
        return value / scale
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return when.timestamp() - now


def should_retry(status: int, headers: Mapping[str, str]) -> bool:
    """Whether a failed attempt may be retried at all (rule 2), budget aside."""
    if status in (NO_RESPONSE, MALFORMED):
        return True
    said = headers.get("x-should-retry")
    if said == "true":
        return True
    if said == "false":
        return False
    return status in RETRY_STATUSES or status >= 500


def backoff(retries_taken: int, u: float) -> float:
    """Rule 4: the exponential backoff before retry ``retries_taken + 1``, with jitter ``u`` ∈ [0, 1)."""
    base = min(INITIAL_RETRY_DELAY * 2.0 ** min(retries_taken, 64), MAX_RETRY_DELAY)
    return base * (1.0 - JITTER * u)


def retry_delay(
    retries_taken: int,
    max_retries: int,
    status: int = NO_RESPONSE,
    headers: Mapping[str, str] | None = None,
    *,
    now: float = 0.0,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait before the next attempt, or None to give up (the module docstring's rules).

    ``retries_taken``: retries already made for this request (0 after the first attempt failed).
    ``status``: the HTTP status of the failed attempt, :data:`NO_RESPONSE` or :data:`MALFORMED`.
    ``headers``: the failed reply's headers, keys lower case. ``now``: the Unix time, only read for a
    ``retry-after`` HTTP-date."""
    if retries_taken >= max_retries:
        return None
    h = headers or {}
    if not should_retry(status, h):
        return None
    after = parse_retry_after(h, now) if h else None
    if after is not None and math.isfinite(after) and 0 < after <= MAX_RETRY_AFTER_S:
        return after
    if after is not None and after > MAX_RETRY_AFTER_S:
        return None
    return backoff(retries_taken, rand())
