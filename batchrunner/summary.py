"""The summary every `run` ends with, for people: what happened and what to do next.

Rows by status (the whole run), this invocation's tokens, cost, requests and time, the
run directory, the top error types, and what the exit code means with the action that
follows from it (the README's exit codes). Built from a `RunEnd`; prints nothing itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchrunner.progress import RunEnd
    from batchrunner.spec import PricingSpec

TOP_ERRORS = 5

# What each exit code of `run` means (README, "Exit codes"); the summary adds what to do.
EXIT_MEANINGS = {
    0: "every row succeeded",
    1: "the run finished, but some rows errored",
    2: "usage, job file or input error: nothing was sent",
    3: "stopped early by a run-level cause, with rows pending",
    130: "interrupted by SIGINT",
    143: "interrupted by SIGTERM",
}


def _rows(n: int) -> str:
    return f"{n:,} row" + ("" if n == 1 else "s")


def summary_lines(
    end: RunEnd, *, pricing: PricingSpec | None, retry_command: str | None
) -> list[str]:
    """The summary; `retry_command` is this run's command with --retry-errors, offered
    when errored rows could be sent again."""
    p = end.progress
    where = f" -> {end.results}" if end.results else ""
    lines = [  # plain numbers in the first line: scripts grep it
        f"{end.total} rows: {end.succeeded} succeeded, {end.errored} errored, "
        f"{end.pending} pending{where}",
        f"this run: {_rows(p.succeeded + p.errored)} recorded in {end.wall_s:,.1f} s; "
        f"{p.attempts:,} requests ({p.retries:,} retries, 429s {p.http_429:,}, "
        f"529s {p.http_529:,}); tokens {p.input_tokens:,} in, {p.output_tokens:,} out",
    ]
    if p.reused:  # their tokens are not in the line above: no request was paid for them
        lines[-1] += f"; {_rows(p.reused)} answered without a request (--dedupe, --cache)"
    cost = p.cost_usd(pricing)
    lines.append(
        f"cost: ${cost:,.4f} this run" if cost is not None else "cost: unknown (no [pricing])"
    )
    lines.append(f"run dir: {end.run_dir} (batchrunner report {end.run_dir}: the whole run)")
    if p.errors:
        top = sorted(p.errors.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_ERRORS]
        more = len(p.errors) - len(top)
        listed = ", ".join(f"{kind} {n:,}" for kind, n in top) + (f", +{more} more" if more else "")
        lines.append(f"errors this run: {listed}")
    elif end.errored:
        lines.append(f"errors: {_rows(end.errored)} errored in earlier runs (report lists them)")
    lines += _exit_lines(end, retry_command)
    if end.warnings:
        lines.append(f"{len(end.warnings)} warning(s) above (also in {end.run_dir}/run.json)")
    return lines


def _exit_lines(end: RunEnd, retry_command: str | None) -> list[str]:
    code = end.exit_code
    if code is None:
        return [
            "the run ended with an unexpected error (above): what was recorded is kept; run "
            "the same command again to resume, and please report the error"
        ]
    meaning = f"exit {code}: {EXIT_MEANINGS.get(code, 'see the README')}"
    if code == 0:
        return [meaning]
    if code == 1 and end.results is None:
        return [
            "exit 1: the run directory's data does not add up (the error above names the "
            "file); nothing was deleted"
        ]
    if code == 3:
        lines = [
            f"{meaning}: {_rows(end.pending)} pending; the error above names the cause and "
            "what to do. Rows already recorded are never sent again"
        ]
    elif code in (130, 143):
        lines = [
            f"{meaning}: what was received is recorded; run the same command again to "
            f"resume ({_rows(end.pending)} pending)"
        ]
    else:
        lines = [
            f"exit 1: the run finished, but {_rows(end.errored)} errored: results.parquet "
            "has each one's error_type and error_message"
        ]
    if end.errored and retry_command and code in (1, 130, 143):
        lines.append(f"to send the errored rows again: {retry_command}")
    return lines
