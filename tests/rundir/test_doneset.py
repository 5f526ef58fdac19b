"""The done set: outcomes per row position, counts below the total, the frozen Counts."""

from __future__ import annotations

import dataclasses

import pytest

from batchrunner.rundir import Counts, DoneSet, Outcome


def test_done_set_counts_only_rows_below_the_total() -> None:
    """Rows past the total are remembered but not counted; last mark wins."""
    done = DoneSet(3, retry_errors=True)
    done.mark(1, succeeded=False)
    done.mark(7, succeeded=True)
    assert (done.succeeded, done.errored, done.pending, done.remaining) == (0, 1, 2, 3)
    assert not done.is_done(1) and done.is_done(7) and not done.is_done(100)
    done.mark(1, succeeded=True)
    assert (done.succeeded, done.errored) == (1, 0)
    ok, err, pending = Outcome.SUCCEEDED, Outcome.ERRORED, Outcome.PENDING
    assert (done.count(ok), done.count(err), done.count(pending), done.count_done()) == (1, 0, 2, 1)
    assert (done.count(ok, 8), done.count(pending, 20), done.count_done(8)) == (2, 18, 2)
    done.set_total(8)
    assert (done.succeeded, done.pending) == (2, 6)
    strict = DoneSet(3)
    strict.mark(0, succeeded=False)
    assert strict.count_done() == 1 and strict.is_done(0)


def test_counts_is_a_frozen_value_that_knows_what_is_left_to_send() -> None:
    """Counts holds the totals; with retry_errors errored rows are sent again."""
    for retry, to_send in ((False, 2), (True, 3)):
        done = DoneSet(4, retry_errors=retry)
        done.mark(0, succeeded=True)
        done.mark(1, succeeded=False)
        counts = done.counts()
        assert counts == Counts(total=4, succeeded=1, errored=1, pending=2, to_send=to_send)
        assert counts.skipped == 4 - to_send == done.count_done()
        with pytest.raises(dataclasses.FrozenInstanceError):
            counts.total = 5  # type: ignore[misc]


def test_outcome_codes_are_the_bytes_on_record() -> None:
    """PENDING/SUCCEEDED/ERRORED are 0/1/2, and code() answers with them."""
    assert [int(o) for o in Outcome] == [0, 1, 2]
    done = DoneSet(2)
    done.mark(1, succeeded=False)
    assert (done.code(0), done.code(1), done.code(99)) == (
        Outcome.PENDING,
        Outcome.ERRORED,
        Outcome.PENDING,
    )


@pytest.mark.parametrize(
    ("indices", "succeeded"),
    [
        (range(2, 6), [True] * 4),
        (range(3, 12), [False] * 9),  # grows the set past its total
        (range(1, 4), [True, False, True]),  # a range with mixed outcomes: one by one
        ([5, 1, 3], [True, False, True]),
    ],
)
def test_mark_many_of_a_range_marks_exactly_what_one_by_one_marks(
    indices: range | list[int], succeeded: list[bool]
) -> None:
    """The one-copy path for a contiguous run leaves the same codes as `mark` per row."""
    bulk, single = DoneSet(8), DoneSet(8)
    single.mark(0, succeeded=False)
    bulk.mark_many([0], [False])
    bulk.mark_many(indices, succeeded)
    bulk.recount()
    for i, ok in zip(indices, succeeded, strict=True):
        single.mark(i, succeeded=ok)
    assert [bulk.code(i) for i in range(14)] == [single.code(i) for i in range(14)]
    assert bulk.counts() == single.counts()
