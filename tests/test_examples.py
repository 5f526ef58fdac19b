"""The shipped examples and docs stay true: jobs/*.toml load and run, README names every flag.

Runs each example job against the fake API with its output redirected under tmp_path, so
nothing is written into the repository. Must not edit the examples to make them pass.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import pyarrow.parquet as pq
import pytest

from batchrunner.cli import main, run
from batchrunner.config import load_job
from tests.helpers import run_cli

if TYPE_CHECKING:
    from tests.fakeserver import FakeServer

REPO = Path(__file__).resolve().parents[1]
JOBS = sorted((REPO / "jobs").glob("*.toml"))
README = (REPO / "README.md").read_text(encoding="utf-8")
COMMANDS = ("run", "status", "validate", "check", "fake-api")


def test_the_documented_examples_exist() -> None:
    """The three example jobs the README names are all shipped."""
    names = {job.name for job in JOBS}
    assert {"example.toml", "chat-completions.toml", "nightly-eval.toml"} <= names


@pytest.mark.parametrize("job", JOBS, ids=lambda p: p.name)
def test_every_job_file_loads(job: Path) -> None:
    """Each jobs/*.toml is accepted by load_job and names an input that exists."""
    spec = load_job(job, input_path=None, output=None, overrides={})
    assert isinstance(spec.input, Path)
    assert spec.input.is_file(), spec.input
    assert spec.input.resolve().is_relative_to(job.parent.resolve())


def _input_ids(path: Path) -> list[str]:
    """The ids of a JSONL example input, read independently of the product's readers."""
    assert path.suffix == ".jsonl", f"examples are JSONL; teach this test {path.suffix}"
    lines = path.read_text(encoding="utf-8").splitlines()
    rows: list[dict[str, Any]] = [json.loads(line) for line in lines if line.strip()]
    return [str(row["id"]) for row in rows]


@pytest.mark.parametrize("job", JOBS, ids=lambda p: p.name)
def test_every_example_job_runs_end_to_end(
    job: Path, tmp_path: Path, shared_api: FakeServer
) -> None:
    """Each example job runs against the fake API: exit 0, one succeeded result per input row."""
    spec = load_job(job, input_path=None, output=None, overrides={})
    out = tmp_path / job.stem
    res = run_cli(
        ["run", "--job", str(job), "-o", str(out), "--base-url", shared_api.base_url, "-q"]
    )
    assert res.exit_code == 0, res.stderr
    assert isinstance(spec.input, Path)
    ids = _input_ids(spec.input)
    results: list[dict[str, Any]] = pq.read_table(out / "results.parquet").to_pylist()
    assert [r["id"] for r in results] == ids
    assert all(r["status"] == "succeeded" and r["text"] for r in results), results
    assert len(shared_api.log()) == len(ids)
    path = "/v1/chat/completions" if spec.api == "chat" else "/v1/messages"
    assert {e["path"] for e in shared_api.log()} == {path}


ALL_COMMANDS = main.list_commands(click.Context(main))  # fake-api is loaded lazily


def test_the_documented_commands_exist() -> None:
    """The five commands the README documents are all registered."""
    assert set(COMMANDS) <= set(ALL_COMMANDS)


@pytest.mark.parametrize("name", ALL_COMMANDS)
def test_every_command_has_help(name: str) -> None:
    """`batchrunner CMD --help` exits 0 for every command, and README.md names the command."""
    res = run_cli([name, "--help"])
    assert res.exit_code == 0, res.stderr
    assert "Usage:" in res.stdout
    assert f"batchrunner {name}" in README


def _long_names(command: click.Command) -> list[str]:
    names = []
    for param in command.params:
        if isinstance(param, click.Option):
            names += [n for n in (*param.opts, *param.secondary_opts) if n.startswith("--")]
    return names


def test_every_run_option_is_in_the_readme() -> None:
    """Every long option of `run` appears in README.md, so no flag goes undocumented."""
    names = _long_names(run)
    assert "--concurrency" in names and "--no-stream" in names
    # Whole names only: `--max` must not pass because `--max-tokens` is documented.
    missing = [n for n in names if not re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", README)]
    assert missing == []


@pytest.mark.parametrize("name", ["report", "export", "validate", "status"])
def test_every_option_of_the_read_commands_is_in_the_readme(name: str) -> None:
    """Every long option of report, export, validate and status appears in README.md."""
    command = main.get_command(click.Context(main), name)
    assert command is not None
    names = _long_names(command)
    missing = [n for n in names if not re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", README)]
    assert missing == []


def test_every_fake_api_option_is_in_the_readme() -> None:
    """`fake-api`'s long options (--tls-cert, --tls-key among them) are all documented."""
    command = main.get_command(click.Context(main), "fake-api")
    assert command is not None
    names = _long_names(command)
    assert "--tls-cert" in names
    missing = [n for n in names if not re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", README)]
    assert missing == []
