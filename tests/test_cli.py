"""The command line as a user meets it: help for every command, `status`, `validate`, `check`.

Everything runs the real CLI in-process (`CliRunner`, stdout and stderr apart) against real
files and a fake API subprocess on loopback; exit codes are the documented ones.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

import click
import pytest

from batchrunner.cli import main, run, validate_cmd
from batchrunner.config import BASE_ENV, KEY_ENV
from batchrunner.spec import JobSpec, LimitsSpec, RequestSpec
from tests.fakeserver import FakeServer
from tests.helpers import TEST_KEY, run_cli, write_jsonl

if TYPE_CHECKING:
    from click.testing import Result

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
COMMANDS = main.list_commands(click.Context(main))
OFFLINE = "http://127.0.0.1:9/v1"  # nothing listens on port 9: a request would fail


def _command(name: str) -> click.Command:
    command = main.get_command(click.Context(main), name)
    assert command is not None, name
    return command


def _documented_options(name: str) -> set[str]:
    """The long options README's command table shows for `batchrunner NAME`."""
    line = next(row for row in README.splitlines() if row.startswith(f"| `batchrunner {name} "))
    return set(re.findall(r"--[a-z][a-z-]*", line.split("|")[1]))


def _rows(n: int) -> list[dict[str, object]]:
    return [{"id": f"r{i}", "prompt": f"question {i}"} for i in range(n)]


def _clean(result: Result) -> None:
    assert "Traceback" not in result.stdout + result.stderr
    assert TEST_KEY not in result.stdout + result.stderr


# --- help -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_help_lists_its_options(name: str) -> None:
    """`CMD --help` and `CMD -h` exit 0 on stdout alone, and list every option the command
    has and every one README's command table documents for it."""
    command = _command(name)
    for flag in ("--help", "-h"):
        res = run_cli([name, flag])
        assert res.exit_code == 0, res.stderr
        assert res.stderr == ""
        assert "Usage:" in res.stdout
        summary = (command.help or "").split("\n")[0]
        assert " ".join(summary.split()) in " ".join(res.stdout.split())
    options = {
        opt
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden
        for opt in (*param.opts, *param.secondary_opts)
        if opt.startswith("--")
    }
    assert _documented_options(name) <= options
    listed = set(re.findall(r"--[a-z][a-z-]*", res.stdout))
    assert options <= listed, options - listed


def test_the_group_help_lists_every_command_and_the_version() -> None:
    """`batchrunner --help` names each command; `--version` prints the version."""
    res = run_cli(["--help"])
    assert res.exit_code == 0
    for name in COMMANDS:
        assert re.search(rf"^  {re.escape(name)}\b", res.stdout, re.MULTILINE), name
    version = run_cli(["--version"])
    assert version.exit_code == 0 and version.stdout.startswith("batchrunner, version ")


@pytest.mark.parametrize("name", ["run", "check"])
def test_base_url_help_names_its_environment_variable(name: str) -> None:
    """--base-url (one definition, for run and check) shows the variable it falls back to."""
    res = run_cli([name, "--help"])
    assert f"[env var: {BASE_ENV}]" in " ".join(res.stdout.split())


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["bogus"], "No such command 'bogus'"),
        (["run", "--bogus"], "No such option '--bogus'"),
        (["run", "in.jsonl", "--api", "soap"], "'soap' is not one of"),
        (["run", "in.jsonl", "--timeout", "0"], "--timeout"),
        (["run", "in.jsonl", "--concurrency", "0"], "--concurrency"),
        (["status"], "Missing argument 'RUN_DIR'"),
        (["validate", "--max-tokens", "x"], "--max-tokens"),
    ],
)
def test_usage_errors_exit_2(args: list[str], said: str) -> None:
    """A misspelt command, option or value: exit 2 and click's usage message on stderr."""
    res = run_cli(args)
    assert res.exit_code == 2
    assert said in res.stderr and res.stdout == ""
    _clean(res)


@pytest.mark.parametrize("command", [run, validate_cmd], ids=["run", "validate"])
def test_flags_are_named_after_the_spec_fields_they_fill(command: click.Command) -> None:
    """Each option's parameter name is the JobSpec / RequestSpec / LimitsSpec field it sets
    (`--timeout` is `timeout_s`), so no flag is renamed by hand on its way to the spec."""
    spec_fields = {f.name for cls in (JobSpec, RequestSpec, LimitsSpec) for f in fields(cls)}
    own = {"input_path", "output", "job", "no_progress", "quiet", "verbose"}  # the command's own
    own |= {"ray_address", "ray_actors"}  # with --engine, they make JobSpec.engine
    names = {param.name for param in command.params}
    assert names - own <= spec_fields, names - own - spec_fields
    if command is run:
        assert {"timeout_s", "stall_timeout_s", "base_url", "max_response_bytes"} <= names


