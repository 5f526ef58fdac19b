"""Command line: parses argv, calls one function per command, prints its answer.

Results go to stdout; progress, warnings and errors to stderr. Errors from the core arrive
as `BatchRunnerError`s and leave through `_user_errors()` with their exit code. Flags are
named after the spec fields they fill; the environment is read through click (`envvar=`),
with the variables' names from `config`.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import click
from click.core import ParameterSource

from batchrunner.api import api_key, execute, spooled
from batchrunner.config import BASE_ENV, base_url_problems, load_job
from batchrunner.errors import FD_ERRNOS, BatchRunnerError, ConfigError, write_error
from batchrunner.progress import ProgressPrinter
from batchrunner.spec import DEFAULT_BASE
from batchrunner.version import __version__

if TYPE_CHECKING:
    from collections.abc import Iterator

    from batchrunner.judging import RunHooks
    from batchrunner.spec import JobSpec


@contextmanager
def _user_errors() -> Iterator[None]:
    """Core errors -> one line on stderr and their exit code; never a traceback.

    Exit codes: `errors` (0 all rows succeeded, 1 some errored, 2 nothing sent, 3 stopped
    with rows pending, 130 SIGINT, 143 SIGTERM).
    """
    try:
        yield
    except BatchRunnerError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        # Ctrl-C before requests fly (validation, resume scan): nothing was sent or lost.
        click.echo("Error: interrupted; run the same command again to resume", err=True)
        sys.exit(130)
    except OSError as exc:
        if exc.errno not in FD_ERRNOS:
            raise
        # Out of file descriptors where no module mapped it (opening the run dir, say):
        # still a run-level stop with a way out, not a traceback.
        error = write_error(exc, exc.filename or "the run directory")
        click.echo(f"Error: {error}", err=True)
        sys.exit(error.exit_code)


class _Group(click.Group):
    """Loads `fake-api` (aiohttp.web, ~0.16 s of imports) only when it is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), "fake-api"])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "fake-api":
            from batchrunner.fakeapi.command import fake_api

            return fake_api
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="batchrunner")
def main() -> None:
    """Run prompt files against the Caicaini API, crash-safe and resumable.

    \b
    Quick start (fake API on loopback, no key needed for a dry run):
      batchrunner fake-api --port 8765 &
      CAICAINI_API_KEY=dry batchrunner run jobs/data/tiny.jsonl -o runs/try \\
          --base-url http://127.0.0.1:8765/v1
    """


_FORMATS = ["jsonl", "csv", "tsv", "parquet"]  # spec.InputFormat; INPUT's name tells by default


