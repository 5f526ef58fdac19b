"""Read what the server says about its rate limits: both header families and Retry-After.

Pure parsing: no clocks of its own (callers pass `now`, epoch seconds), no IO, no pacing
decisions (those live in `pacing`). Junk in any header yields None, never an exception,
because a malformed header from a proxy must not fail a request that otherwise succeeded.
"""

from __future__ import annotations

import functools
import math
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Literal, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Mapping

LimitKind = Literal["requests", "tokens", "input-tokens", "output-tokens"]
KINDS: tuple[LimitKind, ...] = ("requests", "tokens", "input-tokens", "output-tokens")
_OPENAI_KINDS: tuple[LimitKind, ...] = ("requests", "tokens")
_FIELDS = ("limit", "remaining", "reset")
# Every header name read (lower case) -> its slot: kind, then family (Anthropic's fields,
# then OpenAI's), then field. Slots with no header (OpenAI's input- and output-tokens)
# stay None.
_PER_KIND = 2 * len(_FIELDS)
_NAMES = {
    **{
        f"anthropic-ratelimit-{k}-{f}": KINDS.index(k) * _PER_KIND + _FIELDS.index(f)
        for k in KINDS
        for f in _FIELDS
    },
    **{
        f"x-ratelimit-{f}-{k}": KINDS.index(k) * _PER_KIND + len(_FIELDS) + _FIELDS.index(f)
        for k in _OPENAI_KINDS
        for f in _FIELDS
    },
}

# `ms` must come before `m` (and `us`/`µs` before `s`), or "12ms" reads as 12 minutes.
_GO_TERM = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|μs|ns)")
_GO_UNIT_S = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ns": 1e-9,
}
_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2})"
    r"(?P<frac>\.\d+)?(?P<tz>[Zz]|[+-]\d{2}:\d{2})?"
)


# Cached: every response repeats the same few reset strings, and the pacer parses the
# headers of every response (this halved its share of the client's CPU).
@functools.lru_cache(maxsize=512)
def parse_go_duration(s: str) -> float | None:
    """Seconds in a Go duration string ("1m30s" -> 90.0, "12ms" -> 0.012); None if malformed.

    The whole string must be a run of `<number><unit>` terms; a bare "0" is Go's zero.
    Negative durations are refused: a reset in the past says nothing useful.
    """
    text = s.strip()
    if text == "0":
        return 0.0
    if not text:
        return None
    total = 0.0
    pos = 0
    for match in _GO_TERM.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _GO_UNIT_S[match.group(2)]
        pos = match.end()
    if pos != len(text) or not math.isfinite(total):
        return None
    return total


@functools.lru_cache(maxsize=512)
def parse_rfc3339(s: str) -> float | None:
    """Epoch seconds of an RFC 3339 timestamp ("2025-08-21T12:40:59Z"); None if malformed.

    Fractions of any length and `±HH:MM` offsets are accepted; a missing offset is read
    as UTC, which is what the servers mean.
    """
    match = _RFC3339.fullmatch(s.strip())
    if match is None:
        return None
    frac = match.group("frac") or ""
    tz = match.group("tz")
    offset = "+00:00" if tz is None or tz in "Zz" else tz
    # Keep at most microseconds: fromisoformat is not obliged to take more digits.
    text = f"{match.group('date')}T{match.group('time')}{frac[:7]}{offset}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:  # a well-shaped but impossible date, such as month 13
        return None
    return moment.timestamp()


class LimitState(NamedTuple):
    """One limit as the server reported it; `reset_in_s` is seconds until it is full again.

    A named tuple: one is made per kind per answer, at a third of a frozen dataclass's cost.
    """

    kind: LimitKind
    limit: float | None
    remaining: float | None
    reset_in_s: float | None


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    return number


def _reset_from_timestamp(value: str | None, now: float) -> float | None:
    if value is None:
        return None
    moment = parse_rfc3339(value)
    if moment is not None:
        return max(0.0, moment - now)
    # Some gateways put a duration where Anthropic puts a timestamp; read it rather than drop it.
    return _reset_from_duration(value)


def _reset_from_duration(value: str | None) -> float | None:
    if value is None:
        return None
    duration = parse_go_duration(value)
    # A bare number is not a Go duration, but gateways send "1.5" meaning seconds.
    return duration if duration is not None else _number(value)


def parse_rate_limit_headers(headers: Mapping[str, str], *, now: float) -> dict[str, LimitState]:
    """The limits a response reports, by kind, from either header family.

    Anthropic: `anthropic-ratelimit-{kind}-{limit,remaining,reset}`, reset an RFC 3339 time.
    OpenAI: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, reset a Go duration.
    A kind appears only when at least one of its three values could be read; when both
    families report a kind, the Anthropic limit and remaining win and the OpenAI reset wins
    (a duration is more precise than a whole-second timestamp).

    Args:
        now: the current time in epoch seconds, to turn reset timestamps into durations.
    """
    # Each name looked up as it comes (the client's are lower case already), and a kind no
    # header names is not parsed: both families, 17 headers, 7.2 -> 3.9 µs.
    raw: list[str | None] = [None] * (len(KINDS) * _PER_KIND)
    names = _NAMES
    for key, value in headers.items():
        slot = names.get(key)
        if slot is None:
            slot = names.get(str(key).lower())
            if slot is None:
                continue
        raw[slot] = str(value)
    found: dict[str, LimitState] = {}
    for i, kind in enumerate(KINDS):
        a_limit, a_remaining, a_reset, o_limit, o_remaining, o_reset = raw[
            i * _PER_KIND : (i + 1) * _PER_KIND
        ]
        if a_limit is a_remaining is a_reset is o_limit is o_remaining is o_reset is None:
            continue
        limit = _number(a_limit)
        if limit is None:
            limit = _number(o_limit)
        remaining = _number(a_remaining)
        if remaining is None:
            remaining = _number(o_remaining)
        # A duration is exact; an RFC 3339 reset is usually whole seconds, an error of up
        # to 1 s that turned sub-second resets into a pace of a few requests per second.
        reset = _reset_from_duration(o_reset)
        if reset is None:
            reset = _reset_from_timestamp(a_reset, now)
        if limit is not None or remaining is not None or reset is not None:
            found[kind] = LimitState(kind, limit, remaining, reset)
    return found


