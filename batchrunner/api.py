"""The Python API, `run` and `arun`, and `execute`: the entry the `run` command goes through too.

`run(source, *, output, **options)` takes a path, an iterable of dicts, a pyarrow.Table
or a DataFrame (rows given as objects are first written into the run directory, so a
resume reads the same file; `rundir.given`) and returns the results table with the
counts. It runs in the calling thread, whatever thread that is; under a running event
loop (a notebook) it runs on a thread of its own, which Ctrl-C reaches as it would the
CLI. `arun` is its coroutine twin, stopped like any coroutine: by cancelling it. The API
key comes from `CAICAINI_API_KEY` only; everything else is an option, named as the flags.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, TypedDict, TypeVar, Unpack

import anyio
import anyio.from_thread

from batchrunner.config import BASE_ENV, KEY_ENV, load_job

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping

    import pyarrow as pa

    from batchrunner.judging import JudgeStats, RunHooks
    from batchrunner.progress import Progress
    from batchrunner.records import RunStats
    from batchrunner.spec import JobSpec


_T = TypeVar("_T")

__all__ = [
    "ArrowStreamable",
    "RunOptions",
    "RunResult",
    "Source",
    "api_key",
    "arun",
    "execute",
    "run",
]

_log = logging.getLogger("batchrunner")


class ArrowStreamable(Protocol):
    """A table with the Arrow C stream interface: pyarrow.Table, pandas (>= 2.2) and
    polars DataFrames, DuckDB relations."""

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object: ...


# What `run` takes: a path (or URI), rows as dicts, or a table.
Source: TypeAlias = "str | os.PathLike[str] | Iterable[Mapping[str, Any]] | ArrowStreamable"


class RunOptions(TypedDict, total=False):
    """The `run` options, named as the CLI's flags (`--max-tokens` is `max_tokens`);
    `job` is a job file, whose settings the others override."""

    job: str | os.PathLike[str]
    api: Literal["messages", "chat"]
    base_url: str
    model: str
    max_tokens: int
    system: str
    temperature: float
    template: str
    id_column: str
    prompt_column: str
    image_column: str
    concurrency: int
    max_attempts: int
    timeout: float
    rpm: float
    tpm: float
    stream: bool
    limit: int
    retry_errors: bool
    dedupe: bool
    cache: str | os.PathLike[str]
    cache_ttl: float
    cache_mode: Literal["read", "write", "readwrite"]
    durability: Literal["process", "os"]
    format: Literal["jsonl", "csv", "tsv", "parquet"]  # when the source's name does not tell
    stall_timeout: float
    max_response_bytes: int
    progress: Callable[[Progress], None]  # live counters, about once a second
    warn: Callable[[str], None]  # each warning; default: the "batchrunner" logger


# Options whose JobSpec field (and CLI flag destination) has another name.
_RENAMED = {
    "timeout": "timeout_s",
    "stall_timeout": "stall_timeout_s",
    "format": "input_format",
    "cache_ttl": "cache_ttl_s",
}
_HOOKS = ("job", "progress", "warn")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    """A finished run: `results.parquet` as a table, and the counts over all its rows.

    `sent` counts the rows this call recorded (0 when it only found the run complete);
    `warnings` are this call's. A run that finished with errored rows is a result
    (`errored` > 0), not an exception.
    """

    table: pa.Table
    total: int
    succeeded: int
    errored: int
    sent: int
    output: Path
    warnings: tuple[str, ...] = ()


def run(
    source: Source, *, output: str | os.PathLike[str], **options: Unpack[RunOptions]
) -> RunResult:
    """Run (or resume) `source` into the run directory `output`, as `batchrunner run` does.

    Raises the CLI's errors as exceptions, each with its `exit_code`: ConfigError,
    SourceError or OutputError before anything is sent; RunAbortedError (or
    InterruptedRunError) when the run stopped with rows pending, to be resumed by the
    same call. From a thread whose event loop is running, the run gets a thread of its own.
    """
    key = api_key()
    spec = _prepare(source, output, dict(options))
    from batchrunner.judging import RunHooks

    hooks = RunHooks(progress=options.get("progress"), warn=_warn(options))
    stats, _ = execute(spec, api_key=key, hooks=hooks)
    return _result(spec, stats)


async def arun(
    source: Source, *, output: str | os.PathLike[str], **options: Unpack[RunOptions]
) -> RunResult:
    """`run` for code already in an event loop. Cancelling it stops the run at once:
    what was received is kept, and the same call resumes."""
    from batchrunner.judging import RunHooks, run_and_judge

    key = api_key()
    spec = await anyio.to_thread.run_sync(_prepare, source, output, dict(options))
    # No stop signals but cancellation: the host program's signal handlers stay its own.
    send, no_signals = anyio.create_memory_object_stream[signal.Signals](0)
    send.close()
    with no_signals:
        hooks = RunHooks(progress=options.get("progress"), warn=_warn(options))
        hooks = replace(hooks, interrupts=no_signals)
        stats, _ = await run_and_judge(spec, api_key=key, hooks=hooks)
    return await anyio.to_thread.run_sync(_result, spec, stats)


def execute(spec: JobSpec, *, api_key: str, hooks: RunHooks) -> tuple[RunStats, JudgeStats | None]:
    """Run `spec` to the end from synchronous code (and its judge phase, with `[eval]`
    `scorer = "judge"`): the `run` command's and `run`'s entry.

    On the main thread with no loop running (the CLI), SIGINT and SIGTERM stop the run
    after the requests on the wire (runner.py). Under a running loop the run goes to a
    thread of its own, and Ctrl-C, which reaches the calling thread, is handed to it.
    """
    from batchrunner.judging import run_and_judge

    def main(
        interrupts: AsyncIterator[signal.Signals] | None = None,
    ) -> Awaitable[tuple[RunStats, JudgeStats | None]]:
        return run_and_judge(spec, api_key=api_key, hooks=replace(hooks, interrupts=interrupts))

    if not _loop_running():
        with _handlers_kept():
            return anyio.run(main, backend_options=backend_options())
    return _on_own_thread(main)


@contextlib.contextmanager
def _handlers_kept() -> Iterator[None]:
    """The caller's SIGINT/SIGTERM handlers again after the run: asyncio resets the ones
    its loop handled to the defaults, which would leave a host program's own behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kept = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in kept.items():
            if handler is not None:
                signal.signal(signum, handler)


