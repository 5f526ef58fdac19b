"""`--engine ray`: the driver of a run whose rows are sent by Ray Data actors.

The driver does what a local run does before and after sending: the same `prepare`
(validation, fingerprint), the same run directory (lock, manifest, run.json), and at the
end the same `_Run.finish` (results.parquet, exit codes). In between, the rows still to do are
read with the same reader as the local producer (recorded rows skipped, `--shard`
applied), pickled into Arrow blocks in the object store, and `map_batches` hands them to a
pool of `rayactor.Worker`s, each running the local engine over its batch with
`--concurrency` requests in flight. Each actor journals into `DIR/ray/<actor>/`; the
driver then gathers those parts into the run directory (`rundir.gather`), also at the
start of a resume, so the actors' outcomes of a killed driver count.

Ray is imported here and nowhere else, and only when a run asks for it.
"""

from __future__ import annotations

import logging
import pickle
import signal
import threading
import time
import warnings
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import anyio
import pyarrow as pa

from batchrunner.errors import (
    BatchRunnerError,
    ConfigError,
    OutputError,
    RunAbortedError,
    StopReason,
)
from batchrunner.inputs import read_rows
from batchrunner.invocation import recorded
from batchrunner.progress import Hooks
from batchrunner.rayactor import BatchOutcome, Job, Worker
from batchrunner.reuse import Reuse
from batchrunner.rundir.actors import release, request_stop, take_over
from batchrunner.rundir.gather import gather, wait_idle
from batchrunner.runner import _Run
from batchrunner.runprep import input_changed, open_run
from batchrunner.spec import RayEngine

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Callable, Iterator

    from batchrunner.progress import Progress, RunEnd
    from batchrunner.records import RunStats
    from batchrunner.retrying import RetryPolicy
    from batchrunner.rundir import Counts, RunDir
    from batchrunner.spec import JobSpec

RAY_MISSING = "--engine ray needs Ray, which is not installed: pip install 'batchrunner[ray]'"
ACTOR_CPUS = 0.25  # an actor mostly waits on sockets; full-CPU actors hung Ray on 2 cores
DEFAULT_ACTORS = 2
IDLE_WAIT_S = 60.0  # how long a resume waits for a killed driver's actors to end


def engine_spec(engine: str | None, address: str | None, actors: int | None) -> RayEngine | None:
    """`--engine`, `--ray-address`, `--ray-actors` into a RayEngine (None: local).
    ConfigError (exit 2) for Ray options without `--engine ray`, or Ray not installed."""
    if engine != "ray":
        if address is not None or actors is not None:
            raise ConfigError("--ray-address and --ray-actors need --engine ray")
        return None
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return RayEngine(address=address, actors=actors or DEFAULT_ACTORS)


def batch_rows(concurrency: int) -> int:
    """Rows per batch: enough for many waves of `concurrency`, as each batch pays a
    preflight and opening the actor's directory."""
    return max(1024, 16 * concurrency)


