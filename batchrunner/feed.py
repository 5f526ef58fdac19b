"""The rows' way from the producer to the workers: a bounded FIFO on asyncio's queue.

anyio's memory object streams yield to the event loop on every send and every receive, and
build an Event and a receiver object whenever a worker waits; here a row already queued
is taken without a yield. The semantics the run relies on are kept: the producer's `send`
raises BrokenResourceError once every worker has left (a stop), and a worker's iteration
ends when the producer closed the feed and the rows before the close are taken.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Generic, TypeVar, cast

import anyio

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

T = TypeVar("T")
_END = object()  # after the last row: each worker that takes it puts it back for the next


class Feed(Generic[T]):
    """One producer, `workers` receivers, at most `size` items waiting."""

    def __init__(self, size: int, *, workers: int) -> None:
        self._queue: asyncio.Queue[object] = asyncio.Queue(size)
        self._workers = workers  # still iterating; none left: the feed is broken

    async def send(self, item: T) -> None:
        """Queue `item`, waiting for room; BrokenResourceError once no worker is left."""
        if self._workers:
            await self._queue.put(item)
        if not self._workers:  # the item is dropped with the rest: nobody will take it
            raise anyio.BrokenResourceError

    async def close(self) -> None:
        """No more items: the workers end once they have taken the ones queued."""
        if self._workers:
            await self._queue.put(_END)

    async def items(self) -> AsyncGenerator[T, None]:
        """A worker's items, until the feed is closed; the worker leaves when this ends
        (or is closed early: by a stop, or by its cancellation)."""
        queue = self._queue
        try:
            while (item := await queue.get()) is not _END:
                yield cast("T", item)  # only `send` puts, besides _END
            queue.put_nowait(_END)  # room: it was just taken
        finally:
            self._workers -= 1
            if not self._workers:
                while not queue.empty():  # a producer waiting for room may go on
                    queue.get_nowait()
