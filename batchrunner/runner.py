"""run_job: validate, resume, fan out, record. The only module that opens task groups.

One task group: a producer, exactly `concurrency` long-lived workers (so the server never
sees more requests in flight), a committer that seals journal segments into Parquet parts,
a signal watcher and a stall watchdog. A failed row is data (an errored Result); only
run-level failures raise, and a run that ends with rows pending always raises.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import anyio

from batchrunner.admission import AdmissionClosedError
from batchrunner.breakers import FailureStreak, run_failure
from batchrunner.calllog import CallLog
from batchrunner.client import Sent, make_client, send
from batchrunner.errors import (
    DiskError,
    InterruptedRunError,
    RunAbortedError,
    SourceError,
    TerminatedRunError,
    run_level_error,
)
from batchrunner.inputs import validate
from batchrunner.outcomes import error_result, success_result
from batchrunner.pacing import Pacer
from batchrunner.preflight import preflight
from batchrunner.process import fit_concurrency, quiet_gc
from batchrunner.producer import produce
from batchrunner.progress import Progress
from batchrunner.protocols import get_protocol
from batchrunner.recorder import Recorder
from batchrunner.retrying import RetryPolicy
from batchrunner.rundir import RunDir, StoredSummary, stored_summary
from batchrunner.runprep import stored_identity

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx
    from anyio.abc import TaskGroup
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from batchrunner.admission import Seat
    from batchrunner.records import Result, Row
    from batchrunner.spec import JobSpec

__all__ = ["Progress", "RunStats", "run_job"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStats:
    """The run's final counts over all rows (this invocation and earlier ones)."""

    total: int
    succeeded: int
    errored: int
    pending: int
    sent_rows: int
    results: str | None
    warnings: tuple[str, ...] = ()


@dataclass(slots=True, kw_only=True)
class _Hooks:
    progress: Callable[[Progress], None] | None = None
    call_echo: Callable[[str], None] | None = None
    warn: Callable[[str], None] | None = None