def _on_own_thread(main: Callable[[AsyncIterator[signal.Signals]], Awaitable[_T]]) -> _T:
    send, receive = anyio.create_memory_object_stream[signal.Signals](8)
    portal = anyio.from_thread.start_blocking_portal("asyncio", backend_options())
    with send, receive, portal as running, _ctrl_c_raises():
        future = running.start_task_soon(main, receive)
        while True:
            try:
                return future.result()
            except KeyboardInterrupt:
                # The first Ctrl-C lets the requests on the wire finish, a second one
                # does not wait, as for the CLI; either way the run raises on its own.
                with contextlib.suppress(anyio.WouldBlock, RuntimeError):
                    running.call(send.send_nowait, signal.SIGINT)


@contextlib.contextmanager
def _ctrl_c_raises() -> Iterator[None]:
    """On the main thread, Ctrl-C raises KeyboardInterrupt while the call waits, whatever
    handler the host set: asyncio.run's only cancels its task, which cannot even run while
    this call blocks its loop, so the run would go on to the end."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


def api_key() -> str:
    """The API key from `CAICAINI_API_KEY`; ConfigError (never showing it) when unusable."""
    from batchrunner.errors import ConfigError

    key = os.environ.get(KEY_ENV, "").strip()
    if not key:
        raise ConfigError(f"{KEY_ENV} is not set: export your API key in that variable")
    if not key.isascii() or not key.isprintable():
        # It would fail deep in the HTTP stack, whose error may quote the header: say it
        # here, and never show the key itself.
        raise ConfigError(
            f"{KEY_ENV} holds a control or non-ASCII character (the key is not shown); "
            "check how it was exported"
        )
    return key


def _prepare(source: Source, output: str | os.PathLike[str], options: dict[str, Any]) -> JobSpec:
    """The JobSpec for `options`; rows given as objects are then written into `output`
    (only once the options are known to be valid, so a mistake writes nothing)."""
    from batchrunner.rundir.given import write_given

    unknown = sorted(set(options) - RunOptions.__optional_keys__)
    if unknown:
        raise TypeError(f"run() got unexpected keyword arguments: {', '.join(unknown)}")
    # Strings, not Paths: a URI (s3://b/k) must reach load_job whole.
    path = os.fspath(source) if isinstance(source, str | os.PathLike) else None
    job = options.get("job")
    spec = load_job(
        Path(job) if job is not None else None,
        # Rows given as objects: a placeholder until they are written below.
        input_path=path if path is not None else Path(output) / "input",
        output=os.fspath(output),
        overrides={_RENAMED.get(k, k): v for k, v in options.items() if k not in _HOOKS},
        base_url_env=os.environ.get(BASE_ENV) or None,
    )
    if path is not None:
        return spooled(spec)
    # The rows' relative image paths start where the caller is, not in the run directory.
    return replace(spec, input=write_given(source, spec.output), image_dir=Path.cwd())


def spooled(spec: JobSpec) -> JobSpec:
    """`spec` reading the run directory's copy of stdin when INPUT is `-` or `/dev/stdin`
    (`rundir.stdin`: a resume never needs stdin again); `spec` itself otherwise."""
    from batchrunner.rundir.stdin import is_stdin, spool_stdin

    if not is_stdin(spec.input):
        return spec
    copy = spool_stdin(sys.stdin.buffer, spec.output, spec.input_format)
    return replace(spec, input=copy, image_dir=Path.cwd())  # images: as for rows given


def _result(spec: JobSpec, stats: RunStats) -> RunResult:
    import pyarrow.parquet as pq

    assert stats.results is not None  # run_job returns only for a finished run
    return RunResult(
        table=pq.read_table(stats.results),
        total=stats.total,
        succeeded=stats.succeeded,
        errored=stats.errored,
        sent=stats.sent_rows,
        output=spec.output,
        warnings=stats.warnings,
    )


def _warn(options: Mapping[str, Any]) -> Callable[[str], None]:
    warn: Callable[[str], None] | None = options.get("warn")
    return warn if warn is not None else _log.warning


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def backend_options() -> dict[str, bool]:
    """uvloop where it is installed: its event loop cut the client's CPU per request by a
    few percent at high concurrency (bench/littles_law.py); plain asyncio otherwise."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}
