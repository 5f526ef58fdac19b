"""How long to put up with a server that asks for waits longer than the cap.

The pacer never waits longer than its cap for the server (a Retry-After of 10^9 s, or a
budget spent until a reset 1000 h away, would otherwise stall a run for good). Such an
ask is obeyed up to the cap and counted here; when the asks persist, the run gives up
with rows pending. Pure bookkeeping on times the caller passes in: no clock, no anyio.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from batchrunner.ratelimits import budget_wait, quote_headers

if TYPE_CHECKING:
    from collections.abc import Mapping

    from batchrunner.ratelimits import LimitState

STRIKES_IN_A_ROW = 2  # over-cap asks from two waves with no plain success in between
STRIKES_IN_ALL = 5  # over-cap asks from five waves in one run, successes or not
_WAVE_S = 1.0  # asks this close together are one wave when dispatch times are unknown


class Patience:
    """Counts over-cap asks by wave and says when to give up.

    Asks for attempts that left before the previous counted ask belong to the same wave
    (a burst of 429s answering one burst of requests is one ask, not fifty). A 2xx that
    is not itself an over-cap ask ends a streak: the server serves again.
    """

    def __init__(self, cap_s: float) -> None:
        self.cap_s = cap_s
        self.in_a_row = 0
        self.in_all = 0
        self._last_at = -math.inf

    def judge(
        self,
        *,
        now: float,
        sent_at: float | None,
        ok: bool,
        headers: Mapping[str, str],
        retry_after: float | None,
        states: Mapping[str, LimitState],
        cost: int,
    ) -> str | None:
        """One response, read for an over-cap ask: a Retry-After, or the longest wait a
        spent budget imposes on an attempt of `cost` tokens. Returns the reason to give up."""
        ask, source = 0.0, ""
        if retry_after is not None and retry_after > self.cap_s:
            ask, source = retry_after, quote_headers(headers)
        elif states:
            wait, kind = budget_wait(states, need_tokens=cost)
            if wait > self.cap_s:
                ask, source = wait, quote_headers(headers, kind)
        return self.observe(now=now, sent_at=sent_at, ask_s=ask, source=source, ok=ok)

    def observe(
        self, *, now: float, sent_at: float | None, ask_s: float, source: str, ok: bool
    ) -> str | None:
        """One response: `ask_s` is the wait it asks for (0 for none), `sent_at` when its
        attempt left (None if unknown). Returns the reason to give up, or None."""
        if ask_s <= self.cap_s:
            if ok:
                self.in_a_row = 0
            return None
        if sent_at is not None:
            new_wave = sent_at > self._last_at
        else:
            new_wave = now - self._last_at >= _WAVE_S
        if not new_wave:
            return None
        self._last_at = now
        self.in_a_row += 1
        self.in_all += 1
        if self.in_a_row < STRIKES_IN_A_ROW and self.in_all < STRIKES_IN_ALL:
            return None
        times = (
            f"{_times(self.in_a_row)} in a row"
            if self.in_a_row >= STRIKES_IN_A_ROW
            else f"{_times(self.in_all)} in this run"
        )
        return (
            f"the server asked {times} to wait longer than the {self.cap_s:g} s cap "
            f"(last: {source or 'no header'}, {_duration(ask_s)}); "
            "rows left pending: run the same command again later to resume"
        )


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "forever"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.0f} h"
    if seconds < 63_072_000:
        return f"{seconds / 86400:.0f} days"
    return f"{seconds / 31_557_600:.3g} years"


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")
