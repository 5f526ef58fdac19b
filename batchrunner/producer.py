"""The producer end of a run: input rows into the workers' stream, and a watch on the input.

It reads rows in a worker thread a batch at a time (parsing is CPU work the event loop
must not wait on), skips recorded rows, and stops at `total`. Rows read from an input that
changed under the run may not be the rows that were validated, and a truncated input just
ends early: either is reported to `stop`, never passed off as the end of the input.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio

from batchrunner.errors import SourceError
from batchrunner.inputs import read_rows
from batchrunner.runprep import input_changed, moved
from batchrunner.uris import Uri

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from batchrunner.feed import Feed
    from batchrunner.records import Row
    from batchrunner.spec import JobSpec

BATCH_ROWS = 256
CHECK_EVERY_S = 1.0  # how often the input is stat'ed while rows are read
# A remote object's check is a request or two (billed by the store): not every second.
REMOTE_CHECK_EVERY_S = 30.0


async def produce(
    out: Feed[Row],
    *,
    spec: JobSpec,
    total: int,
    skip: Callable[[int], bool],
    identity: dict[str, Any],
    stopping: Callable[[], bool],
    stop: Callable[[str], None],
) -> None:
    """Send the rows to do into `out`, then close it.

    `identity` is the input's when the run began; `stop(reason)` is called when the input
    is found changed (on a read error, on a periodic stat, or at its end).
    """
    how: str | None = None
    try:
        state = await _send_rows(out, spec, total, skip, identity, stopping)
    except SourceError as exc:  # validation passed: the file changed, or went bad
        state, how = "failed", f"reading it failed: {exc}"
    finally:
        await out.close()
    if state == "stopped":
        return
    why = await anyio.to_thread.run_sync(input_changed, spec.input, identity, how)
    if why is not None:
        stop(why)


async def _send_rows(
    out: Feed[Row],
    spec: JobSpec,
    total: int,
    skip: Callable[[int], bool],
    identity: dict[str, Any],
    stopping: Callable[[], bool],
) -> str:
    """ "ended" when the input was read to its end (or to `total`), "moved" when a stat
    showed it changed, "stopped" when the run is stopping."""
    rows = read_rows(spec.input, spec.source_options(), skip=skip)
    if spec.shard is not None:  # another shard's row is parsed (for its id), never sent
        owns = spec.shard.owns
        rows = (row for row in rows if owns(row.id))
    checked = time.monotonic()
    every = REMOTE_CHECK_EVERY_S if isinstance(spec.input, Uri) else CHECK_EVERY_S
    while not stopping():
        batch = await anyio.to_thread.run_sync(_take, rows, BATCH_ROWS, total)
        for row in batch:  # recorded rows were skipped by read_rows
            try:
                await out.send(row)
            except anyio.BrokenResourceError:  # workers stopped (signal, abort)
                return "stopped"
            if time.monotonic() - checked >= every:
                checked = time.monotonic()
                if await anyio.to_thread.run_sync(moved, spec.input, identity) is not None:
                    return "moved"
        if len(batch) < BATCH_ROWS:
            return "ended"
    return "stopped"


def _take(rows: Iterator[Row], n: int, total: int) -> list[Row]:
    out: list[Row] = []
    for row in rows:
        if row.index >= total:
            break
        out.append(row)
        if len(out) == n:
            break
    return out