class _Run:
    """Shared state of one invocation; the task group's tasks are its methods."""

    def __init__(
        self,
        spec: JobSpec,
        rundir: RunDir,
        total: int,
        policy: RetryPolicy,
        identity: dict[str, Any],
    ) -> None:
        self.spec = spec
        self.rundir = rundir
        self.total = total
        self.policy = policy
        self.identity = identity  # the input's, when the run began
        self.progress = Progress(total=total, done_before=rundir.counts().skipped)
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
            on_give_up=lambda why: self._stop(abort=why, drain=True),
        )
        self.streak = FailureStreak(spec.limits.breaker_window)
        self.streak_held: list[Result] = []  # errored rows of the current failure streak
        self.stopping = False
        self.abort: str | None = None
        self.last_completion = time.monotonic()
        self.inflight: dict[int, tuple[Row, Seat]] = {}
        self.workers: TaskGroup | None = None
        self.hooks = _Hooks()
        self.interrupted: signal.Signals | None = None
        self.calllog: CallLog | None = None
        # A run dir that refuses writes stops everything at once.
        self.recorder = Recorder(rundir, on_error=lambda exc: self._stop(abort=str(exc)))

    async def produce(self, out: MemoryObjectSendStream[Row]) -> None:
        await produce(
            out,
            spec=self.spec,
            total=self.total,
            skip=self.rundir.is_done,
            identity=self.identity,
            stopping=lambda: self.stopping,
            # Drain: what is on the wire was read before the change was seen, and is paid.
            stop=lambda why: self._stop(abort=why, drain=True),
        )

    async def work(self, rows: MemoryObjectReceiveStream[Row], client: httpx.AsyncClient) -> None:
        async with rows:
            async for row in rows:
                if self.stopping:
                    return
                await self._handle(row, client)

    async def _handle(self, row: Row, client: httpx.AsyncClient) -> None:
        protocol = get_protocol(row.api or self.spec.api)
        try:
            request = protocol.build_request(
                row, self.spec.request, stream=self.spec.request.stream
            )
        except SourceError as exc:  # validation should have caught it; record, don't crash
            self._record(error_result(row, "invalid_input", exc.reason))
            return
        while True:
            # The seat lets a stop cancel this row at once while it waits for the pacer or
            # a retry backoff; only an attempt on the wire gets the grace period.
            with anyio.CancelScope() as scope, self.pacer.seats.seat(scope) as seat:
                self.inflight[id(scope)] = (row, seat)
                try:
                    sent = await send(
                        client,
                        request,
                        protocol=protocol,
                        policy=self.policy,
                        timeout_s=self.spec.limits.attempt_timeout(request.stream),
                        idle_timeout_s=min(120.0, self.spec.limits.attempt_timeout(True)),
                        pacer=self.pacer,
                        on_attempt=self.calllog.write if self.calllog else None,
                        max_response_bytes=self.spec.limits.max_response_bytes,
                    )
                except AdmissionClosedError:
                    return  # the run is stopping: the row stays pending
                finally:
                    del self.inflight[id(scope)]
            if not scope.cancelled_caught:
                break
            if self.stopping:
                return  # cancelled by the stop: the row stays pending
            # The stall watchdog cancelled this attempt: send the row again.
        self._finish(row, sent)

    def _finish(self, row: Row, sent: Sent) -> None:
        if sent.error is None:
            # A success ends the failure streak: the errors held back are real outcomes.
            self.streak.observe(True)
            self._release_held()
            self._record(success_result(row, sent))
            return
        cause = run_failure(sent.error)
        if cause is not None:
            # Every row would fail the same way: stop, and leave this row pending.
            self._stop(abort=cause)
            return
        if self.abort is not None:
            return  # the run is stopping for a run-level cause: this row stays pending
        result = error_result(row, sent.error.error_type, sent.error.message, sent=sent)
        if self.streak.k == 0:
            self._record(result)
            return
        # Held back until the streak ends: if it trips the breaker, these rows failed for
        # the run's reason, not their own, and stay pending so the resume after the fix
        # sends them again. A kill -9 loses them the same way (at most breaker_window
        # rows, which errored anyway, are sent again).
        self.streak_held.append(result)
        self.last_completion = time.monotonic()  # an outcome, for the stall watchdog
        if self.streak.observe(False):
            self.streak_held.clear()
            self._stop(abort=self.streak.message(str(sent.error)))

    def _release_held(self) -> None:
        """Journal the errored rows held back by a failure streak that did not trip."""
        held, self.streak_held = self.streak_held, []
        for result in held:
            self._record(result)

    def _record(self, result: Result) -> None:
        if not self.recorder.record(result):  # synchronous: see `recorder`
            return
        self.last_completion = time.monotonic()
        if result.status == "succeeded":
            self.progress.succeeded += 1
        else:
            self.progress.errored += 1

    def _stop(
        self, *, abort: str | None = None, reason: str | None = None, drain: bool = False
    ) -> None:
        """Stop sending. `abort`: a run-level cause (exit 3), unless a signal came first.
        `drain`: attempts on the wire may finish within the grace period; otherwise every
        task stops now. Either way rows without an attempt on the wire are cancelled now."""
        if abort is not None and self.abort is None and self.interrupted is None:
            self.abort = abort
        self.stopping = True
        self.progress.stopping = self.progress.stopping or abort or reason
        self.pacer.close()
        if self.workers is None:
            return
        if not drain:
            self.workers.cancel_scope.cancel()
        else:
            deadline = anyio.current_time() + self.spec.limits.grace_s
            scope = self.workers.cancel_scope
            scope.deadline = min(scope.deadline, deadline)

    async def report_loop(self) -> None:
        while self.hooks.progress is not None:
            self.progress.in_flight = self.pacer.in_flight
            self.progress.waiting = None if self.stopping else self.pacer.waiting()
            self.hooks.progress(self.progress)
            await anyio.sleep(1.0)

    async def watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                if self.interrupted is None:
                    self.interrupted = signal.Signals(signum)
                if not self.stopping:
                    name = signal.Signals(signum).name
                    self._stop(reason=f"{name}: finishing requests in flight", drain=True)
                elif self.workers is not None:
                    # Second Ctrl-C: skip the grace period; what arrived is still recorded.
                    self.workers.cancel_scope.cancel()

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
            stuck = [
                (row, seat)
                for row, seat in list(self.inflight.values())
                if seat.on_wire and now - seat.since >= stall
            ]
            if idle >= stall and stuck:
                ids = ", ".join(row.id for row, _ in stuck[:20])
                if self.hooks.warn:
                    self.hooks.warn(f"nothing completed for {idle:.0f} s; requeueing: {ids}")
                for _, seat in stuck:
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
) -> RunStats:
    """Run (or resume) the job; return final counts when every row has an outcome.

    Raises the run-level errors: before sending (exit 2), and for a run that stops with
    rows pending (exit 3, 130 or 143; see `errors`).
    """
    concurrency, lowered = fit_concurrency(spec.limits.concurrency)
    if lowered is not None:
        spec = replace(spec, limits=replace(spec.limits, concurrency=concurrency))
        if warn:
            warn(lowered)
    policy = policy or RetryPolicy(
        max_attempts=spec.limits.max_attempts,
        max_elapsed_s=spec.limits.max_elapsed_s,
        max_wait_s=spec.limits.max_wait_s,
    )
    stored, identity = await anyio.to_thread.run_sync(stored_identity, spec.input, spec.output)
    fingerprint: dict[str, object] = {"input": stored, "settings": spec.request_settings()}
    # A resume of the same input and settings was validated when the run began: skip the
    # pass (a few seconds per million rows) and start sending at once.
    known = stored_summary(spec.output, fingerprint)
    if known is None:
        summary = await anyio.to_thread.run_sync(validate, spec.input, spec.source_options())
        known = StoredSummary(rows=summary.rows, extra_columns=summary.extra_columns)
    rows, extra_columns = known.rows, dict(known.extra_columns)
    total = min(rows, spec.limit) if spec.limit else rows
    rundir = RunDir.open(
        spec.output,
        fingerprint=fingerprint,
        total_rows=total,
        retry_errors=spec.retry_errors,
        durability=spec.durability,
        input_summary=known,
    )
    with rundir:
        for message in rundir.warnings:
            if warn:
                warn(message)
        run = _Run(spec, rundir, total, policy, identity)
        run.hooks = _Hooks(progress=progress, call_echo=call_echo, warn=warn)
        run.progress.started = time.monotonic()
        try:
            if run.progress.done < total:
                await _fan_out(run, api_key)
        finally:
            run.recorder.record_held()
        await run.recorder.commit()
        if run.progress.done < total and progress:
            progress(run.progress)
        return await _finish(run, extra_columns)


