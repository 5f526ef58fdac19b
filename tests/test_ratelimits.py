"""Rate-limit and Retry-After header parsing, both header families."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from batchrunner.ratelimits import (
    LimitKind,
    LimitState,
    budget_wait,
    parse_go_duration,
    parse_rate_limit_headers,
    parse_retry_after,
    parse_rfc3339,
    quote_headers,
    requests_used,
    spent,
)

NOW = datetime(2025, 8, 21, 12, 40, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1m30s", 90.0),
        ("12ms", 0.012),
        ("20ms", 0.020),
        ("6m0s", 360.0),
        ("23h47m36.648s", 23 * 3600 + 47 * 60 + 36.648),
        ("1s", 1.0),
        ("1.5s", 1.5),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("100ns", 1e-7),
        ("2h", 7200.0),
        ("0", 0.0),
        (" 3s ", 3.0),
    ],
)
def test_go_duration_sums_its_terms(text: str, seconds: float) -> None:
    """A Go duration is the sum of its terms, with `ms` read as milliseconds, not minutes."""
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "abc", "12", "1.5", "5x", "1m 30s", "-1s", "s", "1h-2m", "m5"]
)
def test_go_duration_rejects_junk(text: str) -> None:
    """Anything that is not entirely `<number><unit>` terms is None."""
    assert parse_go_duration(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-08-21T12:40:59Z", NOW + 59),
        ("2025-08-21T12:40:59.250Z", NOW + 59.25),
        ("2025-08-21T14:40:59+02:00", NOW + 59),
        ("2025-08-21T14:40:59.5+02:00", NOW + 59.5),
        ("2025-08-21T12:40:59.123456789Z", NOW + 59.123456),
        ("2025-08-21t12:40:59z", NOW + 59),
        ("2025-08-21T12:40:59", NOW + 59),
    ],
)
def test_rfc3339_to_epoch(text: str, expected: float) -> None:
    """RFC 3339 times with Z, offsets and fractions become epoch seconds; no offset is UTC."""
    assert parse_rfc3339(text) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "text", ["", "tomorrow", "2025-08-21", "2025-13-21T00:00:00Z", "12:40:59Z"]
)
def test_rfc3339_rejects_junk(text: str) -> None:
    """Malformed or impossible timestamps are None."""
    assert parse_rfc3339(text) is None


def test_anthropic_family_reads_every_kind_with_resets_from_timestamps() -> None:
    """Anthropic headers give limit, remaining and seconds until the RFC 3339 reset."""
    headers = {
        "Anthropic-RateLimit-Requests-Limit": "1000",
        "anthropic-ratelimit-requests-remaining": "999",
        "anthropic-ratelimit-requests-reset": "2025-08-21T12:40:59Z",
        "anthropic-ratelimit-tokens-limit": "80000",
        "anthropic-ratelimit-tokens-remaining": "79000",
        "anthropic-ratelimit-tokens-reset": "2025-08-21T14:40:01.5+02:00",
        "anthropic-ratelimit-input-tokens-limit": "80000",
        "anthropic-ratelimit-output-tokens-remaining": "16000",
    }
    states = parse_rate_limit_headers(headers, now=NOW)
    assert states["requests"] == LimitState("requests", 1000.0, 999.0, 59.0)
    assert states["tokens"].reset_in_s == pytest.approx(1.5)
    assert states["input-tokens"] == LimitState("input-tokens", 80000.0, None, None)
    assert states["output-tokens"].remaining == 16000.0
    assert set(states) == {"requests", "tokens", "input-tokens", "output-tokens"}


def test_anthropic_reset_in_the_past_is_zero() -> None:
    """A reset time already past means the limit is full again now."""
    headers = {"anthropic-ratelimit-requests-reset": "2025-08-21T12:39:00Z"}
    assert parse_rate_limit_headers(headers, now=NOW)["requests"].reset_in_s == 0.0


def test_openai_family_reads_go_durations() -> None:
    """OpenAI headers give limit, remaining and a Go-duration reset, per kind."""
    headers = {
        "X-RateLimit-Limit-Requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-tokens": "149984",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    states = parse_rate_limit_headers(headers, now=NOW)
    assert states == {
        "requests": LimitState("requests", 60.0, 59.0, 1.0),
        "tokens": LimitState("tokens", 150000.0, 149984.0, 360.0),
    }


def test_rate_limit_headers_tolerate_junk() -> None:
    """Unreadable values become None and unrelated headers are ignored, never an error."""
    headers = {
        "x-ratelimit-limit-requests": "lots",
        "x-ratelimit-remaining-requests": "-3",
        "x-ratelimit-reset-requests": "soon",
        "x-ratelimit-limit-tokens": "nan",
        "anthropic-ratelimit-tokens-reset": "yesterday",
        "content-type": "application/json",
    }
    assert parse_rate_limit_headers(headers, now=NOW) == {}
    assert parse_rate_limit_headers({}, now=NOW) == {}


def test_gateway_style_resets_are_read_too() -> None:
    """A bare number of seconds (OpenAI family) or a duration (Anthropic family) still parses."""
    headers = {
        "x-ratelimit-reset-requests": "1.5",
        "anthropic-ratelimit-tokens-reset": "12ms",
    }
    states = parse_rate_limit_headers(headers, now=NOW)
    assert states["requests"].reset_in_s == 1.5
    assert states["tokens"].reset_in_s == pytest.approx(0.012)


def test_anthropic_values_win_over_openai_ones_for_the_same_kind() -> None:
    """When both families report a kind, Anthropic fields win and OpenAI fills the gaps."""
    headers = {
        "anthropic-ratelimit-requests-limit": "100",
        "x-ratelimit-limit-requests": "5",
        "x-ratelimit-remaining-requests": "4",
    }
    state = parse_rate_limit_headers(headers, now=NOW)["requests"]
    assert (state.limit, state.remaining) == (100.0, 4.0)


def test_retry_after_ms_comes_first() -> None:
    """`retry-after-ms` wins over `retry-after`."""
    headers = {"retry-after-ms": "1500", "retry-after": "30"}
    assert parse_retry_after(headers, now=NOW) == 1.5


def test_retry_after_seconds_case_insensitive() -> None:
    """`Retry-After` in float seconds is read whatever the case of its name."""
    assert parse_retry_after({"Retry-After": "2.5"}, now=NOW) == 2.5
    assert parse_retry_after({"retry-after": "0"}, now=NOW) == 0.0


def test_retry_after_http_date() -> None:
    """An HTTP-date `retry-after` becomes seconds from `now`."""
    when = datetime(2025, 8, 21, 12, 40, 7, tzinfo=UTC)
    headers = {"retry-after": format_datetime(when, usegmt=True)}
    assert parse_retry_after(headers, now=NOW) == pytest.approx(7.0)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"retry-after": "soon"},
        {"retry-after": "-1"},
        {"retry-after": "nan"},
        {"retry-after": "inf"},
        {"retry-after-ms": "-5"},
        {"retry-after": "Thu, 21 Aug 2025 12:39:00 GMT"},
    ],
)
def test_retry_after_junk_is_none(headers: dict[str, str]) -> None:
    """Missing, negative, NaN, infinite, garbage or past values give None."""
    assert parse_retry_after(headers, now=NOW) is None


def test_bad_retry_after_ms_falls_back_to_retry_after() -> None:
    """An unreadable `retry-after-ms` does not hide a good `retry-after`."""
    assert parse_retry_after({"retry-after-ms": "x", "retry-after": "3"}, now=NOW) == 3.0


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"llm_provider-retry-after": "60"}, 60.0),  # LiteLLM's proxy, nothing else
        ({"llm_provider-retry-after-ms": "1500", "llm_provider-retry-after": "9"}, 1.5),
        ({"x-ms-retry-after-ms": "250"}, 0.25),  # Azure
        ({"LLM_Provider-Retry-After": "Thu, 21 Aug 2025 12:40:07 GMT"}, 7.0),
        ({"retry-after": "2", "llm_provider-retry-after": "60"}, 2.0),  # the standard first
        ({"retry-after": "soon", "llm_provider-retry-after": "4"}, 4.0),
    ],
)
def test_non_standard_retry_after_spellings(headers: dict[str, str], seconds: float) -> None:
    """Gateways' spellings are read too: milliseconds first, the standard name first."""
    assert parse_retry_after(headers, now=NOW) == pytest.approx(seconds)
    assert quote_headers(headers)  # and quoted in messages


