"""The commands that read run directories: status, report, export, merge.

They only read (merge writes a new directory of its own); `cli` adds them to its group.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from batchrunner.clihelp import user_errors
from batchrunner.errors import ConfigError


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(run_dir: Path, as_json: bool) -> None:
    """Counts of a run directory: total, succeeded, errored, pending.

    Reads only the directory; correct at any moment, also while a run is going.
    """
    from batchrunner.rundir import read_status

    with user_errors():
        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(f"{run_dir} is a file, not a run directory")
        st = read_status(run_dir)
    if as_json:
        click.echo(st.to_json())
        return
    state = "complete" if st.complete else ("running" if st.running else "incomplete")
    shard = f" ({'merged' if st.shard == 'merged' else f'shard {st.shard}'})" if st.shard else ""
    click.echo(
        f"{run_dir}{shard}: {st.total} rows: {st.succeeded} succeeded, {st.errored} errored, "
        f"{st.pending} pending ({state})"
    )


@click.command("report")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON (keys named after columns).")
@click.option(
    "--job",
    type=click.Path(path_type=Path),
    help="Job file whose [pricing] and [eval] apply. [DIR/run.json's, DIR/eval.json]",
)
@click.option("--baseline", type=click.Path(path_type=Path), help="Compare with run dir DIR2.")
@click.option("--fail-under", type=click.FloatRange(0, 1), help="Exit 1 if accuracy < X.")
@click.option("--fail-on-regression", is_flag=True, help="Exit 1 on a significant drop.")
@click.option(
    "--alpha",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Significance level of --fail-on-regression. [0.05]",
)
def report_cmd(run_dir: Path, as_json: bool, job: Path | None, **gate_options: Any) -> None:
    """Summarise a run directory: rows by status and error type, tokens, latency, cost,
    and with [eval] the scores (against a baseline night, gated for cron).

    Reads only the directory, so it is right mid-run and after resumes. Cost needs
    [pricing]: from --job FILE, else from the job recorded in DIR/run.json. Scores need
    [eval]: from --job FILE, else DIR/eval.json (written by `run`).

    \b
    Example:
      batchrunner report runs/nightly --job jobs/nightly.toml --json
      batchrunner report runs/tonight --baseline runs/last-night --fail-on-regression
    Exit codes: 0, 1 a gate failed (--fail-under, --fail-on-regression), 2 bad usage
    or not a run directory.
    """
    from batchrunner.report import find_pricing, summarize
    from batchrunner.scoring import Gate, evaluate_report, report_json, report_text

    with user_errors():
        gate = Gate(**gate_options)
        summary = summarize(run_dir, pricing=find_pricing(run_dir, job))
        ev = evaluate_report(run_dir, job=job, gate=gate)
    click.echo(report_json(summary, ev) if as_json else report_text(summary, ev))
    failures = gate.failures(ev)
    for reason in failures:
        click.echo(f"gate failed: {reason}", err=True)
    if failures:
        sys.exit(1)


@click.command("export")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    required=True,
    type=click.Choice(["jsonl", "csv", "openai-batch", "anthropic-batch"]),
    help="jsonl/csv: the result columns; openai-batch/anthropic-batch: their result lines.",
)
@click.option(
    "-o", "--output", default="-", help="File (written atomically), URI, or - for stdout. [-]"
)
def export_cmd(run_dir: Path, fmt: Any, output: str) -> None:
    """Write the recorded outcomes of a run directory (also of an unfinished run).

    Rows come in input order; an unfinished run gives what is recorded so far. A run
    with [eval] (DIR/eval.json) adds `passed` and the judge's `reason` to jsonl and csv.

    \b
    Example:
      batchrunner export runs/nightly --format openai-batch -o nightly-output.jsonl
    """
    from batchrunner.errors import OutputError
    from batchrunner.export import export, export_file, export_uri
    from batchrunner.scoring import row_scores
    from batchrunner.uris import is_uri

    with user_errors():
        scores = row_scores(run_dir)
        try:
            if output == "-":
                rows, warnings = export(run_dir, sys.stdout.buffer, fmt=fmt, scores=scores)
                sys.stdout.buffer.flush()
            elif is_uri(output):  # s3://, gs://, az://: uploaded once written whole
                rows, warnings = export_uri(run_dir, output, fmt=fmt, scores=scores)
            else:
                rows, warnings = export_file(run_dir, Path(output), fmt=fmt, scores=scores)
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, and point stdout at /dev/null
            # so the interpreter's final flush does not complain either.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except OSError as exc:  # say, stdout redirected to a full disk
            raise OutputError(f"cannot write the export: {exc.strerror or exc}") from exc
    for message in warnings:
        click.echo(f"warning: {message}", err=True)
    if output != "-":
        click.echo(f"{rows} rows written to {output}", err=True)


@click.command("merge")
@click.argument(
    "shard_dirs", metavar="SHARD_DIR...", nargs=-1, required=True, type=click.Path(path_type=Path)
)
@click.option(
    "-o", "--output", required=True, type=click.Path(path_type=Path), help="Merged directory."
)
def merge_cmd(shard_dirs: tuple[Path, ...], output: Path) -> None:
    """Join the run dirs of `run --shard I/N` into DIR/results.parquet, in input order.

    Refused (exit 2, nothing written) unless the dirs are all N finished shards of one
    job, each once. status, report and export then read DIR like a run directory.

    \b
    Example:
      batchrunner merge -o runs/all runs/s0 runs/s1 runs/s2
    """
    from batchrunner.merge import merge

    with user_errors():
        merged = merge(shard_dirs, output)
    for message in merged.warnings:
        click.echo(f"warning: {message}", err=True)
    click.echo(
        f"{merged.shards} shards: {merged.rows} rows: {merged.succeeded} succeeded, "
        f"{merged.errored} errored -> {merged.results}"
    )


# report and export: read-only consumers of a run directory (issue 12).
