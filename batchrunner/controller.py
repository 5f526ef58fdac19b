"""Tell sporadic refusals (429/529) from a real limit, and learn the pace a limit allows.

Busy APIs answer a few requests in a hundred with 529, and gateways send 429s unrelated to
this key's budget: such noise only makes the refused row wait out its Retry-After. A real
limit shows in the evidence: a budget the headers say is spent, answers refused in a row or
a third of the recent ones, or, once a pace was learned, more refusals in a second than
the noise level explains. Only then does the run slow down: `Decision` says how. Pure
bookkeeping on times the caller passes in (the pacer's clock): no waiting, no IO;
`pacing` carries it out.

Constants and the measurements behind them (README, "Pacing"):
- RUN, WINDOW, LIMIT_SHARE: 8 answers refused in a row, or 22 of the last 64. Random
  refusals at 10% make 8 in a row once in 10^8 answers and 22 of 64 once in 2.4 million
  refusals (at 15%: 4*10^6 and 4 500; binomial tails); a window that a burst overran
  refuses what follows in a row (measured: 10-17 refusals for a 100/s window hit by 256
  requests at once, with the first wave spread by `budgets.Ramp`).
- MARGIN, PROBE_STEP: pace at 92% of the rate the server admitted (its 50 ms burst still
  fits a one-second window), raised 2% per second while it holds the run back with no
  more refusals than the noise: the limit is found again in about 4 s, for ~96% of it
  between cuts and 2-6 refusals per probe (measured: 1.3% of 2 000 requests refused at
  92% of a 100/s limit).
- CUT: a decision never lowers the pace by more than 30% at once; a window longer than
  the one measured shows as refusals again, and each wave of them cuts again.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass

WINDOW = 64  # answers (2xx or 429/529) the refusal share is measured over
LIMIT_SHARE = 1 / 3  # that share refused: a limit, not noise; everyone pauses
RUN = 8  # so many answers refused in a row: the same
MARGIN = 0.92  # the learned pace is this share of the rate the server admitted
PROBE_EVERY_S = 1.0  # the period over which a pace is judged, and then raised...
PROBE_STEP = 0.02  # ...by this share
CUT = 0.7  # the deepest single cut of the pace
MIN_RATE = 1 / 60  # requests per second: the learned pace never goes below one a minute
DEFAULT_HORIZON_S = 1.0  # a limit naming no wait pauses this long; the rate is measured over
# the Retry-After, at least this long
MAX_HORIZON_S = 60.0
MAX_NOISE = 0.2  # the noise level is never taken to be higher than this share
_NOISE_KEEP = 0.8  # the noise level: refusals over answers, each period's counts decayed
_BINDS = 0.8  # sending at this share of the pace or more: the pace holds the run back
_NOT_LOWER = 0.8  # refusals after a cut at this share of those before: the cut did not help
_TICK_S = 0.01  # the meter's resolution: 1% of the shortest horizon
_TICKS = int(MAX_HORIZON_S / _TICK_S) + 1


@dataclass(frozen=True, slots=True)
class Decision:
    """What a limit calls for. `pause_s` > 0: pause every attempt that long (the refusal's
    Retry-After); `rate`: the new pace in requests/s (None: unchanged); `cut_slots`: halve
    the in-flight limit (overload); `distrust_headers`: the headers showed room, so their
    counts may not raise ours for a while; `why`: one line for people."""

    pause_s: float
    rate: float | None
    cut_slots: bool
    distrust_headers: bool
    why: str


class Meter:
    """Attempts sent and refused, by dispatch time, in 10 ms ticks over the last minute."""

    def __init__(self) -> None:
        self._tick = [-1] * _TICKS  # which tick each slot holds now
        self._sent = [0] * _TICKS
        self._refused = [0] * _TICKS

    def _slot(self, at: float) -> int:
        tick = math.floor(at / _TICK_S)
        slot = tick % _TICKS
        if self._tick[slot] != tick:
            self._tick[slot], self._sent[slot], self._refused[slot] = tick, 0, 0
        return slot

    def sent(self, at: float) -> None:
        self._sent[self._slot(at)] += 1

    def refused(self, at: float) -> None:
        tick = math.floor(at / _TICK_S)
        if self._tick[tick % _TICKS] == tick:  # else sent over a minute ago: forgotten
            self._refused[tick % _TICKS] += 1

    def count(self, since: float, until: float, *, admitted: bool = False) -> int:
        """Attempts sent in [since, until), to the tick; `admitted`: less those refused."""
        first = math.floor(max(since, until - MAX_HORIZON_S + _TICK_S) / _TICK_S)
        total = 0
        for tick in range(first, math.floor(until / _TICK_S)):
            slot = tick % _TICKS
            if self._tick[slot] == tick:
                total += self._sent[slot] - (self._refused[slot] if admitted else 0)
        return total


class Controller:
    """The evidence of recent answers, the noise level, the learned pace, and what each
    answer calls for."""

    def __init__(self) -> None:
        self.meter = Meter()
        self.rate: float | None = None  # the learned pace; None until a limit was found
        self._recent: deque[bool] = deque(maxlen=WINDOW)  # True: refused
        self._acted_at = -math.inf  # when the last decision was made
        self._period = (-math.inf, 0, 0)  # (start, answers, refusals) of this period
        self._noise = (0.0, 0.0)  # decayed (answers, refusals) that measure the noise
        self._trial: tuple[float, float] | None = None  # (pace, share refused) before a cut
        self._last: tuple[int, float | None] = (429, None)  # the last refusal's status, wait

    @property
    def noise(self) -> float:
        """The share of answers refused whatever the pace (at most MAX_NOISE): measured
        before any limit was found, and again when a cut did not lower the refusals."""
        seen, refused = self._noise
        return min(MAX_NOISE, refused / seen) if seen >= 10 else 0.0

    def sent(self, at: float) -> None:
        """An attempt left at `at`."""
        self.meter.sent(at)

    def served(self, now: float) -> Decision | None:
        """A 2xx. It may end a period whose refusals call for a cut (see `_roll`)."""
        decision = self._roll(now)
        self._recent.append(False)
        self._count(now, refused=False)
        return decision

    def refused(
        self,
        now: float,
        *,
        sent_at: float | None,
        status: int,
        retry_after: float | None,
        spent: bool,
        used: float | None = None,
    ) -> Decision | None:
        """A 429/529 for an attempt sent at `sent_at` (None: unknown). `spent`: the
        response's own headers say a budget has no room; `used`: the requests they say
        were used (limit - remaining), if they say. None when it is noise: only the
        refused row waits, for its Retry-After."""
        self._recent.append(True)
        if sent_at is not None:
            self.meter.refused(sent_at)
        same_wave = sent_at < self._acted_at if sent_at is not None else now - self._acted_at < 1.0
        if same_wave:
            return None  # sent before the last decision: what it says was acted on
        self._last = (status, retry_after)
        decision = self._roll(now)
        self._count(now, refused=True)
        if decision is not None:
            return decision
        refusals = sum(self._recent)
        in_a_row = len(self._recent) >= RUN and all(itertools.islice(reversed(self._recent), RUN))
        if spent or in_a_row or refusals / WINDOW >= LIMIT_SHARE:
            evidence = (
                "the rate-limit headers say the budget is spent"
                if spent
                else f"{refusals} of the last {len(self._recent)} answers refused"
                if refusals / WINDOW >= LIMIT_SHARE
                else f"the last {RUN} answers refused"
            )
            # A spent budget of far more requests than we sent this minute is not ours to
            # mirror: it is counted over a longer window than the server enforces.
            foretold = spent and (used is None or self.meter.count(now - 60, now) >= used / 2)
            return self._decide(now, status, sent_at, retry_after, evidence, foretold=foretold)
        return None

    def _decide(
        self,
        now: float,
        status: int,
        sent_at: float | None,
        retry_after: float | None,
        evidence: str,
        *,
        foretold: bool,
        hard: bool = True,
    ) -> Decision:
        self._acted_at = now
        # What the server counted before the decision fills its window for a while yet:
        # the new pace is judged by what is answered after that.
        self._period = (now + _horizon(retry_after), 0, 0)
        pause = (retry_after if retry_after is not None else DEFAULT_HORIZON_S) if hard else 0.0
        learn = status == 429 and not foretold  # the headers, if any, did not see it coming
        rate = None
        if learn:
            if self.rate is not None:  # undone if the refusals do not drop (see `_roll`)
                self._trial = (self.rate, sum(self._recent) / len(self._recent))
            at = sent_at if sent_at is not None else now
            rate = self.rate = self._learn(at=at, wait=retry_after)
        actions = [
            f"pace {rate:.3g} req/s" if rate is not None else "",
            "fewer requests in flight" if status == 529 and hard else "",
            f"pause {pause:.3g} s" if pause > 0 else "",
        ]
        done = ", ".join(a for a in actions if a) or "wait for the budget"
        return Decision(
            pause_s=pause,
            rate=rate,
            cut_slots=status == 529 and hard,
            distrust_headers=learn,
            why=f"HTTP {status}: {evidence}: {done}",
        )

    def _count(self, now: float, *, refused: bool) -> None:
        """Count an answer in this period (not while a decision settles)."""
        start, answers, refusals = self._period
        if now >= start:
            self._period = (start, answers + 1, refusals + refused)

    def _tolerated(self, answers: int) -> float:
        """Refusals that `answers` answers may bring at the noise level: the mean and three
        standard deviations (of a Poisson count), so noise alone rarely exceeds it."""
        mean = self.noise * answers
        return mean + 3 * math.sqrt(mean)

    def _roll(self, now: float) -> Decision | None:
        """End the period once it is PROBE_EVERY_S old. Without a pace it measures the
        noise. With one: after a cut, refusals that did not drop are noise (the cut is
        undone); more refusals than the noise explains cut the pace; else a pace that
        bound is raised. Returns the cut, if any."""
        start, answers, refusals = self._period
        if now - start < PROBE_EVERY_S:
            return None
        self._period = (now, 0, 0)
        if not math.isfinite(start):
            return None
        if self.rate is None:
            seen, refused = self._noise
            self._noise = (_NOISE_KEEP * seen + answers, _NOISE_KEEP * refused + refusals)
            return None
        trial, self._trial = self._trial, None
        if trial is not None and answers >= 10 and refusals / answers >= _NOT_LOWER * trial[1]:
            self._noise = (float(answers), float(refusals))
            self.rate = trial[0]
            return None
        if refusals > self._tolerated(answers) + 1:
            status, wait = self._last
            evidence = f"{refusals} of {answers} answers refused, more than the noise"
            return self._decide(now, status, None, wait, evidence, foretold=False, hard=False)
        # Raise only a pace that holds the run back: otherwise it would climb without
        # being tried, and the next refusal would find it far above the limit.
        if self.meter.count(start, now) >= _BINDS * self.rate * (now - start):
            self.rate *= 1 + PROBE_STEP
        return None

    def _learn(self, *, at: float, wait: float | None) -> float:
        """The pace after a limit at `at`: MARGIN of what the server admitted over the
        Retry-After (at least a second), cutting at most to CUT of the current pace."""
        horizon = _horizon(wait)
        admitted = self.meter.count(at - horizon, at + _TICK_S, admitted=True) / horizon
        rate = admitted * MARGIN
        if self.rate is not None:
            rate = max(self.rate * CUT, min(self.rate, rate))
        return max(MIN_RATE, rate)


def _horizon(retry_after: float | None) -> float:
    """The span a limit counts over, as its Retry-After tells it: at least a second."""
    return min(MAX_HORIZON_S, max(DEFAULT_HORIZON_S, retry_after or 0.0))
