"""run_job: validate, resume, fan out, record. The only module that opens task groups.

One task group: a producer, exactly `concurrency` long-lived workers (so the server never
sees more requests in flight), a committer that seals journal segments into Parquet parts,
a signal watcher and a stall watchdog. A failed row is data (an errored Result); only
run-level failures raise.
"""

from __future__ import annotations

import gc
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from batchrunner.breakers import FailureStreak, run_failure
from batchrunner.calllog import CallLog
from batchrunner.client import Sent, make_client, preflight, send
from batchrunner.errors import (
    BatchRunnerError,
    DiskError,
    InterruptedRunError,
    RunAbortedError,
    SourceError,
)
from batchrunner.outcomes import error_result, success_result
from batchrunner.pacing import Pacer
from batchrunner.protocols import get_protocol
from batchrunner.retrying import RetryPolicy
from batchrunner.rundir import RunDir, StoredSummary, stored_summary
from batchrunner.sources import SourceOptions, input_identity, read_rows, validate

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import httpx
    from anyio.abc import TaskGroup
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from batchrunner.records import Result, Row
    from batchrunner.spec import JobSpec


@dataclass(slots=True, kw_only=True)
class Progress:
    """Live counters, handed to the CLI's progress display about once a second."""

    total: int
    done_before: int = 0
    succeeded: int = 0
    errored: int = 0
    in_flight: int = 0
    started: float = 0.0
    stopping: str | None = None

    @property
    def done(self) -> int:
        return self.done_before + self.succeeded + self.errored


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

    def __init__(self, spec: JobSpec, rundir: RunDir, total: int, policy: RetryPolicy) -> None:
        self.spec = spec
        self.rundir = rundir
        self.total = total
        self.policy = policy
        self.progress = Progress(total=total, done_before=rundir.counts().skipped)
        n = spec.limits.concurrency
        # AIMD floor: an eighth of --concurrency. Halving all the way to 1 serialised a run
        # behind every cool-down when 429s were sporadic (one per few dozen answers); the
        # shared cool-down and the request budget already do the hard braking.
        self.pacer = Pacer(
            concurrency=n, rpm=spec.limits.rpm, tpm=spec.limits.tpm, min_limit=max(1, n // 8)
        )
        self.streak = FailureStreak(spec.limits.breaker_window)
        self.stopping = False
        self.abort: str | None = None
        self.last_completion = time.monotonic()
        self.inflight: dict[int, tuple[Row, anyio.CancelScope]] = {}
        self.workers: TaskGroup | None = None
        self.hooks = _Hooks()
        self.interrupted = False
        self.calllog: CallLog | None = None
        self.disk_error: DiskError | None = None

    async def produce(self, out: MemoryObjectSendStream[Row]) -> None:
        opts = source_options(self.spec)
        rows = read_rows(self.spec.input, opts, skip=self.rundir.is_done)
        async with out:
            # Parsing is CPU work; do it in a thread, a batch at a time, so the event loop
            # that serves the workers is never blocked for long.
            while not self.stopping:
                batch = await anyio.to_thread.run_sync(_take, rows, 256, self.total)
                for row in batch:  # recorded rows were skipped by read_rows
                    try:
                        await out.send(row)
                    except anyio.BrokenResourceError:  # workers stopped (signal, abort)
                        return
                if len(batch) < 256:
                    return

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
        self.progress.in_flight += 1
        try:
            while True:
                with anyio.CancelScope() as scope:
                    self.inflight[id(scope)] = (row, scope)
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
                        )
                    finally:
                        del self.inflight[id(scope)]
                if not scope.cancelled_caught:
                    break
                # The stall watchdog cancelled this attempt: send the row again.
        finally:
            self.progress.in_flight -= 1
        self._finish(row, sent)

    def _finish(self, row: Row, sent: Sent) -> None:
        if sent.error is not None:
            cause = run_failure(sent.error)
            if cause is not None:
                # Every row would fail the same way: stop, and leave this row pending.
                self._stop(abort=cause)
                return
        result = (
            success_result(row, sent)
            if sent.error is None
            else error_result(row, sent.error.error_type, sent.error.message, sent=sent)
        )
        self._record(result)
        if self.streak.observe(result.status == "succeeded"):
            self._stop(abort=self.streak.message())

    def _record(self, result: Result) -> None:
        # Synchronous on purpose: no await between receiving an answer and journaling it,
        # so nothing received ever waits in a buffer that a crash would lose.
        try:
            self.rundir.record(result)
        except DiskError as exc:
            self._fail(exc)
            return
        self.last_completion = time.monotonic()
        if result.status == "succeeded":
            self.progress.succeeded += 1
        else:
            self.progress.errored += 1

    def _stop(self, *, abort: str | None = None, reason: str | None = None) -> None:
        if abort is not None and self.abort is None:
            self.abort = abort
            if self.workers is not None:
                self.workers.cancel_scope.cancel()
        self.stopping = True
        self.progress.stopping = abort or reason

    async def commit_loop(self) -> None:
        while True:
            await anyio.sleep(0.2)
            # --durability os: the ~1 s loss bound must hold while outcomes are sparse too.
            self.rundir.sync_if_due(time.monotonic())
            if self.rundir.should_seal(time.monotonic()):
                await self.commit()

    async def commit(self) -> None:
        try:
            sealed = self.rundir.seal()
            if sealed is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self.rundir.commit, sealed)
        except DiskError as exc:
            self._fail(exc)

    def _fail(self, exc: DiskError) -> None:
        """The run dir cannot be written: stop everything; what is on disk stays valid."""
        if self.disk_error is None:
            self.disk_error = exc
        self._stop(abort=str(exc))

    async def report_loop(self) -> None:
        while self.hooks.progress is not None:
            self.hooks.progress(self.progress)
            await anyio.sleep(1.0)

    async def watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                if not self.stopping:
                    name = signal.Signals(signum).name
                    self._stop(reason=f"{name}: finishing requests in flight")
                    if self.workers is not None:
                        self.workers.cancel_scope.deadline = (
                            anyio.current_time() + self.spec.limits.grace_s
                        )
                elif self.workers is not None:
                    # Second Ctrl-C: skip the grace period; what arrived is still recorded.
                    self.workers.cancel_scope.cancel()
                self.interrupted = True

    async def watch_stalls(self) -> None:
        stall = self.spec.limits.stall_timeout_s
        if stall <= 0:
            return
        while True:
            await anyio.sleep(min(1.0, stall / 4))
            idle = time.monotonic() - self.last_completion
            if idle >= stall and self.inflight:
                ids = ", ".join(row.id for row, _ in list(self.inflight.values())[:20])
                if self.hooks.warn:
                    self.hooks.warn(f"nothing completed for {idle:.0f} s; requeueing: {ids}")
                for _, scope in list(self.inflight.values()):
                    scope.cancel()
                self.last_completion = time.monotonic()