def _request_options(f: Any) -> Any:
    """Options shared by `run` and `validate` (everything that shapes requests)."""
    options = [
        click.option("--job", type=click.Path(path_type=Path), help="TOML job file (see jobs/)."),
        click.option("--api", type=click.Choice(["messages", "chat"]), help="Convention."),
        click.option("--model", help="Default model for rows that set none. [caicaini/auto]"),
        click.option("--max-tokens", type=click.IntRange(min=1), help="Default max_tokens. [1024]"),
        click.option("--system", help="Default system prompt."),
        click.option("--temperature", type=float, help="Default temperature."),
        click.option("--template", help='Build the prompt from columns: "Q: {question}".'),
        click.option("--id-column", help="Input column holding the row id."),
        click.option("--prompt-column", help="Input column holding the prompt."),
        click.option("--format", "input_format", type=click.Choice(_FORMATS), help="[by name]"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


# One definition for `run` and `check`. In `run` the job file's base_url ranks between the
# flag and the variable, so `_load` tells the two apart.
_base_url_option = click.option(
    "--base-url", envvar=BASE_ENV, show_envvar=True, help="API base URL, with /v1."
)


def _load(
    job: Path | None, input_path: Path | None, output: Path | None, flags: dict[str, Any]
) -> JobSpec:
    """The spec from the job file and the flags; a --base-url that click read from
    `BASE_ENV` is no flag: it ranks below the job file's base_url."""
    from_env = click.get_current_context().get_parameter_source("base_url")
    env_url = flags.pop("base_url") if from_env is ParameterSource.ENVIRONMENT else None
    return load_job(
        job, input_path=input_path, output=output, overrides=flags, base_url_env=env_url
    )


@main.command()
@click.argument("input_path", metavar="[INPUT]", required=False, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Run directory.")
@_request_options
@_base_url_option
@click.option("--concurrency", type=click.IntRange(1, 10_000), help="Requests in flight. [32]")
@click.option("--max-attempts", type=click.IntRange(min=1), help="Attempts per row. [6]")
@click.option(
    "--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), help="Per-attempt s."
)
@click.option("--rpm", type=click.FloatRange(min=0), help="Requests/minute budget. [learned]")
@click.option("--tpm", type=click.FloatRange(min=0), help="Tokens/minute budget. [learned]")
@click.option("--stream/--no-stream", default=None, help="Use SSE streaming. [off]")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N rows.")
@click.option("--shard", metavar="I/N", help="Only rows whose id hash mod N is I (see README).")
@click.option("--retry-errors", is_flag=True, default=None, help="Re-attempt errored rows.")
@click.option(
    "--durability", type=click.Choice(["process", "os"]), help="Journal sync level. [process]"
)
@click.option(
    "--stall-timeout",
    "stall_timeout_s",
    type=click.FloatRange(min=0),
    help="Requeue after S idle s.",
)
@click.option(
    "--max-response-bytes", type=click.IntRange(min=1), help="Cap on one answer. [64 MiB]"
)
@click.option("--no-progress", "-q", "no_progress", is_flag=True, help="Progress lines, no bar.")
@click.option("-v", "--verbose", is_flag=True, help="Echo every call's log line to stderr.")
def run(
    input_path: Path | None,
    output: Path | None,
    job: Path | None,
    no_progress: bool,
    verbose: bool,
    **flags: Any,
) -> None:
    """Process a prompt file; resume DIR if it exists.

    INPUT: .jsonl/.csv/.tsv (.gz/.zst), .parquet, a Parquet directory, or - (stdin).
    Running the same command again resumes: recorded rows are not sent again.
    With [eval] scorer = "judge", every succeeded row is then judged by judge_model
    (recorded in DIR/judge/, resumed the same way).

    \b
    Example:
      batchrunner run prompts.jsonl -o runs/first --api messages --concurrency 64
    Exit codes (of the run's own rows; judge failures show in `report`): 0 all
    succeeded, 1 some errored, 2 bad usage or input (nothing sent), 3 stopped with
    rows pending by a run-level cause (key, quota, model, input changed, waits over
    the cap, disk; fix it and run again to resume), 130 SIGINT, 143 SIGTERM (run
    again to resume).
    """
    with _user_errors():
        key = api_key()
        spec = spooled(_load(job, input_path, output, dict(flags)))
        printer = ProgressPrinter(bar=not no_progress and sys.stderr.isatty())
        hooks = _run_hooks(printer, verbose=verbose)
        try:
            stats, judged = execute(spec, api_key=key, hooks=hooks)
        finally:
            printer.close()
    where = stats.results or str(spec.output)
    click.echo(
        f"{stats.total} rows: {stats.succeeded} succeeded, {stats.errored} errored"
        f" ({stats.sent_rows} recorded by this run) -> {where}"
    )
    if judged is not None:  # judge failures are not row failures: the exit code ignores them
        click.echo(judged.summary())
    # run_job returns only when every row has an outcome (it raises otherwise, exit 3 /
    # 130 / 143); a pending row here would be a bug, and must not pass for success.
    if stats.pending or stats.results is None:
        click.echo(f"Error: {stats.pending} rows pending; run the same command again", err=True)
        sys.exit(3)
    if stats.errored:
        sys.exit(1)


def _run_hooks(printer: ProgressPrinter, *, verbose: bool) -> RunHooks:
    """`run`'s callbacks: progress, -v call lines, warnings and judge-phase notes (stderr)."""
    from batchrunner.judging import RunHooks

    def note(message: str) -> None:
        printer.close()  # end the bar's line: the judge phase starts a new one
        click.echo(message, err=True)

    return RunHooks(
        progress=printer.update,
        call_echo=(lambda line: click.echo(line, err=True)) if verbose else None,
        warn=lambda msg: click.echo(f"warning: {msg}", err=True),
        note=note,
    )


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(run_dir: Path, as_json: bool) -> None:
    """Counts of a run directory: total, succeeded, errored, pending (read alone, any time)."""
    from batchrunner.rundir import read_status

    with _user_errors():
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


@main.command("validate")
@click.argument("input_path", metavar="[INPUT]", required=False, type=click.Path(path_type=Path))
@_request_options
def validate_cmd(input_path: Path | None, job: Path | None, **flags: Any) -> None:
    """Check the input (and job file) in one streaming pass; send nothing.

    Stops at the first row that cannot become a request, naming file, line and reason
    (exit 2); so does an [eval] expected or group column the input does not have.
    """
    from batchrunner.evaluate import check_columns
    from batchrunner.inputs import validate

    with _user_errors():
        spec = _load(job, input_path, Path(), flags)
        summary = validate(spec.input, spec.source_options())
        if spec.eval is not None and (missing := check_columns(spec.eval, summary.extra_columns)):
            raise ConfigError("; ".join(missing))
    click.echo(f"{spec.input}: {summary.rows} rows ({summary.shape}), valid")


@main.command()
@_base_url_option
def check(base_url: str | None) -> None:
    """Preflight: the key and base URL work (GET /models). Sends no generation."""
    from batchrunner.preflight import list_models

    with _user_errors():
        key = api_key()
        url = (base_url or DEFAULT_BASE).rstrip("/")
        if problems := base_url_problems(url):
            raise ConfigError("; ".join(problems))
        models = anyio.run(lambda: list_models(base_url=url, api_key=key))
    click.echo(f"{url}: key accepted; {len(models)} models: {', '.join(models[:10])}")


@main.command("merge")
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

    with _user_errors():
        merged = merge(shard_dirs, output)
    for message in merged.warnings:
        click.echo(f"warning: {message}", err=True)
    click.echo(
        f"{merged.shards} shards: {merged.rows} rows: {merged.succeeded} succeeded, "
        f"{merged.errored} errored -> {merged.results}"
    )


@main.command("report")
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

    with _user_errors():
        gate = Gate(**gate_options)
        summary = summarize(run_dir, pricing=find_pricing(run_dir, job))
        ev = evaluate_report(run_dir, job=job, gate=gate)
    click.echo(report_json(summary, ev) if as_json else report_text(summary, ev))
    failures = gate.failures(ev)
    for reason in failures:
        click.echo(f"gate failed: {reason}", err=True)
    if failures:
        sys.exit(1)


@main.command("export")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    required=True,
    type=click.Choice(["jsonl", "csv", "openai-batch", "anthropic-batch"]),
    help="jsonl/csv: the result columns; openai-batch/anthropic-batch: their result lines.",
)
@click.option("-o", "--output", default="-", help="File (written atomically) or - for stdout. [-]")
def export_cmd(run_dir: Path, fmt: Any, output: str) -> None:
    """Write the recorded outcomes of a run directory (also of an unfinished run).

    Rows come in input order; an unfinished run gives what is recorded so far. A run
    with [eval] (DIR/eval.json) adds `passed` and the judge's `reason` to jsonl and csv.

    \b
    Example:
      batchrunner export runs/nightly --format openai-batch -o nightly-output.jsonl
    """
    from batchrunner.errors import OutputError
    from batchrunner.export import export, export_file
    from batchrunner.scoring import row_scores

    with _user_errors():
        scores = row_scores(run_dir)
        try:
            if output == "-":
                rows, warnings = export(run_dir, sys.stdout.buffer, fmt=fmt, scores=scores)
                sys.stdout.buffer.flush()
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
