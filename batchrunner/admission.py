"""Who goes next and who is on the wire: the pacer's waiting line, and the rows' seats.

`Line`: attempts waiting for admission, retries ahead of first attempts (a row that waited
out its Retry-After comes back before rows not yet started), each kind in arrival order.
Only its head looks at the clock; the others sleep until they are the head.

`Seats`: a worker takes a seat for each row it handles (`Seats.seat(scope, row_id)`), in the
task that then acquires and releases pacer slots; the pacer marks the seat on the wire from
admission to release. `close()` cancels every seat not on the wire (rows waiting for
admission or for a retry backoff: nothing of theirs is in flight, nothing is lost) and,
later, each seat whose attempt ends. Only events and cancel scopes here: nothing sends or
records.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from contextvars import ContextVar, Token

import anyio


class AdmissionClosedError(Exception):
    """An attempt asked for admission after `close()`: the run sends nothing more."""


class Waiter:
    """One attempt waiting in the `Line`."""

    __slots__ = ("_woken_by", "retry", "woken")

    def __init__(self, *, retry: bool) -> None:
        self.retry = retry
        self.woken = False  # it should look again
        # While it sleeps: one future per sleep, none per wake. A bare asyncio future, not
        # an anyio Event, whose making cost ~1.3 µs more per attempt: aiohttp ties the run
        # to asyncio anyway, and anyio's cancel scopes cancel a wait on it all the same.
        self._woken_by: asyncio.Future[None] | None = None

    def wake(self) -> None:
        self.woken = True
        future = self._woken_by
        if future is not None and not future.done():
            future.set_result(None)

    async def sleep(self, at_most_s: float) -> None:
        """Until woken, or `at_most_s` seconds pass. A wake that came while it was not
        asleep ends this sleep at once: none is lost."""
        if not self.woken:
            self._woken_by = future = asyncio.get_running_loop().create_future()
            try:
                if at_most_s == math.inf:
                    await future
                else:
                    with anyio.move_on_after(at_most_s):
                        await future
            finally:
                self._woken_by = None
        self.woken = False


class Line:
    """Attempts waiting for admission: retries first, then first attempts, each in order.

    Waiters sleep until woken: the head when what holds it back may have changed
    (`wake_head`), the next one when the head leaves (unless the pacer knows it could not
    go yet), every one by `wake_all`. So hundreds of waiters cost at most one wake-up per
    admission, not a stampede.
    """

    def __init__(self) -> None:
        self._retries: deque[Waiter] = deque()
        self._firsts: deque[Waiter] = deque()

    def join(self, *, retry: bool) -> Waiter:
        """Queue a new waiter. A retry goes ahead of every first attempt: a first attempt
        it displaces from the head finds out when it next looks."""
        waiter = Waiter(retry=retry)
        (self._retries if retry else self._firsts).append(waiter)
        return waiter

    def head(self) -> Waiter | None:
        if self._retries:
            return self._retries[0]
        return self._firsts[0] if self._firsts else None

    def wake_head(self) -> None:
        head = self.head()
        if head is not None:
            head.wake()

    def leave(self, waiter: Waiter, *, wake_next: bool = True) -> None:
        """Remove `waiter` (admitted or cancelled); if it was the head, wake the next head
        unless `wake_next` is False (it could not go yet: what frees it will wake it)."""
        was_head = self.head() is waiter
        (self._retries if waiter.retry else self._firsts).remove(waiter)
        if was_head and wake_next:
            self.wake_head()

    def wake_all(self) -> None:
        for waiter in (*self._retries, *self._firsts):
            waiter.wake()


class Seat:
    """One row's place: whether an attempt of it is on the wire, and since when. A context
    manager (`Seats.seat`) written out rather than a generator one: one per row, and
    contextlib's machinery was a measurable share of a run's CPU."""

    __slots__ = ("_seats", "_token", "on_wire", "row_id", "scope", "since")

    def __init__(self, seats: Seats, scope: anyio.CancelScope, row_id: str) -> None:
        self._seats = seats
        self._token: Token[Seat | None] | None = None
        self.scope = scope  # encloses the row's attempts and retry backoffs
        self.row_id = row_id
        self.on_wire = False
        self.since = -math.inf  # when the attempt on the wire was admitted (pacer clock)

    def __enter__(self) -> Seat:
        self._seats.taken.add(self)
        self._token = _SEAT.set(self)
        if self._seats.closed:
            self.scope.cancel()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _SEAT.reset(self._token)
        self._seats.taken.discard(self)


# Set by `Seats.seat` in the worker's task; read by the pacer in the same task, so the
# client between them needs no new argument.
_SEAT: ContextVar[Seat | None] = ContextVar("batchrunner_seat", default=None)


class Seats:
    """The seats of one run, and whether it still admits attempts."""

    def __init__(self) -> None:
        self.taken: set[Seat] = set()
        self.closed = False

    def seat(self, scope: anyio.CancelScope, row_id: str) -> Seat:
        """A seat to hold (`with`) while handling one row; `scope` is cancelled if the run
        stops while the row has no attempt on the wire."""
        return Seat(self, scope, row_id)

    def on_wire_since(self, when: float) -> list[Seat]:
        """The seats whose attempt has been on the wire since `when` (pacer clock) or longer:
        the stall watchdog's candidates."""
        return [seat for seat in list(self.taken) if seat.on_wire and seat.since <= when]

    def retry_waiting(self) -> int:
        """Rows between a failed attempt and their next one (a retry backoff, or admission
        again): off the wire, yet admitted before. Once a second for the display."""
        return sum(1 for seat in list(self.taken) if not seat.on_wire and seat.since > -math.inf)

    def admitted(self, now: float) -> None:
        """The current task's attempt was admitted: its row is on the wire."""
        seat = _SEAT.get()
        if seat is not None:
            seat.on_wire, seat.since = True, now

    def released(self) -> None:
        """The current task's attempt ended; after `close()` its row stops here too (its
        retry backoff, if any, must not hold up the stop)."""
        seat = _SEAT.get()
        if seat is not None:
            seat.on_wire = False
            if self.closed:
                seat.scope.cancel()

    def close(self) -> None:
        """Admit nothing more: cancel every row that has no attempt on the wire."""
        self.closed = True
        for seat in list(self.taken):
            if not seat.on_wire:
                seat.scope.cancel()
