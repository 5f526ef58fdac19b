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

from batchrunner import __version__
from batchrunner.config import BASE_ENV, KEY_ENV, base_url_problems, load_job
from batchrunner.errors import FD_ERRNOS, BatchRunnerError, ConfigError, write_error
from batchrunner.progress import ProgressPrinter
from batchrunner.spec import DEFAULT_BASE

if TYPE_CHECKING:
    from collections.abc import Iterator

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
        click.option(
            "--json-schema",
            type=click.Path(path_type=Path),
            help="JSON Schema file: ask for it, check every answer, fill `parsed`.",
        ),
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
@click.option(
    "--output-retries",
    type=click.IntRange(min=0),
    help="Re-asks of an answer that fails --json-schema. [2]",
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

    INPUT is .jsonl, .jsonl.gz, .jsonl.zst, .parquet or a directory of Parquet files.
    Running the same command again resumes: recorded rows are not sent again.

    \b
    Example:
      batchrunner run prompts.jsonl -o runs/first --api messages --concurrency 64
    Exit codes: 0 all succeeded, 1 some errored, 2 bad usage or input (nothing
    sent), 3 stopped with rows pending by a run-level cause (key, quota, model, input
    changed, waits over the cap, disk; fix it and run again to resume), 130 SIGINT,
    143 SIGTERM (run again to resume).
    """
    from batchrunner.runner import run_job

    with _user_errors():
        api_key = _api_key()
        spec = _load(job, input_path, output, dict(flags))
        printer = ProgressPrinter(bar=not no_progress and sys.stderr.isatty())
        echo = (lambda line: click.echo(line, err=True)) if verbose else None
        try:
            stats = anyio.run(
                lambda: run_job(
                    spec,
                    api_key=api_key,
                    progress=printer.update,
                    call_echo=echo,
                    warn=lambda msg: click.echo(f"warning: {msg}", err=True),
                ),
                backend_options=_loop_options(),
            )
        finally:
            printer.close()
    where = stats.results or str(spec.output)
    click.echo(
        f"{stats.total} rows: {stats.succeeded} succeeded, {stats.errored} errored"
        f" ({stats.sent_rows} recorded by this run) -> {where}"
    )
    # run_job returns only when every row has an outcome (it raises otherwise, exit 3 /
    # 130 / 143); a pending row here would be a bug, and must not pass for success.
    if stats.pending or stats.results is None:
        click.echo(f"Error: {stats.pending} rows pending; run the same command again", err=True)
        sys.exit(3)
    if stats.errored:
        sys.exit(1)


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(run_dir: Path, as_json: bool) -> None:
    """Counts of a run directory: total, succeeded, errored, pending.

    Reads only the directory; correct at any moment, also while a run is going.
    """
    from batchrunner.rundir import read_status

    with _user_errors():
        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(f"{run_dir} is a file, not a run directory")
        st = read_status(run_dir)
    if as_json:
        click.echo(st.to_json())
        return
    state = "complete" if st.complete else ("running" if st.running else "incomplete")
    click.echo(
        f"{run_dir}: {st.total} rows: {st.succeeded} succeeded, {st.errored} errored, "
        f"{st.pending} pending ({state})"
    )


@main.command("validate")
@click.argument("input_path", metavar="[INPUT]", required=False, type=click.Path(path_type=Path))
@_request_options
def validate_cmd(input_path: Path | None, job: Path | None, **flags: Any) -> None:
    """Check the input (and job file) in one streaming pass; send nothing.

    Stops at the first row that cannot become a request, naming file, line and reason
    (exit 2).
    """
    from batchrunner.inputs import validate

    with _user_errors():
        spec = _load(job, input_path, Path(), flags)
        summary = validate(spec.input, spec.source_options())
    click.echo(f"{spec.input}: {summary.rows} rows ({summary.shape}), valid")


@main.command()
@_base_url_option
def check(base_url: str | None) -> None:
    """Preflight: the key and base URL work (GET /models). Sends no generation."""
    from batchrunner.preflight import list_models

    with _user_errors():
        key = _api_key()
        url = (base_url or DEFAULT_BASE).rstrip("/")
        if problems := base_url_problems(url):
            raise ConfigError("; ".join(problems))
        models = anyio.run(lambda: list_models(base_url=url, api_key=key))
    click.echo(f"{url}: key accepted; {len(models)} models: {', '.join(models[:10])}")


def _loop_options() -> dict[str, bool]:
    """uvloop where it is installed: its event loop cut the client's CPU per request by a
    few percent at high concurrency (bench/littles_law.py); plain asyncio otherwise."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


def _api_key() -> str:
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


# report and export: read-only consumers of a run directory (issue 12).


@main.command("report")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON (keys named after columns).")
@click.option(
    "--job",
    type=click.Path(path_type=Path),
    help="Job file whose [pricing] prices the tokens. [DIR/run.json's, if any]",
)
def report_cmd(run_dir: Path, as_json: bool, job: Path | None) -> None:
    """Summarise a run directory: rows by status and error type, tokens, latency, cost.

    Reads only the directory, so it is right mid-run and after resumes. Cost needs
    [pricing]: from --job FILE, else from the job recorded in DIR/run.json.

    \b
    Example:
      batchrunner report runs/nightly --job jobs/nightly.toml --json
    """
    from batchrunner.report import find_pricing, summarize

    with _user_errors():
        summary = summarize(run_dir, pricing=find_pricing(run_dir, job))
    click.echo(summary.to_json() if as_json else summary.to_text())


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

    Rows come in input order; an unfinished run gives what is recorded so far.

    \b
    Example:
      batchrunner export runs/nightly --format openai-batch -o nightly-output.jsonl
    """
    from batchrunner.errors import OutputError
    from batchrunner.export import export, export_file

    with _user_errors():
        try:
            if output == "-":
                rows, warnings = export(run_dir, sys.stdout.buffer, fmt=fmt)
                sys.stdout.buffer.flush()
            else:
                rows, warnings = export_file(run_dir, Path(output), fmt=fmt)
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