def test_the_timeout_flag_reaches_the_run(tmp_path: Path) -> None:
    """--timeout 0.2 against 1 s answers errors every row as a timeout (exit 1); without the
    flag the same run succeeds."""
    src = write_jsonl(tmp_path / "in.jsonl", _rows(2))
    with FakeServer("--latency", "1.0", api_key=TEST_KEY) as server:
        base = ["run", str(src), "--base-url", server.base_url, "--max-attempts", "1", "-q"]
        timed_out = run_cli([*base, "-o", str(tmp_path / "short"), "--timeout", "0.2"])
        assert timed_out.exit_code == 1, timed_out.stderr
        assert "2 rows: 0 succeeded, 2 errored" in timed_out.stdout
        patient = run_cli([*base, "-o", str(tmp_path / "long")])
    assert patient.exit_code == 0, patient.stderr
    _clean(timed_out)


# --- status ---------------------------------------------------------------------------------


def test_status_of_a_finished_run_as_text_and_json(tmp_path: Path, shared_api: FakeServer) -> None:
    """`status DIR` prints the counts and "complete"; `--json` the same as an object."""
    src = write_jsonl(tmp_path / "in.jsonl", _rows(5))
    out = tmp_path / "run"
    done = run_cli(["run", str(src), "-o", str(out), "--base-url", shared_api.base_url, "-q"])
    assert done.exit_code == 0, done.stderr
    requests = shared_api.stats()["requests_total"]
    text = run_cli(["status", str(out)], key=None)
    assert text.exit_code == 0 and text.stderr == ""
    assert text.stdout == f"{out}: 5 rows: 5 succeeded, 0 errored, 0 pending (complete)\n"
    as_json = run_cli(["status", str(out), "--json"], key=None)
    assert as_json.exit_code == 0
    assert json.loads(as_json.stdout) == {
        "total": 5,
        "succeeded": 5,
        "errored": 0,
        "pending": 0,
        "complete": True,
        "running": False,
        "warnings": [],
    }
    assert shared_api.stats()["requests_total"] == requests  # status sends nothing


def test_status_of_a_stopped_run_shows_the_pending_rows(
    tmp_path: Path, shared_api: FakeServer
) -> None:
    """A run stopped by a run-level cause (an unknown model): exit 3, and `status` counts
    its rows as pending, the run as incomplete."""
    src = write_jsonl(tmp_path / "in.jsonl", _rows(4))
    out = tmp_path / "run"
    args = ["run", str(src), "-o", str(out), "--base-url", shared_api.base_url, "-q"]
    stopped = run_cli([*args, "--model", "no-such-model"])
    assert stopped.exit_code == 3, stopped.stderr
    res = run_cli(["status", str(out)])
    assert res.exit_code == 0, res.stderr
    assert res.stdout == f"{out}: 4 rows: 0 succeeded, 0 errored, 4 pending (incomplete)\n"


@pytest.mark.parametrize("what", ["missing", "empty dir", "file"])
def test_status_of_something_else_exits_2(tmp_path: Path, what: str) -> None:
    """No run directory there (nothing, an empty dir, a file): exit 2 naming the path."""
    path = tmp_path / "thing"
    if what == "empty dir":
        path.mkdir()
    elif what == "file":
        path.write_text("x")
    res = run_cli(["status", str(path)])
    assert res.exit_code == 2
    assert res.stdout == ""
    said = "is a file, not a run directory" if what == "file" else "not a batchrunner run dir"
    assert f"Error: {path}" in res.stderr and said in res.stderr
    _clean(res)


# --- validate -------------------------------------------------------------------------------


def test_validate_a_good_file_needs_no_key_and_sends_nothing(tmp_path: Path) -> None:
    """`validate` exits 0 with the row count and shape on stdout, without a key or a server."""
    src = write_jsonl(tmp_path / "in.jsonl", _rows(7))
    res = run_cli(["validate", str(src)], key=None)
    assert res.exit_code == 0, res.stderr
    assert res.stdout == f"{src}: 7 rows (simple), valid\n"
    assert res.stderr == ""


