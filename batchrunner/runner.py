"""run_job: validate, resume, fan out, record. The only module that opens task groups.

One task group: a producer, twice `concurrency` long-lived workers (the pacer lets exactly
`concurrency` attempts be on the wire; the other workers take the slots of rows waiting out
a Retry-After), a committer that seals journal segments into Parquet parts, a signal
watcher and a stall watchdog. A failed row is data (an errored Result); only
run-level failures raise, and a run that ends with rows pending always raises.
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import anyio

from batchrunner.admission import AdmissionClosedError
from batchrunner.attempts import send
from batchrunner.breakers import FailureStreak, run_failure
from batchrunner.calllog import CallLog
from batchrunner.client import make_client
from batchrunner.costcap import cost_cap
from batchrunner.errors import DiskError, SourceError, StopReason, run_level_error
from batchrunner.feed import Feed
from batchrunner.inputs.images import request_for
from batchrunner.invocation import recorded
from batchrunner.outcomes import error_result, success_result
from batchrunner.pacing import Pacer
from batchrunner.preflight import preflight
from batchrunner.process import quiet_gc, release_free_memory, trim_heap
from batchrunner.producer import produce
from batchrunner.progress import Hooks, Progress, RunEnd
from batchrunner.protocols import get_protocol
from batchrunner.recorder import Recorder
from batchrunner.records import RunStats
from batchrunner.reuse import Reuse
from batchrunner.runend import finish
from batchrunner.runprep import open_run
from batchrunner.structured import OutputCheck

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Callable

    from batchrunner.client import ApiClient
    from batchrunner.records import Result, Row, Sent
    from batchrunner.retrying import RetryPolicy
    from batchrunner.reuse import Ticket
    from batchrunner.rundir import RunDir
    from batchrunner.spec import JobSpec

__all__ = ["Progress", "RunEnd", "RunStats", "run_job"]


class _Run:
    """Shared state of one invocation; the task group's tasks are its methods."""

    def __init__(
        self,
        spec: JobSpec,
        rundir: RunDir,
        *,
        total: int,
        policy: RetryPolicy,
        identity: dict[str, Any],
        hooks: Hooks,
        reuse: Reuse,
    ) -> None:
        self.spec = spec
        self.rundir = rundir
        self.reuse = reuse  # --dedupe and --cache
        self.total = total  # input positions to read: the rows of the run are `counts().total`
        self.policy = policy
        self.identity = identity  # the input's, when the run began
        self.hooks = hooks
        counts = rundir.counts()
        self.progress = Progress(
            total=counts.total, done_before=counts.skipped, started=time.monotonic()
        )
        n = spec.limits.concurrency
        # AIMD floor: an eighth of --concurrency. Halving all the way to 1 serialised a run
        # behind every cool-down when 429s were sporadic (one per few dozen answers); the
        # shared cool-down and the request budget already do the hard braking.
        self.pacer = Pacer(
            concurrency=n,
            rpm=spec.limits.rpm,
            tpm=spec.limits.tpm,
            min_limit=max(1, n // 8),
            max_wait_s=spec.limits.max_wait_s,
            on_give_up=lambda why: self._stop(StopReason(why), drain=True),
        )
        self.streak: FailureStreak[Result] = FailureStreak(spec.limits.breaker_window)
        schema = spec.request.json_schema
        self.check = OutputCheck(schema, spec.api) if schema is not None else None
        self.stop: StopReason | None = None
        self.last_completion = time.monotonic()
        # The producer's and the workers' scope: a stop cancels it, at once or after the grace.
        self.workers = anyio.CancelScope()
        self._warned = 0  # rundir.warnings given to hooks.warn so far
        # A run dir that refuses writes stops everything at once.
        self.recorder = Recorder(
            rundir,
            on_error=lambda exc: self._stop(StopReason(str(exc), DiskError)),
            after_commit=trim_heap,
        )
        self.pass_warnings()

    async def finish(self, extra_columns: dict[str, str]) -> RunStats:
        """`runend.finish` for this run: results.parquet, or the stop's error."""
        release_free_memory()
        return await finish(
            self.rundir,
            self.spec,
            self.stop,
            pass_warnings=self.pass_warnings,
            sent_rows=self.progress.succeeded + self.progress.errored,
            warnings=self.hooks.warnings,
            extra_columns=extra_columns,
        )

    def pass_warnings(self) -> None:
        """Give the run directory's new warnings (torn lines, misfit values) to `warn`."""
        for message in self.rundir.warnings[self._warned :]:
            self.hooks.warn(message)
        self._warned = len(self.rundir.warnings)

    async def fan_out(self, api_key: str) -> None:
        """The preflight, then the producer, the workers and the watchers until all rows
        are done or the run stops."""
        n, url = self.spec.limits.concurrency, self.spec.base_url
        log = self.spec.output / "calls.log"
        with CallLog(log, echo=self.hooks.call_echo, tap=self.progress.attempted) as calllog:
            async with make_client(base_url=url, api_key=api_key, concurrency=n) as client:
                await self._preflight(client)
                if self.stop is not None:
                    return
                rows = Feed["Row"](2 * n, workers=2 * n)
                async with anyio.create_task_group() as outer:
                    for watcher in (self.report_loop, self.watch_signals, self.watch_stalls):
                        outer.start_soon(watcher)
                    outer.start_soon(self.recorder.commit_loop)
                    outer.start_soon(calllog.flushing)
                    with self.workers:
                        async with anyio.create_task_group() as workers:
                            workers.start_soon(self.produce, rows)
                            # The pacer keeps n attempts on the wire; as many more workers
                            # let rows waiting out a Retry-After leave their slot to others.
                            for _ in range(2 * n):
                                workers.start_soon(self.work, rows, client, calllog)
                    outer.cancel_scope.cancel()
        if self.stop is None or not self.stop.run_level:
            self._record(*self.streak.release())  # ended (or interrupted) without tripping

    async def _preflight(self, client: ApiClient) -> None:
        """A refused key, or a base URL that is no API at all, stops the run before the
        first generation is paid for; announced rate limits seed the pacer so the first
        wave need not wait for a probe's round trip."""
        check = await preflight(client)
        error = check.error
        if check.stop is not None:
            self._stop(StopReason(check.stop))
        elif error is not None and error.http_status in (401, 403):
            self._stop(StopReason(run_failure(error) or str(error)))
        else:
            self.pacer.learn(check.headers)

    async def produce(self, out: Feed[Row]) -> None:
        await produce(
            out,
            spec=self.spec,
            total=self.total,
            skip=self.rundir.is_done,
            identity=self.identity,
            stopping=lambda: self.stop is not None,
            # Drain: what is on the wire was read before the change was seen, and is paid.
            stop=lambda why: self._stop(StopReason(why), drain=True),
        )

    async def work(self, feed: Feed[Row], client: ApiClient, calllog: CallLog) -> None:
        async with aclosing(feed.items()) as rows:
            async for row in rows:
                if self.stop is not None:
                    return
                await self._handle(row, client, calllog)

    async def _handle(self, row: Row, client: ApiClient, calllog: CallLog) -> None:
        protocol = get_protocol(row.api or self.spec.api)
        try:
            request = await request_for(protocol, row, self.spec.request)
        except SourceError as exc:  # validation should have caught it; record, don't crash
            self._record(error_result(row, "invalid_input", exc.reason))
            return
        async with self.reuse.ticket(row, request, calllog) as ticket:
            if ticket.answer is not None:
                self._record(ticket.answer, reused=True)  # answered already: nothing sent
                return
            while True:
                # The seat lets a stop cancel this row at once while it waits for the pacer
                # or a retry backoff; only an attempt on the wire gets the grace period.
                with anyio.CancelScope() as scope, self.pacer.seats.seat(scope, row.id):
                    try:
                        sent = await send(
                            client,
                            request,
                            protocol=protocol,
                            policy=self.policy,
                            timeout_s=self.spec.limits.attempt_timeout(request.stream),
                            idle_timeout_s=min(120.0, self.spec.limits.attempt_timeout(True)),
                            pacer=self.pacer,
                            on_attempt=calllog.write,
                            max_response_bytes=self.spec.limits.max_response_bytes,
                            check=self.check,
                            output_retries=self.spec.request.output_retries,
                        )
                    except AdmissionClosedError:
                        return  # the run is stopping: the row stays pending
                if not scope.cancelled_caught:
                    break
                if self.stop is not None:
                    return  # cancelled by the stop: the row stays pending
                # The stall watchdog cancelled this attempt: send the row again.
            self._settle(row, sent, ticket)

    def _settle(self, row: Row, sent: Sent, ticket: Ticket) -> None:
        """Record a row's outcome, unless it tells (or comes during) a run-level stop."""
        if sent.error is None:
            result = success_result(row, sent)
            ticket.answered(result)  # before it is recorded: see dedupe
            # A success ends the failure streak: the errors held back are real outcomes.
            self._record(*self.streak.succeeded(), result)
            return
        locked = self.rundir.holds_outcomes  # then a stop's advice cannot be a new setting
        cause = run_failure(sent.error, settings_locked=locked)
        if cause is not None:
            # Every row would fail the same way: stop, and leave this row pending.
            self._stop(StopReason(cause))
            return
        if self.stop is not None and self.stop.run_level:
            return  # the run is stopping for a run-level cause: this row stays pending
        result = error_result(row, sent.error.error_type, sent.error.message, sent=sent)
        if self.streak.k == 0:
            self._record(result)
            return
        # Held back until the streak ends: if it trips the breaker, these rows failed for
        # the run's reason, not their own, and stay pending (see FailureStreak).
        self.last_completion = time.monotonic()  # an outcome, for the stall watchdog
        if self.streak.failed(result):
            why = self.streak.message(str(sent.error), str(self.spec.output), locked)
            self._stop(StopReason(why))

    def _record(self, *results: Result, reused: bool = False) -> None:
        for result in results:
            if not self.recorder.record(result):  # synchronous: see `recorder`
                return  # the run directory refused it, and the run is stopping
            self.last_completion = time.monotonic()
            self.progress.recorded(result, reused=reused)

    def _stop(self, reason: StopReason, *, drain: bool = False) -> None:
        """Stop sending for `reason` (see `StopReason.replaces` for which one stands).
        `drain`: attempts on the wire may finish within the grace period; otherwise every
        task stops now. Either way rows without an attempt on the wire are cancelled now."""
        if reason.replaces(self.stop):
            self.stop = reason
        self.pacer.close()
        if not drain:
            self.workers.cancel()
        else:
            deadline = anyio.current_time() + self.spec.limits.grace_s
            self.workers.deadline = min(self.workers.deadline, deadline)

    def snapshot(self) -> Progress:
        """The live counters with what the pacer and the stop say now, for `hooks.progress`."""
        self.progress.in_flight = self.pacer.in_flight
        self.progress.limit, self.progress.pace = self.pacer.limit, self.pacer.pace
        self.progress.retry_waiting = self.pacer.seats.retry_waiting()
        self.progress.slowed = self.pacer.slowed
        self.progress.waiting = None if self.stop is not None else self.pacer.waiting()
        self.progress.stopping = self.stop.shown if self.stop is not None else None
        return self.progress

    async def report_loop(self) -> None:
        while self.hooks.progress is not None:
            self.hooks.progress(self.snapshot())
            await anyio.sleep(1.0)

    async def watch_signals(self) -> None:
        """SIGINT/SIGTERM: the caller's `interrupts`, else the process's, whose handlers
        only the main thread may install (elsewhere a run stops when cancelled)."""
        if self.hooks.interrupts is not None:
            await self._on_signals(self.hooks.interrupts)
        elif threading.current_thread() is threading.main_thread():
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                await self._on_signals(signals)

    async def _on_signals(self, signals: AsyncIterable[int]) -> None:
        async for signum in signals:
            if self.stop is None:
                self._stop(StopReason.from_signal(signal.Signals(signum)), drain=True)
            else:
                # Second Ctrl-C: skip the grace period; what arrived is still recorded.
                self.workers.cancel()

    async def watch_stalls(self) -> None:
        stall = self.spec.limits.stall_timeout_s
        if stall <= 0:
            return
        while True:
            await anyio.sleep(min(1.0, stall / 4))
            now = time.monotonic()
            idle = now - self.last_completion
            # Only attempts on the wire for that long: a row waiting for the pacer (say, a
            # cool-down) is not stalled, and one sent a moment ago has not had its chance.
            stuck = self.pacer.seats.on_wire_since(now - stall)
            if idle >= stall and stuck:
                ids = ", ".join(seat.row_id for seat in stuck[:20])
                self.hooks.warn(f"nothing completed for {idle:.0f} s; requeueing: {ids}")
                for seat in stuck:
                    seat.scope.cancel()
                self.last_completion = time.monotonic()


async def run_job(
    spec: JobSpec,
    *,
    api_key: str,
    policy: RetryPolicy | None = None,
    progress: Callable[[Progress], None] | None = None,
    call_echo: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
    interrupts: AsyncIterable[signal.Signals] | None = None,
    ended: Callable[[RunEnd], None] | None = None,
) -> RunStats:
    """Run (or resume) the job; return final counts when every row has an outcome.
    Raises the run-level errors: before sending (exit 2), and for a stop with rows pending
    (exit 3, 130, 143). Every warning goes to `warn` as it arises (and into RunStats).
    `interrupts` replaces the process's SIGINT/SIGTERM (`_Run.watch_signals`); `ended`
    hears how the invocation ended (`RunEnd`), which run.json records too."""
    started = (time.time(), time.monotonic())
    hooks = Hooks(
        progress=progress, call_echo=call_echo, warn_to=warn, interrupts=interrupts, ended=ended
    )
    opened = await open_run(spec, hooks.warn, policy)
    spec, rundir = opened.spec, opened.rundir
    with (
        rundir,
        Reuse(spec, rundir.path) as reuse,  # a cache that cannot be opened: exit 2, nothing sent
        recorded(rundir, spec, identity=opened.stored, hooks=hooks, started=started) as inv,
    ):
        run = _Run(
            spec,
            rundir,
            total=opened.total,
            policy=opened.policy,
            identity=opened.identity,
            hooks=hooks,
            reuse=reuse,
        )
        run.pacer.cost = await cost_cap(spec, rundir.path, on_refused=run.pacer.give_up)
        inv.progress = run.progress
        try:
            if run.progress.done < run.progress.total:
                await _fan_out(run, api_key)
        finally:
            run.recorder.record_held()
        await run.recorder.commit()
        if progress:  # the last word, so a display shows the final counts
            progress(run.snapshot())
        return await run.finish(dict(opened.known.extra_columns))


async def _fan_out(run: _Run, api_key: str) -> None:
    try:
        with quiet_gc():
            await run.fan_out(api_key)
    except BaseExceptionGroup as group:
        # A run-level error raised inside the task group leaves as itself, so the CLI can
        # give its one-line message.
        error = run_level_error(group, run.rundir.path, sent=True)
        if error is None:
            raise
        raise error from None
