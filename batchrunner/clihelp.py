"""What every command shares: the error boundary, the request options, the job loader.

`user_errors` is the one place a core error becomes a line on stderr and an exit code.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from batchrunner.config import BASE_ENV, load_job
from batchrunner.errors import FD_ERRNOS, BatchRunnerError, write_error

if TYPE_CHECKING:
    from collections.abc import Iterator

    from batchrunner.spec import JobSpec


@contextmanager
def user_errors() -> Iterator[None]:
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


_FORMATS = ["jsonl", "csv", "tsv", "parquet"]  # spec.InputFormat; INPUT's name tells by default


def request_options(f: Any) -> Any:
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
        click.option("--image-column", help="Input column holding image paths/URLs. [images]"),
        click.option("--format", "input_format", type=click.Choice(_FORMATS), help="[by name]"),
        click.option(
            "--json-schema",
            type=click.Path(path_type=Path),
            help="JSON Schema file: ask for it, check every answer, fill `parsed`.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def reuse_options(f: Any) -> Any:
    """`run`'s --dedupe and --cache DIR, --cache-ttl S, --cache-mode (answers reused)."""
    options = [
        click.option("--dedupe", is_flag=True, default=None, help="Send identical bodies once."),
        click.option("--cache", type=click.Path(path_type=Path), help="Response cache directory."),
        click.option(
            "--cache-ttl",
            "cache_ttl_s",
            type=click.FloatRange(min=0),
            help="Ask again when the cached answer is older than S s. [0: no limit]",
        ),
        click.option(
            "--cache-mode",
            type=click.Choice(["read", "write", "readwrite"]),
            help="Use the cache for lookups, for storing, or both. [readwrite]",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


# One definition for `run` and `check`. In `run` the job file's base_url ranks between the
# flag and the variable, so `_load` tells the two apart.
base_url_option = click.option(
    "--base-url", envvar=BASE_ENV, show_envvar=True, help="API base URL, with /v1."
)


def load_spec(
    job: Path | None, input_path: str | None, output: Path | str | None, flags: dict[str, Any]
) -> JobSpec:
    """The spec from the job file and the flags; a --base-url that click read from
    `BASE_ENV` is no flag: it ranks below the job file's base_url."""
    from_env = click.get_current_context().get_parameter_source("base_url")
    env_url = flags.pop("base_url") if from_env is ParameterSource.ENVIRONMENT else None
    return load_job(
        job, input_path=input_path, output=output, overrides=flags, base_url_env=env_url
    )
