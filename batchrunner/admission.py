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

import math
from collections import deque
from contextvars import ContextVar, Token

import anyio


class AdmissionClosedError(Exception):
    """An attempt asked for admission after `close()`: the run sends nothing more."""


class Waiter:
    """One attempt waiting in the `Line`."""

    __slots__ = ("retry", "turn")

    def __init__(self, *, retry: bool) -> None:
        self.retry = retry
        self.turn = anyio.Event()  # set when it may have become the head


class Line:
    """Attempts waiting for admission: retries first, then first attempts, each in order.

    Each waiter is woken once when it becomes the head (and by `wake_all`), so hundreds of
    waiters cost one wake-up per admission, not a stampede.
    """

    def __init__(self) -> None:
        self._retries: deque[Waiter] = deque()
        self._firsts: deque[Waiter] = deque()

    def join(self, *, retry: bool) -> tuple[Waiter, bool]:
        """Queue a new waiter; also returns whether it displaced the head (a retry ahead
        of a first attempt), which must then step back."""
        waiter = Waiter(retry=retry)
        displaced = retry and not self._retries and bool(self._firsts)
        (self._retries if retry else self._firsts).append(waiter)
        return waiter, displaced

    def head(self) -> Waiter | None:
        if self._retries:
            return self._retries[0]
        return self._firsts[0] if self._firsts else None

    async def wait_turn(self, waiter: Waiter) -> None:
        """Sleep until `waiter` may be the head (the caller checks again)."""
        if waiter.turn.is_set():
            waiter.turn = anyio.Event()
        await waiter.turn.wait()

    def leave(self, waiter: Waiter) -> None:
        """Remove `waiter` (admitted or cancelled); wake the next head if it was the head."""
        was_head = self.head() is waiter
        (self._retries if waiter.retry else self._firsts).remove(waiter)
        head = self.head()
        if was_head and head is not None:
            head.turn.set()

    def wake_all(self) -> None:
        for waiter in (*self._retries, *self._firsts):
            waiter.turn.set()


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
