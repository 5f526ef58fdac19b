"""Pace every HTTP attempt: shared cool-down, adaptive in-flight limit, request and token budgets.

One Pacer per run: `await acquire(cost)` before each attempt, `release(...)` after it, always.
Waiters queue FIFO and only the head watches the clock, so hundreds cost one timer, not a
spin. No wait the server causes lasts longer than `max_wait_s`; asks beyond it are counted
(`patience`) and, when they persist, the pacer gives up on the run. `close()` stops
admission for a run that is stopping. It sends and retries nothing (that is
`attempts`' job) and uses anyio only.
"""

from __future__ import annotations

import math
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from batchrunner.admission import AdmissionClosedError, Seats
from batchrunner.budgets import Aimd, Bucket, Mirror, flag_bucket
from batchrunner.patience import Patience
from batchrunner.ratelimits import (
    LimitState,
    parse_rate_limit_headers,
    parse_retry_after,
    quote_headers,
    token_state,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from batchrunner.costcap import CostCap

# The longest single wait the server can impose (a cool-down, a learned budget's wait):
# longer asks are obeyed this far and counted, and persistent ones stop the run.
MAX_WAIT_S = 60.0
DEFAULT_COOLDOWN_S = 1.0  # a 429/529 that names no wait still pauses everyone briefly
_EPS = 1e-9
_WHY = {
    "probe": "the first request's rate-limit headers (it goes alone, at most {probe:g} s)",
    "slots": "a free slot: in-flight limit {limit} of {concurrency}, cut after 429/529s",
    "rpm": "the --rpm budget",
    "tpm": "the --tpm budget",
    "requests": "the request budget the server's headers announce (one wait: at most {cap:g} s)",
    "tokens": "the token budget the server's headers announce (one wait: at most {cap:g} s)",
}


@dataclass(frozen=True, slots=True)
class _Ticket:
    """What `acquire` remembers for the matching `release` of the same task."""

    owner: object
    seq: int  # attempts dispatched by this pacer, this one included
    at: float  # dispatch time on the pacer's clock
    reserved: int  # tokens reserved by this pacer, this attempt included


# The worker task that acquired is the one that releases, so a context variable pairs them
# without widening the API; a release without a ticket falls back to coarser estimates.
_TICKET: ContextVar[_Ticket | None] = ContextVar("batchrunner_pacer_ticket", default=None)


class Pacer:
    """Admission control for HTTP attempts, shared by every worker of a run.

    `acquire` waits until no shared cool-down is active, an in-flight slot is free under
    the adaptive limit, and the request and token budgets allow the attempt. Budgets come
    from `rpm`/`tpm` when > 0, else from the rate-limit headers `release` sees. With no
    budget given, the first attempt goes alone (a probe, for at most `probe_s` seconds) so
    its headers arrive before a full wave can overrun the server.

    The in-flight limit is AIMD: it starts at `concurrency`, halves on a 429/529 (once per
    wave: a 429 for an attempt sent before the last cut does not cut again) down to
    `min_limit`, and grows by one per `limit` successes back up to `concurrency`.

    What the server imposes is capped at `max_wait_s`: a cool-down, and a learned budget's
    hold on the head of the queue (the user's own `rpm`/`tpm` are obeyed as given). An ask
    beyond the cap (a Retry-After, or a budget spent until a far reset) is counted by
    `Patience`; when they persist, `on_give_up` gets the reason and the pacer closes.
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
        self._requests_flag = flag_bucket(rpm / 60.0, now) if rpm > 0 else None
        self._tokens_flag = flag_bucket(tpm / 60.0, now) if tpm > 0 else None
        self._requests_seen = Mirror()
        self._tokens_seen = Mirror()
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
        self._gate = anyio.Lock()
        self._changed = anyio.Event()
        self._max_wait = max_wait_s
        self._patience = Patience(max_wait_s)
        self._on_give_up = on_give_up
        self._head: tuple[float, str] | None = None  # (until, why) of the head waiter
        self.seats = Seats()  # workers take one per row: see `admission`
        # --max-cost: each attempt reserves its worst case here before `acquire` (attempts)
        self.cost: CostCap | None = None

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def limit(self) -> int:
        """The adaptive in-flight limit now (AIMD), for the progress display."""
        return self._aimd.limit

    async def acquire(self, cost_tokens: int) -> None:
        """Wait until an attempt reserving `cost_tokens` may be sent, then count it in flight.

        Cancellable at any point: nothing is taken until the moment it returns. Raises
        AdmissionClosedError once the pacer is closed.
        """
        cost = max(0, int(cost_tokens))
        async with self._gate:
            started = self._clock()
            try:
                while not self.seats.closed:
                    now = self._clock()
                    wait, why = self._wait_s(now, cost, waited=now - started)
                    if wait <= _EPS:
                        self._commit(now, cost)
                        return
                    self._head = (now + wait, why)
                    changed = self._changed
                    with anyio.move_on_after(wait):
                        await changed.wait()
            finally:
                self._head = None
        raise AdmissionClosedError("the run is stopping: nothing more is sent")

    def release(
        self,
        *,
        status: int | None,
        headers: Mapping[str, str],
        retry_after: float | None,
        cost_tokens: int,
        used_tokens: int | None,
    ) -> None:
        """End an attempt: free its slot, settle its tokens, learn from its response.

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
            refund = cost - used_tokens
            for bucket in (self._tokens_flag, self._tokens_seen.bucket):
                if bucket is not None:
                    bucket.give(now, refund)
        states = self._learn(headers, now, ticket) if headers else {}
        if retry_after is None and status in (429, 529):
            retry_after = parse_retry_after(headers, now=self._wall())
        if status in (429, 529):
            new_wave = self._aimd.cut(now, ticket.at if ticket is not None else None)
            if status == 429:
                self._requests_seen.refused(now, new_wave=new_wave)
                self._tokens_seen.refused(now, new_wave=new_wave)
            self._pause(now, retry_after, status, headers)
        elif status is not None and 200 <= status < 300:
            self._aimd.grow()
        self._judge(
            now, ticket, status, headers=headers, retry_after=retry_after, states=states, cost=cost
        )
        self.seats.released()
        self._notify()

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
        self._notify()

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
        text = _WHY[why].format(
            probe=self._probe_s,
            limit=self._aimd.limit,
            concurrency=self._concurrency,
            cap=self._max_wait,
        )
        return f"{math.ceil(until - now)} s for {text}" if math.isfinite(until) else f"for {text}"

    def _requests_bucket(self) -> Bucket | None:
        # Flags win over what the headers say: the user may be sharing the key on purpose.
        return (
            self._requests_flag if self._requests_flag is not None else self._requests_seen.bucket
        )

    def _tokens_bucket(self) -> Bucket | None:
        return self._tokens_flag if self._tokens_flag is not None else self._tokens_seen.bucket

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
        # A learned budget holds the head for at most the cap; the user's flags hold it fully.
        learned_left = max(0.0, self._max_wait - waited)
        requests = self._requests_bucket()
        if requests is not None:
            delay = requests.delay(now, 1)
            flag = requests is self._requests_flag
            delay = delay if flag else min(delay, learned_left)
            if delay > wait:
                wait, why = delay, "rpm" if flag else "requests"
        tokens = self._tokens_bucket()
        if tokens is not None and cost > 0:
            delay = tokens.delay(now, cost)
            flag = tokens is self._tokens_flag
            delay = delay if flag else min(delay, learned_left)
            if delay > wait:
                wait, why = delay, "tpm" if flag else "tokens"
        return wait, why

    def _commit(self, now: float, cost: int) -> None:
        self._in_flight += 1
        requests = self._requests_bucket()
        if requests is not None:
            requests.take(now, 1)
        tokens = self._tokens_bucket()
        if tokens is not None and cost > 0:
            tokens.take(now, cost)
        self._seq += 1
        self._reserved += cost
        self._reserved_in_flight += cost
        if self._probing and self._probe_ends == math.inf:
            self._probe_ends = now + self._probe_s
        _TICKET.set(_Ticket(owner=self, seq=self._seq, at=now, reserved=self._reserved))
        self.seats.admitted(now)

    def _learn(
        self, headers: Mapping[str, str], now: float, ticket: _Ticket | None
    ) -> dict[str, LimitState]:
        states = parse_rate_limit_headers(headers, now=self._wall())
        # The server counted this attempt on arrival, but maybe not the ones still in flight
        # (sent earlier with a slower path) nor those sent after it: assume it counted none.
        requests = states.get("requests")
        if self._requests_flag is None and requests is not None:
            later = self._seq - ticket.seq if ticket is not None else 0
            self._requests_seen.sync(requests, uncounted=max(later, self._in_flight), now=now)
        tokens = token_state(states)
        if self._tokens_flag is None and tokens is not None:
            later = self._reserved - ticket.reserved if ticket is not None else 0
            uncounted = max(later, self._reserved_in_flight)
            self._tokens_seen.sync(tokens, uncounted=uncounted, now=now)
        return states

    def _pause(
        self, now: float, wait: float | None, status: int, headers: Mapping[str, str]
    ) -> None:
        """The shared cool-down after a 429/529: the server's wait, at most the cap."""
        if wait is None or not math.isfinite(wait) or wait < 0:
            wait = DEFAULT_COOLDOWN_S
        until = now + min(wait, self._max_wait)
        if until <= self._cooldown_until:
            return
        self._cooldown_until = until
        quoted = quote_headers(headers)
        why = f"HTTP {status}" + (f" {quoted}" if quoted else "")
        if wait > self._max_wait:
            why += f" (capped at {self._max_wait:g} s)"
        self._cooldown_why = why

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
        changed, self._changed = self._changed, anyio.Event()
        changed.set()
