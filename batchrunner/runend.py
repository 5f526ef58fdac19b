"""The end of one `run_job` invocation: final counts, results.parquet, or the stop's error."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from batchrunner.errors import RunAbortedError
from batchrunner.records import RunStats
from batchrunner.structured import parsed_columns

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from batchrunner.errors import StopReason
    from batchrunner.rundir import RunDir
    from batchrunner.spec import JobSpec


async def finish(
    rundir: RunDir,
    spec: JobSpec,
    stop: StopReason | None,
    *,
    pass_warnings: Callable[[], None],
    sent_rows: int,
    warnings: Sequence[str],
    extra_columns: dict[str, str],
) -> RunStats:
    """Finalize a complete run; raise the stop's error (or a pending-rows one) otherwise."""
    tally = rundir.counts()
    succeeded, errored, pending = tally.succeeded, tally.errored, tally.pending
    results = None
    if stop is None and pending == 0:
        schema = spec.request.json_schema
        typed = parsed_columns(schema) if schema is not None else None
        results = str(await anyio.to_thread.run_sync(rundir.finalize, extra_columns, spec, typed))
    pass_warnings()  # what committing and finalizing found (values that did not fit)
    counts = f"{succeeded + errored} of {tally.total} rows recorded, {pending} pending"
    if stop is not None:
        raise stop.exception(counts)
    if pending:
        # Nothing stopped the run, yet rows have no outcome: never report that as done.
        raise RunAbortedError(
            f"run ended with rows pending although nothing stopped it ({counts}); "
            "run the same command again to resume"
        )
    return RunStats(
        total=tally.total,
        succeeded=succeeded,
        errored=errored,
        pending=pending,
        sent_rows=sent_rows,
        results=results,
        warnings=tuple(warnings),
    )
