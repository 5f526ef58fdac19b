"""Every run ends with a summary saying what the exit code means and what to do; `-q` shows
only that, `--no-progress` plain lines. The offered retry command works when followed."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

import pytest

from batchrunner.progress import Progress, RunEnd
from batchrunner.spec import PricingSpec
from batchrunner.summary import summary_lines
from tests.fakeserver import FakeServer
from tests.helpers import TEST_KEY, run_cli, status_json, write_jsonl

if TYPE_CHECKING:
    from pathlib import Path

    from tests.fakeserver import FakeServer as Server


def _rows(n: int) -> list[dict[str, object]]:
    return [{"id": f"r{i}", "prompt": f"question {i}"} for i in range(n)]


def test_quiet_prints_nothing_but_the_summary(tmp_path: Path, shared_api: Server) -> None:
    """`-q`: stderr stays empty; stdout is the summary alone, ending with the exit's meaning."""
    src = write_jsonl(tmp_path / "in.jsonl", _rows(5))
    out = tmp_path / "run"
    res = run_cli(["run", str(src), "-o", str(out), "--base-url", shared_api.base_url, "-q"])
    assert res.exit_code == 0, res.stderr
    assert res.stderr == ""
    lines = res.stdout.splitlines()
    assert lines[0] == f"5 rows: 5 succeeded, 0 errored, 0 pending -> {out}/results.parquet"
    assert lines[1].startswith("this run: 5 rows recorded in ")
    assert "5 requests (0 retries, 429s 0, 529s 0); tokens " in lines[1]
    assert lines[2] == "cost: unknown (no [pricing])"
    assert lines[3] == f"run dir: {out} (batchrunner report {out}: the whole run)"
    assert lines[-1] == "exit 0: every row succeeded"


def test_no_progress_off_a_terminal_prints_plain_lines(tmp_path: Path, shared_api: Server) -> None:
    """`--no-progress` (and any run off a terminal): plain `label text | ...` lines on
    stderr, no cursor movement; the summary on stdout."""
    src = write_jsonl(tmp_path / "in.jsonl", _rows(5))
    args = ["run", str(src), "--base-url", shared_api.base_url]
    plain = run_cli([*args, "-o", str(tmp_path / "a"), "--no-progress"])
    default = run_cli([*args, "-o", str(tmp_path / "b")])  # CliRunner's stderr is no TTY
    for res in (plain, default):
        assert res.exit_code == 0, res.stderr
        progress = [line for line in res.stderr.splitlines() if line.startswith("rows ")]
        assert progress, res.stderr
        assert " | speed " in progress[0] and " | wire " in progress[0]
        assert " | errors none" in progress[0]
        assert "\x1b" not in res.stderr and "\r" not in res.stderr
        assert res.stdout.startswith("5 rows: 5 succeeded")


def test_the_offered_retry_command_retries_the_errored_rows(tmp_path: Path) -> None:
    """Rows that errored: the summary lists the error types and a command with
    --retry-errors; running it (as printed) sends them again and the run completes."""
    src = write_jsonl(tmp_path / "in.jsonl", _rows(12))
    out = tmp_path / "run"
    faults = ("--fault-rate", "0.5", "--faults", "500", "--fault-max-per-prompt", "1")
    with FakeServer(*faults, api_key=TEST_KEY) as server:
        args = ["-o", str(out), "--base-url", server.base_url, "--max-attempts", "1", "-q"]
        first = run_cli(["run", str(src), *args])
        assert first.exit_code == 1, first.stderr
        errored = status_json(out)["errored"]
        assert errored > 0
        lines = first.stdout.splitlines()
        assert f"errors this run: api_error {errored}" in lines
        assert f"exit 1: the run finished, but {errored} rows errored" in first.stdout
        offered = next(line for line in lines if line.startswith("to send the errored rows"))
        command = shlex.split(offered.split(": ", 1)[1])
        assert command[:2] == ["batchrunner", "run"] and command[-1] == "--retry-errors"
        again = run_cli(command[1:])
        sent_again = len(server.log()) - 12
    assert again.exit_code == 0, again.stderr
    assert sent_again == errored
    status = status_json(out)
    assert (status["succeeded"], status["errored"], status["pending"]) == (12, 0, 0)
    assert again.stdout.splitlines()[-1] == "exit 0: every row succeeded"


def test_a_stopped_run_still_ends_with_a_summary(tmp_path: Path, shared_api: Server) -> None:
    """A refused key (exit 3): the error on stderr, then the summary saying what exit 3
    means, with the rows pending and no retry command (the cause must be fixed first)."""
    src = write_jsonl(tmp_path / "in.jsonl", _rows(4))
    out = tmp_path / "run"
    res = run_cli(
        ["run", str(src), "-o", str(out), "--base-url", shared_api.base_url, "-q"],
        key="sk-wrong-key-0000",
    )
    assert res.exit_code == 3
    assert res.stderr.startswith("Error: run stopped: the API key was refused")
    assert res.stdout.startswith("4 rows: 0 succeeded, 0 errored, 4 pending\n")
    assert "exit 3: stopped early by a run-level cause, with rows pending: 4 rows pending" in (
        res.stdout
    )
    assert "--retry-errors" not in res.stdout


def _end(code: int | None, *, pending: int = 2) -> RunEnd:
    p = Progress(total=10, succeeded=6, errored=2, input_tokens=1000, output_tokens=2000)
    p.errors = {"timeout": 1, "overloaded_error": 1}
    return RunEnd(
        run_dir="runs/x",
        results="runs/x/results.parquet" if pending == 0 else None,
        total=10,
        succeeded=8 - pending,
        errored=2,
        pending=pending,
        progress=p,
        wall_s=3.0,
        exit_code=code,
    )


@pytest.mark.parametrize(
    ("code", "said"),
    [
        (130, "exit 130: interrupted by SIGINT: what was received is recorded; run the same"),
        (143, "exit 143: interrupted by SIGTERM: what was received is recorded; run the same"),
        (3, "exit 3: stopped early by a run-level cause, with rows pending: 2 rows pending"),
        (None, "the run ended with an unexpected error (above)"),
    ],
)
def test_each_exit_code_is_explained(code: int | None, said: str) -> None:
    """The summary names the exit code's meaning and the next step, for every code."""
    lines = summary_lines(_end(code), pricing=None, retry_command="batchrunner run x")
    assert any(line.startswith(said) for line in lines), lines
    assert ("to send the errored rows again: batchrunner run x" in lines) is (code in (130, 143))


def test_cost_and_top_errors_in_the_summary() -> None:
    """With [pricing] the summary gives this run's cost; error types by count, at most 5."""
    end = _end(1, pending=0)
    end.progress.errors.update({f"kind_{i}": 1 for i in range(6)})
    pricing = PricingSpec(input_per_mtok=3.0, output_per_mtok=15.0)
    lines = summary_lines(end, pricing=pricing, retry_command=None)
    assert "cost: $0.0330 this run" in lines
    errors = next(line for line in lines if line.startswith("errors this run: "))
    assert errors.endswith(", +3 more") and errors.count(",") == 5
