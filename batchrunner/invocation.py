"""One invocation of `run` on a run directory: recorded in run.json at its start and end.

`recorded(...)` wraps the part of `run_job` that holds the run directory. On entry it
appends an entry to run.json (`rundir/history.py`): runner version, start time, the job
as run, the input's identity and the counts so far. On exit, however the invocation ends,
it completes the entry (end time, final counts, this invocation's counters, exit code,
warnings) and hands the caller a `RunEnd` (`Hooks.ended`) for its summary.

Nothing secret goes in: the key is never in a JobSpec; a base URL carrying
`user:password@` is refused by `config`; its query and fragment, which the client never
sends (joining a path drops them), are left out.
"""

from __future__ import annotations

import time
import urllib.parse
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchrunner.config import plain_http_warning
from batchrunner.errors import BatchRunnerError, DiskError
from batchrunner.progress import Progress, RunEnd
from batchrunner.rundir.history import read_history, write_history
from batchrunner.version import __version__

if TYPE_CHECKING:
    from collections.abc import Iterator

    from batchrunner.progress import Hooks
    from batchrunner.rundir import Counts, RunDir
    from batchrunner.spec import JobSpec


def job_as_run(spec: JobSpec) -> dict[str, Any]:
    """The JobSpec as JSON-ready values: job file and flags merged, nothing secret."""
    job = asdict(spec)
    # Absolute: a relative path says nothing once the shell that ran it is gone.
    inp = spec.input.absolute() if isinstance(spec.input, Path) else spec.input
    job["input"], job["output"] = str(inp), str(spec.output.absolute())
    if spec.cache is not None:
        job["cache"] = str(spec.cache.absolute())
    parts = urllib.parse.urlsplit(spec.base_url)
    job["base_url"] = urllib.parse.urlunsplit(parts._replace(query="", fragment=""))
    return job


def exit_code_of(exc: BaseException) -> int | None:
    """The exit code an exception leaves `run` with; None for an unexpected one (a bug)."""
    if isinstance(exc, BatchRunnerError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return 130
    return None


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _counts(c: Counts) -> dict[str, int]:
    return {"total": c.total, "succeeded": c.succeeded, "errored": c.errored, "pending": c.pending}


class Invocation:
    """This invocation's entry in run.json. `progress` is the run's live counters, set by
    the runner once it has them (an invocation that ends before has none to record)."""

    def __init__(
        self,
        rundir: RunDir,
        spec: JobSpec,
        *,
        identity: dict[str, object],
        hooks: Hooks,
        started: tuple[float, float],
    ) -> None:
        self.rundir = rundir
        self.spec = spec
        self.hooks = hooks
        self.progress: Progress | None = None
        self._started_wall, self._started_mono = started
        self._history, warnings = read_history(rundir.path)
        for message in warnings:
            hooks.warn(message)
        self._entry: dict[str, Any] = {
            "number": len(self._history["invocations"]) + 1,
            "version": __version__,
            "started_at": _iso(self._started_wall),
            "ended_at": None,
            "exit_code": None,
            "job": job_as_run(spec),
            "input": identity,
            "counts": _counts(rundir.counts()),
            "warnings": list(hooks.warnings),
        }

    def begin(self) -> None:
        """Append the entry (run.json written before the first request)."""
        self._history["invocations"].append(self._entry)
        self._history["job"] = self._entry["job"]
        write_history(self.rundir.path, self._history)

    def end(self, exit_code: int | None, *, results: str | None) -> RunEnd:
        """Complete the entry and rewrite run.json; a write refused now only warns (the
        outcomes are safe in the journal, and the error in flight must not be masked)."""
        counts = self.rundir.counts()
        p = self.progress or Progress(total=counts.total)
        wall_s = time.monotonic() - self._started_mono
        self._entry.update(
            ended_at=_iso(time.time()),
            exit_code=exit_code,
            counts=_counts(counts),
            wall_s=round(wall_s, 3),
            this_invocation=_counters(p, self.spec),
        )
        self._entry.pop("warnings", None)  # re-added last, where a reader looks for it
        self._entry["warnings"] = list(self.hooks.warnings)
        try:
            write_history(self.rundir.path, self._history)
        except (DiskError, OSError) as exc:
            self.hooks.warn(f"run.json could not be updated: {exc}")
        return RunEnd(
            run_dir=str(self.rundir.path),
            results=results,
            total=counts.total,
            succeeded=counts.succeeded,
            errored=counts.errored,
            pending=counts.pending,
            progress=p,
            wall_s=wall_s,
            exit_code=exit_code,
            warnings=tuple(self.hooks.warnings),
        )


def _counters(p: Progress, spec: JobSpec) -> dict[str, Any]:
    cost = p.cost_usd(spec.pricing)
    return {
        "succeeded": p.succeeded,
        "errored": p.errored,
        "requests": p.attempts,
        "retries": p.retries,
        "http_429": p.http_429,
        "http_529": p.http_529,
        "input_tokens": p.input_tokens,
        "output_tokens": p.output_tokens,
        "reused": p.reused,
        "error_type": dict(sorted(p.errors.items(), key=lambda kv: -kv[1])),
        "cost_usd": round(cost, 6) if cost is not None else None,
    }


@contextmanager
def recorded(
    rundir: RunDir,
    spec: JobSpec,
    *,
    identity: dict[str, object],
    hooks: Hooks,
    started: tuple[float, float],
) -> Iterator[Invocation]:
    """Record the invocation in run.json around the block; `started` is (time.time(),
    time.monotonic()) when `run` began. The block's exception passes through unchanged."""
    if (plain := plain_http_warning(spec.base_url)) is not None:
        hooks.warn(plain)  # before the preflight sends the key
    invocation = Invocation(rundir, spec, identity=identity, hooks=hooks, started=started)
    invocation.begin()
    try:
        yield invocation
    except BaseException as exc:
        end = invocation.end(exit_code_of(exc), results=None)
        if hooks.ended is not None:
            hooks.ended(end)
        raise
    counts = rundir.counts()
    results = str(rundir.path / "results.parquet") if counts.pending == 0 else None
    end = invocation.end(1 if counts.errored else 0, results=results)
    if hooks.ended is not None:
        hooks.ended(end)
