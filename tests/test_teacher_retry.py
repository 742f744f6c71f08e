"""The retry rules (``teachers/retry.py``), table-tested against what the ``openai`` SDK documents."""

from __future__ import annotations

import email.utils
import random

import pytest

from mcts_engine.teachers.retry import (
    INITIAL_RETRY_DELAY,
    MALFORMED,
    MAX_RETRY_AFTER_S,
    MAX_RETRY_DELAY,
    NO_RESPONSE,
    backoff,
    parse_retry_after,
    retry_delay,
    should_retry,
)

NOW = 1_800_000_000.0


def test_the_documented_constants():
    # openai-python README, "Retries": short exponential backoff; its client: 0.5 s initial, 8 s max, 2 min cap
    assert (INITIAL_RETRY_DELAY, MAX_RETRY_DELAY, MAX_RETRY_AFTER_S) == (0.5, 8.0, 120.0)


@pytest.mark.parametrize(
    "status,retried",
    [(NO_RESPONSE, True), (MALFORMED, True), (400, False), (401, False), (403, False), (404, False), (408, True),
     (409, True), (422, False), (429, True), (500, True), (502, True), (503, True), (504, True), (599, True)],
)
def test_which_statuses_are_retried(status, retried):
    assert should_retry(status, {}) is retried
    assert (retry_delay(0, 3, status, {}, now=NOW) is not None) is retried


@pytest.mark.parametrize("status", [400, 404, 422, 500, 503])
def test_x_should_retry_wins_over_the_status(status):
    assert should_retry(status, {"x-should-retry": "true"}) is True
    assert should_retry(status, {"x-should-retry": "false"}) is False
    assert retry_delay(0, 3, status, {"x-should-retry": "false"}, now=NOW) is None
    assert retry_delay(0, 3, status, {"x-should-retry": "true"}, now=NOW) is not None
    assert should_retry(status, {"x-should-retry": "maybe"}) is (status >= 500)  # other values: the status decides


@pytest.mark.parametrize(
    "headers,expected",
    [
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),  # non-standard fractional seconds, as the SDK accepts
        ({"retry-after-ms": "20", "retry-after": "9"}, 0.02),  # milliseconds first
        ({"retry-after-ms": "soon", "retry-after": "2"}, 2.0),  # unreadable ms: seconds next
        ({"retry-after": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0),  # an HTTP-date
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, NOW),  # in the past: negative (see below)
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers, expected):
    got = parse_retry_after(headers, NOW)
    if expected is NOW:
        assert got is not None and got < 0
    elif expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "headers,wait",
    [
        ({"retry-after-ms": "20"}, 0.02),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "120"}, 120.0),  # the cap itself is waited
        ({"retry-after": email.utils.formatdate(NOW + 60, usegmt=True)}, 60.0),
    ],
)
def test_a_server_named_wait_within_the_cap_is_used_as_is(headers, wait):
    for status in (429, 503):
        assert retry_delay(0, 3, status, headers, now=NOW, rand=lambda: 0.9) == pytest.approx(wait, abs=1e-6)


@pytest.mark.parametrize("headers", [{"retry-after": "121"}, {"retry-after-ms": "600000"}, {"retry-after": "inf"},
                                     {"retry-after": "600", "x-should-retry": "true"}])
def test_a_wait_past_the_cap_means_give_up(headers):
    assert retry_delay(0, 3, 429, headers, now=NOW) is None


@pytest.mark.parametrize("headers", [{"retry-after": "0"}, {"retry-after-ms": "-5"}, {"retry-after": "soon"},
                                     {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}])
def test_zero_negative_or_unreadable_waits_fall_back_to_backoff(headers):
    assert retry_delay(1, 3, 503, headers, now=NOW, rand=lambda: 0.0) == pytest.approx(1.0)


def test_backoff_doubles_from_half_a_second_to_eight_with_up_to_a_quarter_of_jitter():
    assert [backoff(k, 0.0) for k in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert [backoff(k, 0.999999) for k in range(5)] == pytest.approx([0.375, 0.75, 1.5, 3.0, 6.0], rel=1e-5)
    rng = random.Random(0)
    for k in range(12):
        for _ in range(50):
            d = retry_delay(k, 100, NO_RESPONSE, None, rand=rng.random)
            top = min(0.5 * 2**k, 8.0)
            assert 0.75 * top <= d <= top
    assert backoff(10_000, 0.0) == 8.0  # no overflow


def test_the_budget_is_max_retries():
    assert [retry_delay(k, 3, 500, {}) is not None for k in range(5)] == [True, True, True, False, False]
    assert retry_delay(0, 0, 500, {}) is None  # max_retries 0: one attempt only
    assert retry_delay(3, 3, 500, {"x-should-retry": "true"}) is None  # the header cannot extend the budget


def test_agrees_with_the_installed_sdk_client_where_it_can_be_asked(monkeypatch):
    """Cross-check with the SDK's own request loop (its private methods, asked here only, never in the
    engine), with both jitters fixed. Skipped when the installed SDK has no such methods in this shape."""
    openai = pytest.importorskip("openai")
    base = pytest.importorskip("openai._base_client")
    httpx = getattr(base, "httpx2", None) or getattr(base, "httpx", None)
    try:
        from openai._models import FinalRequestOptions

        client = openai.AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="k", max_retries=3)
        options = FinalRequestOptions.construct(method="post", url="x", max_retries=3)
        should, timeout = client._should_retry, client._calculate_retry_timeout
    except (ImportError, AttributeError):
        pytest.skip("this openai version has no such retry methods")
    if httpx is None or not hasattr(base, "random"):
        pytest.skip("this openai version draws its jitter elsewhere")
    monkeypatch.setattr(base, "random", lambda: 0.5)
    cases = [(s, h) for s in (400, 404, 408, 409, 422, 429, 500, 503)
             for h in ({}, {"retry-after-ms": "20"}, {"retry-after": "3"}, {"retry-after": "600"}, {"retry-after": "0"},
                       {"x-should-retry": "false"}, {"x-should-retry": "true"}, {"retry-after": "soon"})]
    for status, headers in cases:
        response = httpx.Response(status, headers=headers)
        for k in range(3):
            ours = retry_delay(k, 3, status, headers, now=NOW, rand=lambda: 0.5)
            try:
                theirs = timeout(3 - k, options, response.headers) if should(response) else None
            except TypeError:
                pytest.skip("the SDK's retry methods changed shape")
            assert (ours is None) == (theirs is None), (status, headers, k)
            if ours is not None:
                assert ours == pytest.approx(theirs), (status, headers, k)