async def run_ray(
    spec: JobSpec,
    *,
    api_key: str,
    policy: RetryPolicy | None = None,
    progress: Callable[[Progress], None] | None = None,
    warn: Callable[[str], None] | None = None,
    interrupts: AsyncIterable[signal.Signals] | None = None,
    ended: Callable[[RunEnd], None] | None = None,
) -> RunStats:
    """`runner.run_job` with the rows sent by Ray actors; raises and returns the same.
    `api_key` is not passed on: each actor reads it from its own environment (rayactor)."""
    del api_key
    assert spec.engine is not None
    if spec.limits.max_cost is not None:
        raise ConfigError("--max-cost does not combine with --engine ray (no shared cap)")
    if spec.dedupe:
        # Copies of a body would sit in different actors, each with its own dedupe.jsonl.
        raise ConfigError("--dedupe does not combine with --engine ray (no shared claim)")
    started = (time.time(), time.monotonic())
    hooks = Hooks(progress=progress, warn_to=warn, interrupts=interrupts, ended=ended)
    opened = await open_run(spec, hooks.warn, policy)
    spec, rundir, total = opened.spec, opened.rundir, opened.total
    with rundir:
        token = take_over(rundir.path)  # before the gathering: see actors.take_over
        await anyio.to_thread.run_sync(_gather, rundir, total)  # a killed driver's rows
        with recorded(rundir, spec, identity=opened.stored, hooks=hooks, started=started) as inv:
            # The driver sends nothing: its run only counts what the actors recorded.
            no_reuse = Reuse(replace(spec, cache=None), rundir.path)
            run = _Run(
                spec,
                rundir,
                total=total,
                policy=opened.policy,
                identity=opened.identity,
                hooks=hooks,
                reuse=no_reuse,
            )
            inv.progress = run.progress
            job = Job(
                _per_actor(spec), opened.fingerprint, total, opened.known, opened.policy, token
            )
            driver = _Driver(run, job)
            before = rundir.counts()
            if run.progress.done < run.progress.total:
                await driver.drive()
            await anyio.to_thread.run_sync(_gather, rundir, total, True)
            release(rundir.path)
            _count_gathered(run, before)
            if driver.error is not None:
                raise driver.error
            if progress:
                progress(run.snapshot())
            return await run.finish(dict(opened.known.extra_columns))


def _per_actor(spec: JobSpec) -> JobSpec:
    """Each actor's share of `--rpm`/`--tpm`: the budgets are the run's, not an actor's.
    The cache's path absolute: an actor's working directory is Ray's, not the driver's."""
    assert spec.engine is not None
    n, limits = spec.engine.actors, spec.limits
    rpm = limits.rpm / n if limits.rpm else limits.rpm
    tpm = limits.tpm / n if limits.tpm else limits.tpm
    cache = spec.cache.absolute() if spec.cache is not None else None
    return replace(spec, limits=replace(limits, rpm=rpm, tpm=tpm), cache=cache)


def _count_gathered(run: _Run, before: Counts) -> None:
    """This invocation's counters from what was gathered too: the outcomes of a batch
    whose report never reached the driver (its actor was killed) count as well."""
    after = run.rundir.counts()
    run.progress.succeeded = max(run.progress.succeeded, after.succeeded - before.succeeded)
    run.progress.errored = max(run.progress.errored, after.errored - before.errored)


def _gather(rundir: RunDir, total: int, sent: bool = False) -> None:
    """Gather the actors' parts into `rundir` once none runs a batch. Exit 2 when some
    still do before this invocation sent anything; 3 after (never 2 once sent)."""
    try:
        wait_idle(rundir.path, timeout_s=IDLE_WAIT_S)
        gather(rundir, total_rows=total)
    except OutputError as exc:
        if not sent:
            raise
        raise RunAbortedError(f"{exc}; what the actors recorded is kept") from None