def _take(rows: Iterator[Row], n: int, total: int) -> list[Row]:
    out: list[Row] = []
    for row in rows:
        if row.index >= total:
            break
        out.append(row)
        if len(out) == n:
            break
    return out


def source_options(spec: JobSpec) -> SourceOptions:
    return SourceOptions(
        api=spec.api,
        template=spec.request.template,
        id_column=spec.request.id_column,
        prompt_column=spec.request.prompt_column,
    )


async def run_job(
    spec: JobSpec,
    *,
    api_key: str,
    policy: RetryPolicy | None = None,
    progress: Callable[[Progress], None] | None = None,
    call_echo: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> RunStats:
    """Run (or resume) the job; return final counts. Raises only run-level errors."""
    policy = policy or RetryPolicy(
        max_attempts=spec.limits.max_attempts, max_elapsed_s=spec.limits.max_elapsed_s
    )
    fingerprint: dict[str, object] = {
        "input": await anyio.to_thread.run_sync(input_identity, spec.input),
        "settings": spec.request_settings(),
    }
    # A resume of the same input and settings was validated when the run began: skip the
    # pass (a few seconds per million rows) and start sending at once.
    known = stored_summary(spec.output, fingerprint)
    if known is None:
        summary = await anyio.to_thread.run_sync(validate, spec.input, source_options(spec))
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
        run = _Run(spec, rundir, total, policy)
        run.hooks = _Hooks(progress=progress, call_echo=call_echo, warn=warn)
        run.progress.started = time.monotonic()
        if run.progress.done < total:
            await _fan_out(run, api_key)
        await run.commit()
        if run.progress.done < total and progress:
            progress(run.progress)
        return await _finish(run, extra_columns)


async def _fan_out(run: _Run, api_key: str) -> None:
    try:
        with _quiet_gc():
            await _fan_out_tasks(run, api_key)
    except BaseExceptionGroup as group:
        # A run-level error raised inside the task group (say, a source that became
        # unreadable) leaves as itself, so the CLI can give its one-line message.
        ours = [e for e in _leaves(group) if isinstance(e, BatchRunnerError)]
        if ours:
            raise ours[0] from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return out


@contextmanager
def _quiet_gc() -> Iterator[None]:
    """Fewer, cheaper garbage collections while requests fly.

    Every request allocates a few hundred short-lived objects; with the default gen-0
    threshold (700) the collector runs several times per request and its full passes walk
    every long-lived object (pyarrow, aiohttp). In the Little's-law benchmark the client
    spent 0.77 ms of CPU per request with the default collector and 0.65 ms with none.
    Freezing start-up objects and raising the thresholds keeps most of that gain while
    reference cycles are still collected.
    """
    old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 50)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


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
                outer.start_soon(run.commit_loop)
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


async def _preflight(run: _Run, client: httpx.AsyncClient) -> None:
    """A refused key stops the run before the first generation is paid for; announced rate
    limits seed the pacer so the first wave need not wait for a probe's round trip."""
    error, headers = await preflight(client)
    if error is not None and error.http_status in (401, 403):
        run._stop(abort=run_failure(error) or str(error))
        return
    run.pacer.learn(headers)


async def _finish(run: _Run, extra_columns: dict[str, str]) -> RunStats:
    counts = run.rundir.counts()
    succeeded, errored, pending = counts.succeeded, counts.errored, counts.pending
    results = None
    if run.abort is None and not run.interrupted and pending == 0:
        results = str(await anyio.to_thread.run_sync(run.rundir.finalize, extra_columns))
    stats = RunStats(
        total=run.total,
        succeeded=succeeded,
        errored=errored,
        pending=pending,
        sent_rows=run.progress.succeeded + run.progress.errored,
        results=results,
        warnings=tuple(run.rundir.warnings),
    )
    if run.disk_error is not None:
        raise run.disk_error
    if run.abort is not None:
        raise RunAbortedError(f"run stopped: {run.abort}")
    if run.interrupted:
        raise InterruptedRunError(
            f"interrupted: {succeeded + errored} of {run.total} rows recorded, {pending} pending; "
            f"run the same command again to resume"
        )
    return stats