# The Retry-After spellings read, in this order. Milliseconds first, as both official SDKs
# read `retry-after-ms` before `retry-after`; `x-ms-` is Azure's; LiteLLM's proxy forwards a
# provider's wait under its `llm_provider-` prefix only (and nothing else on some versions).
RETRY_AFTER_MS_HEADERS = ("retry-after-ms", "x-ms-retry-after-ms", "llm_provider-retry-after-ms")
RETRY_AFTER_HEADERS = ("retry-after", "llm_provider-retry-after")


def parse_retry_after(headers: Mapping[str, str], *, now: float) -> float | None:
    """Seconds the server asks us to wait, or None when it says nothing usable.

    The `RETRY_AFTER_MS_HEADERS` as float milliseconds, then the `RETRY_AFTER_HEADERS` as
    float seconds or an HTTP date (minus `now`, epoch seconds); the first usable one wins.
    A value that is negative, NaN, infinite, garbage or a date already past is skipped, so
    the caller falls back to its own backoff.
    """
    lower = {str(key).lower(): str(value) for key, value in headers.items()}
    for name in RETRY_AFTER_MS_HEADERS:
        millis = _number(lower.get(name))
        if millis is not None:
            return millis / 1000.0
    for name in RETRY_AFTER_HEADERS:
        value = lower.get(name)
        seconds = _seconds_or_date(value, now) if value is not None else None
        if seconds is not None:
            return seconds
    return None


def _seconds_or_date(value: str, now: float) -> float | None:
    seconds = _number(value)
    if seconds is not None:
        return seconds
    try:
        moment = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:  # "-0000" means UTC with no claim about the local zone
        moment = moment.replace(tzinfo=UTC)
    delay = moment.timestamp() - now
    return delay if delay >= 0 else None


def spent(states: Mapping[str, LimitState], *, need_tokens: float) -> bool:
    """Whether a budget in `states` has no room for the next attempt: requests remaining
    below 1, or tokens remaining below `need_tokens` (at least 1). A limit the server says
    is spent is real, whatever the reset."""
    for kind, state in states.items():
        need = 1.0 if kind == "requests" else max(1.0, need_tokens)
        if state.remaining is not None and state.remaining < need:
            return True
    return False


def requests_used(states: Mapping[str, LimitState]) -> float | None:
    """The requests the headers say were used (limit - remaining), None if they do not say."""
    state = states.get("requests")
    if state is None or state.limit is None or state.remaining is None:
        return None
    return state.limit - state.remaining


def budget_wait(states: Mapping[str, LimitState], *, need_tokens: float) -> tuple[float, str]:
    """The longest wait a spent budget in `states` imposes on the next attempt, and its kind.

    A bucket refilled evenly (both APIs say theirs are) that holds `remaining` of `limit`
    and is full again in `reset` seconds has room for `need` more after
    ``(need - remaining) * reset / limit`` seconds. `need` is 1 for requests and
    `need_tokens` (at least 1, at most the limit) for tokens. ``(0.0, "")`` when every
    budget has room or says too little to tell; a per-minute limit never asks for more
    than a minute.
    """
    worst, worst_kind = 0.0, ""
    for kind, state in states.items():
        limit, remaining, reset = state.limit, state.remaining, state.reset_in_s
        if limit is None or remaining is None or reset is None or limit <= 0:
            continue
        need = 1.0 if kind == "requests" else min(max(1.0, need_tokens), limit)
        if remaining < need and (need - remaining) * reset / limit > worst:
            worst, worst_kind = (need - remaining) * reset / limit, kind
    return worst, worst_kind


def quote_headers(headers: Mapping[str, str], kind: str | None = None) -> str:
    """The headers behind a wait, as "name: value, ...", for messages.

    `kind` (a `LimitKind`) quotes that budget's limit, remaining and reset headers of both
    families; None quotes the Retry-After headers. Values are cut to 40 characters: a
    hostile server's header can be arbitrarily long.
    """
    lower = {str(key).lower(): str(value) for key, value in headers.items()}
    if kind is None:
        names: tuple[str, ...] = RETRY_AFTER_MS_HEADERS + RETRY_AFTER_HEADERS
    else:
        names = tuple(
            name
            for part in ("limit", "remaining", "reset")
            for name in (f"anthropic-ratelimit-{kind}-{part}", f"x-ratelimit-{part}-{kind}")
        )
    return ", ".join(f"{name}: {lower[name][:40]}" for name in names if name in lower)


def token_state(states: Mapping[str, LimitState]) -> LimitState | None:
    """The token limit to pace by: the combined one, else the tighter of input and output."""
    combined = states.get("tokens")
    if combined is not None and combined.limit is not None and combined.remaining is not None:
        return combined
    split = [
        s
        for s in (states.get("input-tokens"), states.get("output-tokens"))
        if s is not None and s.limit is not None and s.remaining is not None
    ]
    return min(split, key=lambda s: s.remaining or 0.0) if split else None
