"""Command line: parses argv, calls one function per command, prints its answer.

Results go to stdout; progress, warnings and errors to stderr. Errors from the core arrive
as `BatchRunnerError`s and leave through `user_errors()` with their exit code. Flags are
named after the spec fields they fill; the environment is read through click (`envvar=`),
with the variables' names from `config`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import click

from batchrunner.api import api_key, backend_options, execute, spooled
from batchrunner.cli_dirs import export_cmd, merge_cmd, report_cmd, status
from batchrunner.clihelp import (
    base_url_option,
    load_spec,
    request_options,
    reuse_options,
    user_errors,
)
from batchrunner.cmdline import command_line
from batchrunner.config import base_url_problems, plain_http_warning
from batchrunner.display import open_display
from batchrunner.errors import ConfigError
from batchrunner.spec import DEFAULT_BASE, DEFAULT_MODEL
from batchrunner.version import __version__

if TYPE_CHECKING:
    from collections.abc import Callable

    from batchrunner.display import LiveDisplay
    from batchrunner.judging import JudgeStats
    from batchrunner.progress import PlainProgress, RunEnd
    from batchrunner.records import RunStats
    from batchrunner.spec import JobSpec, PricingSpec


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


@main.command()
@click.argument("input_path", metavar="[INPUT]", required=False, type=click.Path())
@click.option("-o", "--output", type=click.Path(), help="Run directory (local).")
@request_options
@base_url_option
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
@reuse_options
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
    "--max-cost",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop dispatching before the recorded cost passes USD (needs [pricing]). [off]",
)
@click.option(
    "--output-retries",
    type=click.IntRange(min=0),
    help="Re-asks of an answer that fails --json-schema. [2]",
)
@click.option(
    "--engine", type=click.Choice(["local", "ray"]), help="Who sends: this process or Ray."
)
@click.option("--ray-address", metavar="ADDR", help="Ray cluster to join. [a local Ray]")
@click.option("--ray-actors", type=click.IntRange(1, 1000), help="Ray actors (--engine ray). [2]")
@click.option("--no-progress", is_flag=True, help="No live display: a plain line every 10 s.")
@click.option("-q", "--quiet", is_flag=True, help="No progress at all: only the summary.")
@click.option("-v", "--verbose", is_flag=True, help="Echo every call's log line to stderr.")
def run(
    input_path: str | None,
    output: str | None,
    job: Path | None,
    no_progress: bool,
    quiet: bool,
    verbose: bool,
    **flags: Any,
) -> None:
    """Process a prompt file; resume DIR if it exists.

    INPUT: .jsonl/.csv/.tsv (.gz/.zst), .parquet, a Parquet directory, - (stdin), or
    one of these as an s3://, gs://, az:// or https:// URI (see README). DIR stays local.
    Running the same command again resumes: recorded rows are not sent again.
    With [eval] scorer = "judge", every succeeded row is then judged by judge_model
    (recorded in DIR/judge/, resumed the same way).

    \b
    Example:
      batchrunner run prompts.jsonl -o runs/first --api messages --concurrency 64
    Exit codes (of the run's own rows; judge failures show in `report`; the summary at
    the end says which, and what to do): 0 all succeeded, 1 some errored, 2 bad usage or
    input (nothing sent), 3 stopped with rows pending by a run-level cause (key, quota,
    model, input changed, waits over the cap, disk, --max-cost; fix it and run again to
    resume), 130 SIGINT, 143 SIGTERM (run again to resume).
    """
    ended: list[RunEnd] = []  # how the invocation ended, once its run directory opened
    pricing: PricingSpec | None = None
    try:
        with user_errors():
            key = api_key()
            from batchrunner.rayengine import engine_spec

            engine = engine_spec(
                flags.pop("engine"), flags.pop("ray_address"), flags.pop("ray_actors")
            )
            spec = replace(spooled(load_spec(job, input_path, output, dict(flags))), engine=engine)
            pricing = spec.pricing
            display = open_display(quiet=quiet, no_progress=no_progress, pricing=pricing)
            stats, judged = _run_showing(spec, key, display, verbose=verbose, ended=ended.append)
    finally:
        # Also after an error (its line is on stderr already): what happened, what to do.
        if ended:
            from batchrunner.summary import summary_lines

            retry = command_line(click.get_current_context(), "--retry-errors")
            click.echo("\n".join(summary_lines(ended[-1], pricing=pricing, retry_command=retry)))
    # run_job returns only when every row has an outcome (it raises otherwise, exit 3 /
    # 130 / 143); a pending row here would be a bug, and must not pass for success.
    if stats.pending or stats.results is None:
        click.echo(f"Error: {stats.pending} rows pending; run the same command again", err=True)
        sys.exit(3)
    if judged is not None:  # judge failures are not row failures: the exit code ignores them
        click.echo(judged.summary())
    if stats.errored:
        sys.exit(1)


@main.command("validate")
@click.argument("input_path", metavar="[INPUT]", required=False, type=click.Path())
@request_options
def validate_cmd(input_path: str | None, job: Path | None, **flags: Any) -> None:
    """Check the input (and job file) in one streaming pass; send nothing.

    Stops at the first row that cannot become a request, naming file, line and reason
    (exit 2); so does an [eval] expected or group column the input does not have.
    """
    from batchrunner.evaluate import check_columns
    from batchrunner.inputs import validate

    with user_errors():
        spec = load_spec(job, input_path, Path(), flags)
        summary = validate(spec.input, spec.source_options())
        if spec.eval is not None and (missing := check_columns(spec.eval, summary.extra_columns)):
            raise ConfigError("; ".join(missing))
    files = f", {summary.image_files} image files checked" if summary.image_files else ""
    click.echo(f"{spec.input}: {summary.rows} rows ({summary.shape}), valid{files}")


@main.command("plan")
@click.argument("input_path", metavar="[INPUT]", required=False, type=click.Path())
@request_options
@base_url_option
@click.option("--exact", is_flag=True, help="Count every row, not a sample.")
@click.option(
    "--sample", type=click.IntRange(min=2), default=1000, show_default=True, help="Rows to count."
)
@click.option("--concurrency", type=click.IntRange(1, 10_000), help="Counts in flight. [32]")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plan_cmd(input_path: str | None, job: Path | None, **flags: Any) -> None:
    """Rows, input tokens, the output bound and the cost of a job; sends no generation.

    Input tokens are counted by the API (POST {base}/messages/count_tokens) on SAMPLE rows
    spread over the input and extrapolated with a 95% range, or on every row with --exact;
    chat rows in the Messages shape. Cost needs [pricing]. Exit codes: 0 done, 1 some
    sampled rows could not be counted, 2 bad usage or input, 3 the API refused to count.

    \b
    Example:
      batchrunner plan --job jobs/example.toml --exact
    """
    from batchrunner.plan import make_plan

    with user_errors():
        key = api_key()
        exact, sample, as_json = flags.pop("exact"), flags.pop("sample"), flags.pop("as_json")
        spec = load_spec(job, input_path, Path(), flags)
        found = anyio.run(
            lambda: make_plan(spec, api_key=key, exact=exact, sample=sample),
            backend_options=backend_options(),
        )
    click.echo(json.dumps(found.to_json()) if as_json else found.to_text())
    if found.failed_rows:
        sys.exit(1)


@main.command()
@base_url_option
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Model to look for.")
def check(base_url: str | None, model: str) -> None:
    """Preflight: does the base URL answer, is the key accepted, is the model listed.

    One line for each, from GET {base}/models (no generation is sent). Exit 0 when all
    three hold, 3 when one does not (the line says why), 2 for a bad base URL or no key.
    """
    from batchrunner.preflight import check_api

    with user_errors():
        key = api_key()
        url = (base_url or DEFAULT_BASE).rstrip("/")
        if problems := base_url_problems(url):
            raise ConfigError("; ".join(problems))
        if (plain := plain_http_warning(url)) is not None:
            click.echo(f"warning: {plain}", err=True)
        facts = anyio.run(lambda: check_api(base_url=url, api_key=key, model=model))
    for fact in facts:
        state = {True: "ok", False: "FAIL", None: "skipped"}[fact.ok]
        click.echo(f"{fact.name:<9} {state:<7} {fact.detail}")
    if not all(fact.ok for fact in facts):
        failed = ", ".join(fact.name for fact in facts if fact.ok is False)
        click.echo(f"Error: check failed ({failed}): fix it, then run check again", err=True)
        sys.exit(3)


def _run_showing(
    spec: JobSpec,
    key: str,
    display: LiveDisplay | PlainProgress | None,
    *,
    verbose: bool,
    ended: Callable[[RunEnd], None],
) -> tuple[RunStats, JudgeStats | None]:
    """The run (and its judge phase) with `display` fed, then closed; while a live
    display holds the terminal, warnings, -v lines and judge notes go through it."""
    from batchrunner.judging import RunHooks

    say = display.echo if display is not None else _say
    hooks = RunHooks(
        progress=display.update if display is not None else None,
        call_echo=say if verbose else None,
        warn=lambda msg: say(f"warning: {msg}"),
        note=say,
        ended=ended,
    )
    try:
        return execute(spec, api_key=key, hooks=hooks)
    finally:
        if display is not None:
            display.close()


def _say(line: str) -> None:
    click.echo(line, err=True)


for _command in (status, report_cmd, export_cmd, merge_cmd):
    main.add_command(_command)
