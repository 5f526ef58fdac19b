"""Answers a row may take without sending: --dedupe's (this run) and --cache's (any run).

`Reuse.ticket` wraps the sending of one row. Its `answer` is set when the row is answered
already (it is recorded as is, and nothing is sent); otherwise the row is sent, and a
success is handed to `answered` *before* it is recorded (`dedupe.jsonl` must have it
first, see `dedupe`) and stored in the cache after.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from batchrunner.cache import ResponseCache, cache_key
from batchrunner.dedupe import Dedupe, body_key
from batchrunner.outcomes import reused_answer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path
    from types import TracebackType

    from batchrunner.calllog import CallLog
    from batchrunner.records import Request, Result, Row
    from batchrunner.spec import JobSpec


class Ticket:
    """One row's claim: an answer found, or the duty to report the one it gets."""

    def __init__(self, dedupe: Dedupe | None, key: str | None) -> None:
        self.answer: Result | None = None  # answered already: record this, send nothing
        self.sent: Result | None = None  # the success this row paid for
        self._dedupe, self._key = dedupe, key

    def answered(self, result: Result, *, paid: bool = True) -> None:
        """`result` succeeded: the copies of its body take it (on disk before it is
        recorded), and the cache stores it when the ticket closes (if `paid` for)."""
        if self._dedupe is not None and self._key is not None:
            self._dedupe.settle(self._key, result)
        if paid:
            self.sent = result


class Reuse:
    """--dedupe and --cache for one run (either may be off); a context manager that
    closes the cache. Opening a cache that cannot be used raises ConfigError (exit 2)."""

    def __init__(self, spec: JobSpec, run_dir: Path) -> None:
        self.dedupe = Dedupe(run_dir) if spec.dedupe else None
        self.cache = None
        if spec.cache is not None:
            ttl, mode = spec.cache_ttl_s, spec.cache_mode
            self.cache = ResponseCache(spec.cache, ttl_s=ttl, mode=mode)

    def __enter__(self) -> Reuse:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.cache is not None:
            self.cache.close()

    def ticket(
        self, row: Row, request: Request, log: CallLog
    ) -> contextlib.AbstractAsyncContextManager[Ticket]:
        """The row's ticket (`async with`); waits while a row with the same body is on the
        wire. With neither option on, a plain one: a generator's machinery per row cost
        ~1 µs."""
        if self.dedupe is None and self.cache is None:
            return contextlib.nullcontext(Ticket(None, None))
        return self._ticket(row, request, log)

    @contextlib.asynccontextmanager
    async def _ticket(self, row: Row, request: Request, log: CallLog) -> AsyncIterator[Ticket]:
        key = body_key(request) if self.dedupe is not None else None
        ticket = Ticket(self.dedupe, key)
        leader = False
        try:
            if self.dedupe is not None and key is not None:
                if (answer := await self.dedupe.claim(key)) is not None:
                    ticket.answer = reused_answer(answer, row, attempts=0)
                leader = ticket.answer is None
            if ticket.answer is None and (hit := await self._cached(request)) is not None:
                ticket.answer = reused_answer(hit, row)
                log.cache_hit(ticket.answer)
                ticket.answered(ticket.answer, paid=False)
            yield ticket
        finally:
            if leader and key is not None and self.dedupe is not None:
                self.dedupe.settle(key, None)  # not answered: a waiting copy sends its own
        if ticket.sent is not None and self.cache is not None:
            await self.cache.put(cache_key(request), ticket.sent)

    async def _cached(self, request: Request) -> Result | None:
        return None if self.cache is None else await self.cache.get(cache_key(request))