def test_validate_applies_the_request_options(tmp_path: Path) -> None:
    """Template, id column and defaults are checked as the run would use them."""
    src = write_jsonl(tmp_path / "in.jsonl", [{"key": "k1", "question": "why?"}])
    ok = run_cli(["validate", str(src), "--template", "Q: {question}", "--id-column", "key"])
    assert ok.exit_code == 0, ok.stderr
    missing = run_cli(["validate", str(src), "--template", "{answer}", "--id-column", "key"])
    assert missing.exit_code == 2
    assert f"{src}:1: the template names column 'answer'" in missing.stderr
    no_id = run_cli(["validate", str(src), "--template", "{question}"])
    assert no_id.exit_code == 0  # without --id-column the row's index is its id
    both = run_cli(["validate", str(src), "--template", "{question}", "--prompt-column", "q"])
    assert both.exit_code == 2 and "not both" in both.stderr


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n', ":2: duplicate id 'a'"),
        ('{"id": "a"}\n', ":1: the row has neither prompt nor messages"),
        ('{"id": "a", "messages": [{"role": "user"}]}\n', ":1: messages[0] has no content"),
        ("", "no rows: the input is empty"),
    ],
)
def test_validate_a_bad_file_exits_2_naming_the_place(
    tmp_path: Path, content: str, said: str
) -> None:
    """The first problem goes to stderr with file and line; exit 2; nothing on stdout."""
    src = tmp_path / "in.jsonl"
    src.write_text(content, encoding="utf-8")
    res = run_cli(["validate", str(src)])
    assert res.exit_code == 2
    assert res.stdout == ""
    assert res.stderr.startswith(f"Error: {src}") and said in res.stderr
    _clean(res)


def test_validate_reports_job_file_and_input_problems(tmp_path: Path) -> None:
    """No input at all, or a job file with an unknown key: exit 2 saying which."""
    none = run_cli(["validate"])
    assert none.exit_code == 2 and "no input" in none.stderr
    job = tmp_path / "job.toml"
    job.write_text('[job]\ninput = "in.jsonl"\n[request]\nmodle = "m"\n', encoding="utf-8")
    write_jsonl(tmp_path / "in.jsonl", _rows(1))
    res = run_cli(["validate", "--job", str(job)])
    assert res.exit_code == 2 and "unknown key 'modle' in [request]" in res.stderr


# --- check and the base URL's environment variable --------------------------------------------


def test_check_reads_the_base_url_from_the_environment(shared_api: FakeServer) -> None:
    """Without --base-url, `check` asks the URL in CAICAINI_BASE; a flag beats the variable."""
    from_env = run_cli(["check"], env={BASE_ENV: shared_api.base_url})
    assert from_env.exit_code == 0, from_env.stderr
    assert from_env.stdout.startswith(f"base URL  ok      {shared_api.base_url} answers")
    flag = run_cli(["check", "--base-url", shared_api.base_url + "/"], env={BASE_ENV: OFFLINE})
    assert flag.exit_code == 0, flag.stderr
    assert shared_api.stats()["requests_total"] == 2
    assert shared_api.log() == []  # GET /models only: no generation


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("ftp://127.0.0.1/v1", "must look like https://host/v1"),
        ("http://user:hunter2@127.0.0.1:9/v1", "must not carry credentials"),
        ("not a url", "must look like https://host/v1"),
    ],
)
@pytest.mark.parametrize("where", ["flag", "env"])
def test_check_refuses_a_bad_base_url_without_echoing_it(url: str, said: str, where: str) -> None:
    """A base URL that is no http(s) URL, or carries a password: exit 2, URL not echoed."""
    args, env = (
        (["check", "--base-url", url], {}) if where == "flag" else (["check"], {BASE_ENV: url})
    )
    res = run_cli(args, env=env)
    assert res.exit_code == 2
    assert said in res.stderr
    assert "hunter2" not in res.stdout + res.stderr
    _clean(res)


def test_check_without_a_key_exits_2_naming_the_variable() -> None:
    """No key in the environment: exit 2 naming the variable, before any request."""
    res = run_cli(["check"], key=None, env={BASE_ENV: OFFLINE})
    assert res.exit_code == 2
    assert f"{KEY_ENV} is not set" in res.stderr


def test_run_reads_the_base_url_from_the_environment(
    tmp_path: Path, shared_api: FakeServer
) -> None:
    """With neither flag nor job file, `run` sends to CAICAINI_BASE."""
    src = write_jsonl(tmp_path / "in.jsonl", _rows(3))
    out = tmp_path / "run"
    res = run_cli(["run", str(src), "-o", str(out), "-q"], env={BASE_ENV: shared_api.base_url})
    assert res.exit_code == 0, res.stderr
    assert len(shared_api.log()) == 3
