"""Seats: which rows have an attempt on the wire, so that a stopping run cancels the rest.

A worker takes a seat for each row it handles (`Seats.seat(scope, row_id)`), in the task that then
acquires and releases pacer slots; the pacer marks the seat on the wire from admission to
release. `close()` cancels every seat not on the wire (rows waiting for admission or for a
retry backoff: nothing of theirs is in flight, nothing is lost) and, later, each seat whose
attempt ends. Only cancel scopes here: nothing waits, sends or records.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

    import anyio


class AdmissionClosedError(Exception):
    """An attempt asked for admission after `close()`: the run sends nothing more."""


class Seat:
    """One row's place: whether an attempt of it is on the wire, and since when."""

    __slots__ = ("on_wire", "row_id", "scope", "since")

    def __init__(self, scope: anyio.CancelScope, row_id: str) -> None:
        self.scope = scope  # encloses the row's attempts and retry backoffs
        self.row_id = row_id
        self.on_wire = False
        self.since = -math.inf  # when the attempt on the wire was admitted (pacer clock)


# Set by `Seats.seat` in the worker's task; read by the pacer in the same task, so the
# client between them needs no new argument.
_SEAT: ContextVar[Seat | None] = ContextVar("batchrunner_seat", default=None)


class Seats:
    """The seats of one run, and whether it still admits attempts."""

    def __init__(self) -> None:
        self._seats: set[Seat] = set()
        self.closed = False

    @contextmanager
    def seat(self, scope: anyio.CancelScope, row_id: str) -> Iterator[Seat]:
        """Hold a seat while handling one row; `scope` is cancelled if the run stops
        while the row has no attempt on the wire."""
        seat = Seat(scope, row_id)
        self._seats.add(seat)
        token = _SEAT.set(seat)
        try:
            if self.closed:
                scope.cancel()
            yield seat
        finally:
            _SEAT.reset(token)
            self._seats.discard(seat)

    def on_wire_since(self, when: float) -> list[Seat]:
        """The seats whose attempt has been on the wire since `when` (pacer clock) or longer:
        the stall watchdog's candidates."""
        return [seat for seat in list(self._seats) if seat.on_wire and seat.since <= when]

    def retry_waiting(self) -> int:
        """Rows between a failed attempt and their next one (a retry backoff, or admission
        again): off the wire, yet admitted before. Once a second for the display."""
        return sum(1 for seat in list(self._seats) if not seat.on_wire and seat.since > -math.inf)

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
        for seat in list(self._seats):
            if not seat.on_wire:
                seat.scope.cancel()
