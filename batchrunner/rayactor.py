"""The Ray engine's worker side: one Ray Data actor runs the local engine over each batch.

`Worker` is the callable class `map_batches` gives a batch of pickled rows. For each batch
it opens its own actor directory (`DIR/ray/<actor>/`, a run directory layout, locked while
the batch runs) and runs `runner._Run` over the batch's rows: the same workers, pacer,
retries, parsing and synchronous journal as a local run, `--concurrency` requests in
flight. Only the producer differs: the batch's rows instead of the input file.

A batch Ray runs again (its actor died) first skips the rows other actors' directories
hold, so a row journaled before the death is not sent again. Nothing here imports Ray:
the engine module does, and Ray pickles `Worker` by reference.

The API key is read from the actor's own environment, never passed through Ray: a local
Ray's workers inherit the driver's environment, a cluster's nodes are started with it.
Ray 2.60's runtime-env agent logs a runtime_env's `env_vars` in clear text, and objects
in its store may be spilled to disk.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import pyarrow as pa

from batchrunner.config import KEY_ENV
from batchrunner.errors import BatchRunnerError, RunAbortedError, StopReason
from batchrunner.progress import Hooks
from batchrunner.reuse import Reuse
from batchrunner.rundir import RunDir
from batchrunner.rundir.actors import ACTORS_DIR, Elsewhere, owner, stop_words
from batchrunner.runner import _fan_out, _Run

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from batchrunner.feed import Feed
    from batchrunner.records import Row
    from batchrunner.retrying import RetryPolicy
    from batchrunner.rundir import StoredSummary
    from batchrunner.spec import JobSpec


STOP_POLL_S = 0.25  # how soon an actor sees the driver's stop request
_NO_KEY = (
    f"{KEY_ENV} is not set in the environment of the Ray workers on {{}}: start the "
    "cluster's nodes with it (see README, Ray engine); nothing was sent from there"
)


@dataclass(frozen=True, slots=True)
class Job:
    """What every actor needs of the run, sent once to each (pickled by Ray)."""

    spec: JobSpec
    fingerprint: dict[str, object]
    total: int
    summary: StoredSummary
    policy: RetryPolicy
    owner: str  # the driver's token (actors.take_over): an older driver's actors stand down


@dataclass(slots=True)
class BatchOutcome:
    """What one batch did, for the driver: counts, a stop, a run-level error, warnings."""

    succeeded: int = 0
    errored: int = 0
    skipped: int = 0  # rows another actor had recorded (a batch run again)
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    stop: StopReason | None = None
    error: BatchRunnerError | None = None
    warnings: list[str] = field(default_factory=list)


class _BatchRun(_Run):
    """A local run whose producer hands out one batch's rows."""

    def __init__(self, *args: Any, rows: list[Row], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rows = rows

    async def produce(self, out: Feed[Row]) -> None:
        try:
            for row in self.rows:
                if self.stop is not None:
                    return
                try:
                    await out.send(row)
                except anyio.BrokenResourceError:  # the workers stopped
                    return
        finally:
            await out.close()


async def requested_stops(run_dir: Path) -> AsyncIterator[signal.Signals]:
    """The driver's stop requests (`actors.request_stop`) as the signals a local run
    takes: the first stops sending and lets the wire finish, a second cuts it short."""
    seen = 0
    while True:
        words = stop_words(run_dir)
        for word in words[seen:]:
            yield signal.SIGTERM if word == "SIGTERM" else signal.SIGINT
        seen = len(words)
        await anyio.sleep(STOP_POLL_S)


async def run_batch(job: Job, actor_dir: Path, rows: list[Row], key: str) -> BatchOutcome:
    """Run `rows` with the local engine, journaling into `actor_dir`."""
    hooks = Hooks(interrupts=requested_stops(job.spec.output))
    spec = job.spec
    outcome = BatchOutcome()
    with (
        RunDir.open(
            actor_dir,
            fingerprint=job.fingerprint,
            total_rows=job.total,
            retry_errors=spec.retry_errors,
            durability=spec.durability,
            input_summary=job.summary,
        ) as rundir,
        Reuse(spec, actor_dir) as reuse,
    ):  # --cache; --dedupe is refused
        if owner(spec.output) != job.owner:  # checked under our lock: see actors.take_over
            outcome.stop = StopReason("a newer invocation took over the run directory")
            return outcome
        run = _BatchRun(
            spec,
            rundir,
            total=job.total,
            policy=job.policy,
            identity={},
            hooks=hooks,
            reuse=reuse,
            rows=rows,
        )
        try:
            await _fan_out(run, key)
        except BatchRunnerError as exc:  # run-level (a disk error): the driver raises it
            outcome.error = exc
        finally:
            run.recorder.record_held()
        await run.recorder.commit()
        run.pass_warnings()
    outcome.succeeded, outcome.errored = run.progress.succeeded, run.progress.errored
    outcome.attempts, outcome.stop = run.progress.attempts, run.stop
    outcome.input_tokens = run.progress.input_tokens
    outcome.output_tokens = run.progress.output_tokens
    outcome.warnings = hooks.warnings
    return outcome


class Worker:
    """Ray Data's callable class: a batch of pickled rows in, one pickled BatchOutcome out."""

    def __init__(self, job: Job) -> None:
        self.job = job
        # Unique per actor, restarts included: two actors never share a journal.
        self.dir = job.spec.output / ACTORS_DIR / f"actor-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.elsewhere = Elsewhere(job.spec.output, self.dir)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows: list[Row] = [pickle.loads(b) for b in batch.column("row").to_pylist()]
        if stop_words(self.job.spec.output):  # the run is stopping: the rows stay pending
            return _table(BatchOutcome(stop=StopReason.from_signal(signal.SIGINT)))
        key = os.environ.get(KEY_ENV, "").strip()
        if not key:
            return _table(BatchOutcome(error=RunAbortedError(_NO_KEY.format(socket.gethostname()))))
        recorded = self.elsewhere.indices()
        todo = [row for row in rows if row.index not in recorded]
        outcome = anyio.run(run_batch, self.job, self.dir, todo, key) if todo else BatchOutcome()
        outcome.skipped = len(rows) - len(todo)
        return _table(outcome)


def _table(outcome: BatchOutcome) -> pa.Table:
    return pa.table({"outcome": [pickle.dumps(outcome)]})
