"""Pace every HTTP attempt: shared cool-down, adaptive in-flight limit, budgets, learned pace.

One Pacer per run: `await acquire(cost)` before each attempt, `release(...)` after it.
Waiters queue (retries first); only the head watches the clock. `controller` tells a limit
from noise; only a limit slows the run. No wait the server causes lasts over `max_wait_s`;
persistent asks beyond it (`patience`) give up the run. `close()` stops admission. Sends
and retries nothing (`attempts` does); anyio only.
"""

from __future__ import annotations

import math
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, NamedTuple

from batchrunner.admission import AdmissionClosedError, Line, Seats
from batchrunner.budgets import Aimd, Budgets
from batchrunner.controller import Controller, Decision
from batchrunner.patience import Patience
from batchrunner.ratelimits import (
    LimitState,
    parse_rate_limit_headers,
    parse_retry_after,
    quote_headers,
    requests_used,
    spent,
    token_state,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from batchrunner.costcap import CostCap

# The longest wait the server can impose; longer asks are counted, persistent ones stop it.
MAX_WAIT_S = 60.0
REFUSALS = frozenset({429, 529})
_EPS = 1e-9
_WHY = {
    "probe": "the first request's rate-limit headers (it goes alone, at most {probe:g} s)",
    "slots": "a free slot: in-flight limit {limit} of {concurrency}, cut after 529s",
    "pace": "the pace learned from 429s ({pace:.3g} req/s; one wait: at most {cap:g} s)",
    "ramp": "the first wave to leave (spread over ~150 ms)",
    "rpm": "the --rpm budget",
    "tpm": "the --tpm budget",
    "requests": "the request budget the server's headers announce (one wait: at most {cap:g} s)",
    "tokens": "the token budget the server's headers announce (one wait: at most {cap:g} s)",
}


class _Ticket(NamedTuple):
    """What `acquire` remembers for the matching `release` of the same task (a named
    tuple: one per attempt, at a third of a frozen dataclass's cost)."""

    owner: object
    seq: int  # attempts dispatched by this pacer, this one included
    at: float  # dispatch time on the pacer's clock
    reserved: int  # tokens reserved by this pacer, this attempt included


# The task that acquired also releases: a context variable pairs them (no ticket: coarser).
_TICKET: ContextVar[_Ticket | None] = ContextVar("batchrunner_pacer_ticket", default=None)


class Pacer:
    """Admission control for HTTP attempts, shared by every worker of a run.

    `acquire` waits until no shared cool-down is active, an in-flight slot is free under
    the adaptive limit, and the request and token budgets and the learned pace allow the
    attempt; retries wait ahead of first attempts. Budgets come from `rpm`/`tpm` when > 0,
    else from the rate-limit headers `release` sees. With no budget given, the first
    attempt goes alone (a probe, for at most `probe_s` seconds) so its headers arrive
    before a full wave can overrun the server.

    A 429/529 binds the attempt that got it (its row waits out the Retry-After). The run
    as a whole slows down only when the `Controller` finds a limit: then everyone pauses
    for the Retry-After, a 429 teaches a pace (requests/s, probed upward while clean), and
    a 529 halves the in-flight limit (once per wave, down to `min_limit`; it grows back by
    one per `limit` successes up to `concurrency`).

    What the server imposes is capped at `max_wait_s`: a cool-down, and a learned budget's
    or pace's hold on the head of the queue (the user's own `rpm`/`tpm` are obeyed as
    given). Asks beyond the cap are counted by `Patience`; when they persist, `on_give_up`
    gets the reason and the pacer closes.
    """

    def __init__(
        self,
        *,
        concurrency: int,
        rpm: float = 0,
        tpm: float = 0,
        clock: Callable[[], float] = time.monotonic,
        min_limit: int = 1,
        wall_clock: Callable[[], float] = time.time,
        probe_s: float = 2.0,
        max_wait_s: float = MAX_WAIT_S,
        on_give_up: Callable[[str], None] | None = None,
        ramp: bool = True,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        if not 1 <= min_limit <= concurrency:
            raise ValueError(f"min_limit must be between 1 and {concurrency}, not {min_limit}")
        for name, value in (("rpm", rpm), ("tpm", tpm), ("probe_s", probe_s)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, not {value}")
        if not (math.isfinite(max_wait_s) and max_wait_s > 0):
            raise ValueError(f"max_wait_s must be a finite number > 0, not {max_wait_s}")
        self._concurrency = concurrency
        self._clock = clock
        self._wall = wall_clock
        now = clock()
        self._budgets = Budgets(rpm=rpm, tpm=tpm, now=now, ramp=concurrency if ramp else None)
        self._aimd = Aimd(concurrency=concurrency, min_limit=min_limit)
        self._in_flight = 0
        self._cooldown_until = -math.inf
        self._cooldown_why = ""
        self._probe_s = probe_s
        self._probing = rpm == 0 and tpm == 0 and probe_s > 0
        self._probe_ends = math.inf  # set when the probe leaves
        self._seq = 0
        self._reserved = 0  # tokens reserved since the start, for counting later dispatches
        self._reserved_in_flight = 0
        self._line = Line()
        self._control = Controller()
        self.slowed: str | None = None  # why the run last slowed down
        self._max_wait = max_wait_s
        self._patience = Patience(max_wait_s)
        self._on_give_up = on_give_up
        self._head: tuple[float, str] | None = None  # (until, why) of the head waiter
        self.seats = Seats()  # workers take one per row: see `admission`
        # --max-cost: each attempt reserves its worst case here before `acquire` (attempts)
        self.cost: CostCap | None = None

    @property
    def in_flight(self) -> int:  # attempts on the wire now
        return self._in_flight

    @property
    def limit(self) -> int:
        """The in-flight limit now (1 while the probe is out)."""
        return 1 if self._probing else self._aimd.limit

    @property
    def pace(self) -> float | None:
        """The tightest request pace in force (req/s), None: only the in-flight limit."""
        return self._budgets.pace

    async def acquire(self, cost_tokens: int, *, retry: bool = False) -> None:
        """Wait until an attempt reserving `cost_tokens` may be sent, then count it in flight.

        A `retry` waits ahead of first attempts. Cancellable at any point: nothing is taken
        until the moment it returns. Raises AdmissionClosedError once the pacer is closed.
        """
        cost = max(0, int(cost_tokens))
        waiter = self._line.join(retry=retry)
        started = self._clock()
        sent = False
        try:
            while not self.seats.closed:
                if self._line.head() is not waiter:
                    await waiter.sleep(math.inf)  # woken when it may be the head
                    continue
                now = self._clock()
                wait, why = self._wait_s(now, cost, waited=now - started)
                if wait <= _EPS:
                    self._commit(now, cost)
                    sent = True
                    return
                self._head = (now + wait, why)
                await waiter.sleep(wait)  # woken by a release, or in time
                if self._line.head() is waiter:
                    self._head = None
        finally:
            if self._line.head() is waiter:
                self._head = None
            # While every slot is taken the next head could only go back to sleep: the
            # release that frees one wakes it (a probe's slot frees itself in time).
            slots_full = self._in_flight >= self._aimd.limit and not self._probing
            self._line.leave(waiter, wake_next=not (sent and slots_full))
        raise AdmissionClosedError("the run is stopping: nothing more is sent")

    def release(
        self,
        *,
        status: int | None,
        headers: Mapping[str, str],
        retry_after: float | None,
        cost_tokens: int,
        used_tokens: int | None,
    ) -> str | None:
        """End an attempt: free its slot, settle its tokens, learn from its response.

        Returns why the run slows down when this response made it (for calls.log).

        Args:
            status: the HTTP status, or None when no response came.
            retry_after: the server's wait in seconds, if the caller parsed one; else
                it is read from `headers`.
            used_tokens: the tokens the response reports using, to refund the reservation.
        """
        now = self._clock()
        ticket = _TICKET.get()
        if ticket is not None and ticket.owner is not self:
            ticket = None
        _TICKET.set(None)
        cost = max(0, cost_tokens)
        self._in_flight = max(0, self._in_flight - 1)
        self._reserved_in_flight = max(0, self._reserved_in_flight - cost)
        self._probing = False
        if used_tokens is not None:
            self._budgets.refund(now, cost - used_tokens)
        states = self._learn(headers, now, ticket) if headers else {}
        sent_at = ticket.at if ticket is not None else None
        decision: Decision | None = None
        if status in REFUSALS:
            if retry_after is None:
                retry_after = parse_retry_after(headers, now=self._wall())
            decision = self._control.refused(
                now,
                sent_at=sent_at,
                status=status,
                retry_after=retry_after,
                spent=spent(states, need_tokens=cost),
                used=requests_used(states),
            )
        elif status is not None and 200 <= status < 300:
            self._aimd.grow()
            decision = self._control.served(now)
        if decision is not None:
            self._slow_down(now, decision, status or 0, headers, sent_at)
        paced = self._budgets.paced
        if self._control.rate is not None and (paced is None or paced.rate != self._control.rate):
            self._budgets.set_pace(now, self._control.rate)  # learned, raised or restored
        self._judge(
            now, ticket, status, headers=headers, retry_after=retry_after, states=states, cost=cost
        )
        self.seats.released()
        self._notify()
        return decision.why if decision is not None else None

    def learn(self, headers: Mapping[str, str]) -> bool:
        """Learn budgets from a response that was not an attempt (the run's preflight).

        Returns True when the headers carried rate limits; the probe is then unnecessary,
        so the first wave may go at once (it costs a whole round trip otherwise). A budget
        spent until beyond the cap counts as an over-cap ask, as after an attempt.
        """
        now = self._clock()
        states = self._learn(headers, now, None)
        if not states:
            return False
        self._judge(now, None, None, headers=headers, retry_after=None, states=states, cost=0)
        self._probing = False
        self._notify()
        return True

    def give_up(self, why: str) -> None:
        """Admit nothing more, and tell the run why (`on_give_up`), once."""
        if not self.seats.closed:
            self.close()
            if self._on_give_up is not None:
                self._on_give_up(why)

    def close(self) -> None:
        """Admit nothing more: rows waiting (for admission or a retry backoff) are cancelled
        now, attempts on the wire may finish, and their rows are cancelled when they end."""
        self.seats.close()
        self._line.wake_all()

    def waiting(self) -> str | None:
        """What holds attempts back right now and for how long; None when nothing does."""
        now = self._clock()
        if self._cooldown_until > now:
            return f"{math.ceil(self._cooldown_until - now)} s for {self._cooldown_why}"
        if self.cost is not None and (held_back := self.cost.waiting()) is not None:
            return held_back
        head = self._head
        if head is None or head[1] == "cooldown":  # a cool-down that just ended
            return None
        until, why = head
        if why == "slots" and self._aimd.limit >= self._concurrency:
            return None  # every slot busy: the run is at full speed, not held back
        if why in ("pace", "ramp") and until - now < 1:
            return None  # the steady gaps of a pace (`slowed` says why), not a wait
        text = _WHY[why].format(
            probe=self._probe_s,
            limit=self._aimd.limit,
            concurrency=self._concurrency,
            cap=self._max_wait,
            pace=self._budgets.paced.rate if self._budgets.paced is not None else 0.0,
        )
        return f"{math.ceil(until - now)} s for {text}" if math.isfinite(until) else f"for {text}"

    def _wait_s(self, now: float, cost: int, *, waited: float) -> tuple[float, str]:
        """The wait before this attempt may go, and what imposes it (a `_WHY` key)."""
        wait, why = self._cooldown_until - now, "cooldown"
        limit = self._aimd.limit
        if self._probing and now >= self._probe_ends:
            self._probing = False
        if self._probing:
            limit = 1
        if self._in_flight >= limit:
            # A freed slot wakes us; a probe that never answers frees the others in time.
            slot = self._probe_ends - now if self._probing else math.inf
            if slot > wait:
                wait, why = slot, "probe" if self._probing else "slots"
        # What was learned holds the head for at most the cap; the user's flags hold it fully.
        delay, kind = self._budgets.delay(now, cost, learned_left=max(0.0, self._max_wait - waited))
        if delay > wait:
            wait, why = delay, kind
        return wait, why

    def _commit(self, now: float, cost: int) -> None:
        self._in_flight += 1
        self._budgets.take(now, cost)
        self._control.sent(now)
        self._seq += 1
        self._reserved += cost
        self._reserved_in_flight += cost
        if self._probing and self._probe_ends == math.inf:
            self._probe_ends = now + self._probe_s
        _TICKET.set(_Ticket(self, self._seq, now, self._reserved))
        self.seats.admitted(now)

    def _learn(
        self, headers: Mapping[str, str], now: float, ticket: _Ticket | None
    ) -> dict[str, LimitState]:
        states = parse_rate_limit_headers(headers, now=self._wall())
        # The server counted this attempt on arrival, but maybe not the ones still in flight
        # (sent earlier with a slower path) nor those sent after it: assume it counted none.
        budgets = self._budgets
        requests = states.get("requests")
        if budgets.requests_flag is None and requests is not None:
            later = self._seq - ticket.seq if ticket is not None else 0
            budgets.requests_seen.sync(requests, uncounted=max(later, self._in_flight), now=now)
        tokens = token_state(states)
        if budgets.tokens_flag is None and tokens is not None:
            later = self._reserved - ticket.reserved if ticket is not None else 0
            uncounted = max(later, self._reserved_in_flight)
            budgets.tokens_seen.sync(tokens, uncounted=uncounted, now=now)
        return states

    def _slow_down(
        self,
        now: float,
        decision: Decision,
        status: int,
        headers: Mapping[str, str],
        sent_at: float | None,
    ) -> None:
        """Carry out what the controller found a limit calls for. A pause is a shared
        cool-down: the limit's Retry-After, at most the cap."""
        if decision.cut_slots:
            self._aimd.cut(now, sent_at)
        if decision.distrust_headers:
            self._budgets.distrust(now)
        self.slowed = decision.why
        wait = decision.pause_s
        until = now + min(wait, self._max_wait)
        if wait <= 0 or until <= self._cooldown_until:
            return
        self._cooldown_until = until
        quoted = quote_headers(headers)
        self._cooldown_why = f"HTTP {status}" + (f" {quoted}" if quoted else "")
        if wait > self._max_wait:
            self._cooldown_why += f" (capped at {self._max_wait:g} s)"

    def _judge(
        self,
        now: float,
        ticket: _Ticket | None,
        status: int | None,
        *,
        headers: Mapping[str, str],
        retry_after: float | None,
        states: Mapping[str, LimitState],
        cost: int,
    ) -> None:
        """Count an over-cap ask (`Patience.judge`); give up on the run when they persist."""
        verdict = self._patience.judge(
            now=now,
            sent_at=ticket.at if ticket is not None else None,
            ok=status is not None and 200 <= status < 300,
            headers=headers,
            retry_after=retry_after,
            states=states,
            cost=cost,
        )
        if verdict is not None:
            self.give_up(verdict)

    def _notify(self) -> None:
        """Something the head waits on may have changed: it looks again."""
        self._line.wake_head()
