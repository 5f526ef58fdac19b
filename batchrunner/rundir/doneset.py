"""The done set: the outcome of every input row position, in memory, and its counts.

Rebuilt from the run dir's files on every open (replay.py); never stored. Pure: no IO.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence


class Outcome(IntEnum):
    """What is recorded for a row; the value is the byte the done set keeps for it."""

    PENDING = 0
    SUCCEEDED = 1
    ERRORED = 2


# Plain ints for the per-row hot paths (a resume skips a million rows through is_done).
_PENDING, _SUCCEEDED, _ERRORED = int(Outcome.PENDING), int(Outcome.SUCCEEDED), int(Outcome.ERRORED)


@dataclass(frozen=True, slots=True, kw_only=True)
class Counts:
    """Rows of the current input by outcome; `to_send` is what this run still sends."""

    total: int
    succeeded: int
    errored: int
    pending: int
    to_send: int  # pending, plus errored when errors are retried

    @property
    def skipped(self) -> int:
        """Rows this run does not send again (recorded, and not to be retried)."""
        return self.total - self.to_send


class DoneSet:
    """Outcome per input row position: pending, succeeded or errored (last mark wins).

    A bytearray of Outcome values: O(1) lookups, one byte per row. It grows past `total`
    when parts hold rows of a larger earlier run; counts only look at positions below `total`.
    `outside`: positions below `total` that belong to other shards (`--shard`); they are
    never marked, and count as neither done nor pending.
    """

    def __init__(self, total: int, *, retry_errors: bool = False, outside: int = 0) -> None:
        self.total = total
        self.retry_errors = retry_errors
        self.outside = outside
        self._codes = bytearray(total)
        self._counts = [total - outside, 0, 0]

    def code(self, index: int) -> Outcome:
        return Outcome(self._codes[index] if index < len(self._codes) else _PENDING)

    def is_done(self, index: int) -> bool:
        """Skip this row? Errored rows count as done unless retry_errors."""
        code = self._codes[index] if index < len(self._codes) else _PENDING
        return code == _SUCCEEDED or (code == _ERRORED and not self.retry_errors)

    def mark(self, index: int, *, succeeded: bool) -> None:
        if index >= len(self._codes):
            self._codes.extend(bytes(index + 1 - len(self._codes)))
        new = _SUCCEEDED if succeeded else _ERRORED
        if index < self.total:
            self._counts[self._codes[index]] -= 1
            self._counts[new] += 1
        self._codes[index] = new

    def mark_many(self, indices: Sequence[int], succeeded: Sequence[bool]) -> None:
        """Bulk `mark` for replay; call `recount` afterwards."""
        if not indices:
            return
        ascending = isinstance(indices, range) and indices.step == 1
        top = indices[-1] if ascending else max(indices)
        if top >= len(self._codes):
            self._codes.extend(bytes(top + 1 - len(self._codes)))
        codes = self._codes
        if ascending and succeeded.count(succeeded[0]) == len(succeeded) == len(indices):
            # one outcome over contiguous positions (a part proved by its footer): one copy
            code = _SUCCEEDED if succeeded[0] else _ERRORED
            codes[indices[0] : top + 1] = bytes((code,)) * len(indices)
            return
        for i, ok in zip(indices, succeeded, strict=True):
            codes[i] = _SUCCEEDED if ok else _ERRORED

    def recount(self) -> None:
        n = self.total
        if len(self._codes) < n:
            self._codes.extend(bytes(n - len(self._codes)))
        ok, err = self._codes.count(_SUCCEEDED, 0, n), self._codes.count(_ERRORED, 0, n)
        self._counts = [n - self.outside - ok - err, ok, err]

    def set_total(self, total: int) -> None:
        self.total = total
        self.recount()

    def count(self, code: Outcome, upto: int | None = None) -> int:
        """Rows below `upto` (default: the total) with outcome `code` (O(n), for summaries).

        By position: PENDING includes the `outside` positions (`counts` leaves them out).
        """
        end = self.total if upto is None else upto
        beyond = max(0, end - len(self._codes)) if code == _PENDING else 0
        return self._codes.count(code, 0, end) + beyond

    def count_done(self, upto: int | None = None) -> int:
        """Rows below `upto` that `is_done` would skip."""
        errored = 0 if self.retry_errors else self.count(Outcome.ERRORED, upto)
        return self.count(Outcome.SUCCEEDED, upto) + errored

    def counts(self) -> Counts:
        """The counts below the total, as a frozen value (O(1))."""
        pending, succeeded, errored = self._counts
        return Counts(
            total=self.total - self.outside,
            succeeded=succeeded,
            errored=errored,
            pending=pending,
            to_send=pending + (errored if self.retry_errors else 0),
        )

    @property
    def succeeded(self) -> int:
        return self._counts[_SUCCEEDED]

    @property
    def errored(self) -> int:
        return self._counts[_ERRORED]

    @property
    def pending(self) -> int:
        return self._counts[_PENDING]

    @property
    def remaining(self) -> int:
        """Rows this run still has to send: pending, plus errored with retry_errors."""
        return self.counts().to_send