def test_spent_means_no_room_for_the_next_attempt() -> None:
    """Requests remaining 0, or fewer tokens remaining than the attempt needs, is spent;
    room, or no remaining at all, is not."""

    def state(kind: LimitKind, remaining: float | None) -> dict[str, LimitState]:
        return {kind: LimitState(kind=kind, limit=100, remaining=remaining, reset_in_s=None)}

    assert spent(state("requests", 0), need_tokens=10)
    assert not spent(state("requests", 1), need_tokens=10)
    assert spent(state("tokens", 9), need_tokens=10)
    assert not spent(state("output-tokens", 10), need_tokens=10)
    assert not spent(state("requests", None), need_tokens=10)
    assert not spent({}, need_tokens=10)


def test_requests_used_is_limit_minus_remaining_when_both_are_said() -> None:
    """60 of 100 left: 40 used; without a limit (a gateway's bare remaining), unknown."""
    both = {"x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "60"}
    assert requests_used(parse_rate_limit_headers(both, now=NOW)) == 40
    bare = {"x-ratelimit-remaining-requests": "60"}
    assert requests_used(parse_rate_limit_headers(bare, now=NOW)) is None
    assert requests_used({}) is None


def test_budget_wait_is_the_time_until_the_next_unit_by_the_servers_numbers() -> None:
    """remaining < need: (need - remaining) * reset / limit; the longest budget wins."""
    headers = {
        "x-ratelimit-limit-requests": "1",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1000h",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "1m",
    }
    states = parse_rate_limit_headers(headers, now=NOW)
    assert budget_wait(states, need_tokens=100) == (3_600_000.0, "requests")
    del states["requests"]
    assert budget_wait(states, need_tokens=100) == (6.0, "tokens")
    # An attempt reserving more than the whole limit needs at most the full reset.
    assert budget_wait(states, need_tokens=10**6) == (60.0, "tokens")


def test_budget_wait_is_zero_with_room_or_without_numbers() -> None:
    """Room left, or a limit without remaining/reset, imposes no wait."""
    roomy = {"x-ratelimit-limit-requests": "1", "x-ratelimit-remaining-requests": "1"}
    roomy["x-ratelimit-reset-requests"] = "1000h"
    assert budget_wait(parse_rate_limit_headers(roomy, now=NOW), need_tokens=1) == (0.0, "")
    vague = {"x-ratelimit-remaining-requests": "0"}
    assert budget_wait(parse_rate_limit_headers(vague, now=NOW), need_tokens=1) == (0.0, "")


def test_quote_headers_names_the_headers_and_cuts_long_values() -> None:
    """Messages quote the headers behind a wait, each value cut to 40 characters."""
    headers = {
        "Retry-After": "1000000000",
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "9" * 500,
        "x-ratelimit-limit-requests": "1",
    }
    assert quote_headers(headers) == "retry-after: 1000000000"
    quoted = quote_headers(headers, "requests")
    assert quoted == (
        "x-ratelimit-limit-requests: 1, anthropic-ratelimit-requests-remaining: 0, "
        f"anthropic-ratelimit-requests-reset: {'9' * 40}"
    )