async def _fan_out(run: _Run, api_key: str) -> None:
    try:
        with quiet_gc():
            await _fan_out_tasks(run, api_key)
    except BaseExceptionGroup as group:
        # A run-level error raised inside the task group leaves as itself, so the CLI can
        # give its one-line message.
        error = run_level_error(group, run.rundir.path, sent=True)
        if error is None:
            raise
        raise error from None


async def _fan_out_tasks(run: _Run, api_key: str) -> None:
    n = run.spec.limits.concurrency
    with CallLog(run.spec.output / "calls.log", echo=run.hooks.call_echo) as calllog:
        run.calllog = calllog
        async with make_client(
            base_url=run.spec.base_url, api_key=api_key, concurrency=n
        ) as client:
            await _preflight(run, client)
            if run.abort is not None:
                return
            send_rows, recv_rows = anyio.create_memory_object_stream["Row"](max_buffer_size=2 * n)
            async with anyio.create_task_group() as outer:
                outer.start_soon(run.recorder.commit_loop)
                outer.start_soon(run.report_loop)
                outer.start_soon(run.watch_signals)
                outer.start_soon(run.watch_stalls)
                async with anyio.create_task_group() as workers:
                    run.workers = workers
                    workers.start_soon(run.produce, send_rows)
                    for _ in range(n):
                        workers.start_soon(run.work, recv_rows.clone(), client)
                    recv_rows.close()
                outer.cancel_scope.cancel()
            if run.abort is None:
                run._release_held()  # the run ended (or was interrupted) without tripping


async def _preflight(run: _Run, client: httpx.AsyncClient) -> None:
    """A refused key, or a base URL that is no API at all, stops the run before the first
    generation is paid for; announced rate limits seed the pacer so the first wave need
    not wait for a probe's round trip."""
    check = await preflight(client)
    error = check.error
    if check.stop is not None:
        run._stop(abort=check.stop)
    elif error is not None and error.http_status in (401, 403):
        run._stop(abort=run_failure(error) or str(error))
    else:
        run.pacer.learn(check.headers)


async def _finish(run: _Run, extra_columns: dict[str, str]) -> RunStats:
    tally = run.rundir.counts()
    succeeded, errored, pending = tally.succeeded, tally.errored, tally.pending
    results = None
    if run.abort is None and run.interrupted is None and pending == 0:
        results = str(await anyio.to_thread.run_sync(run.rundir.finalize, extra_columns))
    counts = f"{succeeded + errored} of {run.total} rows recorded, {pending} pending"
    if run.recorder.error is not None:
        raise DiskError(f"{run.recorder.error} ({counts})")
    if run.abort is not None:
        raise RunAbortedError(f"run stopped: {run.abort} ({counts})")
    if run.interrupted is not None:
        error = TerminatedRunError if run.interrupted == signal.SIGTERM else InterruptedRunError
        raise error(
            f"interrupted by {run.interrupted.name}: {counts}; run the same command again to resume"
        )
    if pending:
        # Nothing stopped the run, yet rows have no outcome: never report that as done.
        raise RunAbortedError(
            f"run ended with rows pending although nothing stopped it ({counts}); "
            "run the same command again to resume"
        )
    return RunStats(
        total=run.total,
        succeeded=succeeded,
        errored=errored,
        pending=pending,
        sent_rows=run.progress.succeeded + run.progress.errored,
        results=results,
        warnings=tuple(run.rundir.warnings),
    )