class _Driver:
    """The Ray side of one invocation: the dataset runs in a thread; outcomes, stops and
    signals meet in the event loop's thread. A stop reaches the actors through the stop
    file (`actors.request_stop`): they let the requests on the wire finish and hand back
    every later batch untouched, so the dataset ends soon and nothing paid is lost."""

    def __init__(self, run: _Run, job: Job) -> None:
        self.run = run
        self.job = job
        self.error: BatchRunnerError | None = None
        self.stopping = False  # the actors were asked to stop

    async def drive(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_signals)
            await anyio.to_thread.run_sync(self._execute)
            tg.cancel_scope.cancel()

    def _execute(self) -> None:
        """Start or join Ray, put the rows to do into its object store, run the dataset to
        its end (blocking: a worker thread). Errors end up in `self.error`."""
        import ray

        own = not ray.is_initialized()  # a caller's own Ray session is left running
        try:
            if own:
                engine = self.job.spec.engine
                assert engine is not None
                ray.init(
                    address=engine.address,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.ERROR,  # Ray's start-up notices are not the run's
                )
            # One block at a time in this process: the object store spills to disk.
            refs = [ray.put(table) for table in self._to_do()]
            why = input_changed(self.run.spec.input, self.run.identity, None)
            if why is not None:  # the rows read may not be the rows validated: send none
                anyio.from_thread.run_sync(self._take, BatchOutcome(stop=StopReason(why)))
            elif refs:
                self._run_dataset(refs)
        except BatchRunnerError as exc:  # the input could not be read (nothing was sent)
            self.error = self.error or exc
        except Exception as exc:  # Ray's: no cluster at the address, a lost driver...
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self.error = self.error or RunAbortedError(f"Ray failed: {type(exc).__name__} {why}")
        finally:
            if own:
                ray.shutdown()  # a local Ray stops; a cluster's actors of this job end

    def _to_do(self) -> Iterator[pa.Table]:
        """The rows to send, read as the local producer reads them, in batch-sized blocks."""
        spec, size = self.run.spec, batch_rows(self.run.spec.limits.concurrency)
        owns = spec.shard.owns if spec.shard is not None else None
        chunk: list[bytes] = []
        for row in read_rows(spec.input, spec.source_options(), skip=self.run.rundir.is_done):
            if row.index >= self.run.total:
                break
            if owns is None or owns(row.id):
                chunk.append(pickle.dumps(row))
            if len(chunk) == size:
                yield pa.table({"row": pa.array(chunk, pa.binary())})
                chunk = []
        if chunk:
            yield pa.table({"row": pa.array(chunk, pa.binary())})

    def _run_dataset(self, refs: list[Any]) -> None:
        import ray.data

        # Our progress and summary are the run's; Ray Data's own chatter would bury them.
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", category=UserWarning, module="ray.data")
        engine = self.job.spec.engine
        assert engine is not None
        dataset = ray.data.from_arrow_refs(refs).map_batches(
            Worker,
            fn_constructor_kwargs={"job": self.job},
            batch_size=batch_rows(self.job.spec.limits.concurrency),
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=engine.actors),
            num_cpus=ACTOR_CPUS,
        )
        for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            assert isinstance(batch, pa.Table)  # batch_format="pyarrow"
            for data in batch.column("outcome").to_pylist():
                anyio.from_thread.run_sync(self._take, pickle.loads(data))

    def _take(self, outcome: BatchOutcome) -> None:
        run = self.run
        run.progress.succeeded += outcome.succeeded
        run.progress.errored += outcome.errored
        run.progress.attempts += outcome.attempts
        run.progress.input_tokens += outcome.input_tokens
        run.progress.output_tokens += outcome.output_tokens
        for message in outcome.warnings:
            run.hooks.warn(message)
        if outcome.error is not None and self.error is None:
            self.error = outcome.error
            self._stop_actors("stop")
        if outcome.stop is not None:
            if outcome.stop.replaces(run.stop):
                run.stop = outcome.stop
            self._stop_actors("stop")
        if run.hooks.progress is not None:
            run.hooks.progress(run.snapshot())

    def _stop_actors(self, word: str) -> None:
        if not self.stopping or word == "now":
            self.stopping = True
            request_stop(self.run.spec.output, word)

    async def _watch_signals(self) -> None:
        interrupts = self.run.hooks.interrupts
        if interrupts is not None:
            await self._on_signals(interrupts)
        elif threading.current_thread() is threading.main_thread():
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                await self._on_signals(signals)

    async def _on_signals(self, signals: AsyncIterable[int]) -> None:
        async for signum in signals:
            reason = StopReason.from_signal(signal.Signals(signum))
            if reason.replaces(self.run.stop):
                self.run.stop = reason
            # A second signal skips the grace period, as in a local run.
            self._stop_actors("now" if self.stopping else reason.why)
