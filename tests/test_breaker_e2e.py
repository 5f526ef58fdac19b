"""The failure breaker leaves the rows of its streak pending, so a plain resume retries them.

Whole runs (CLI in-process) against a hostile server on loopback: when every generation
fails, the run stops after `breaker_window` failures with every row pending, and once the
server is fixed the same command completes without --retry-errors. Failures that a success
interrupts, or that end the input, are ordinary outcomes and are recorded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow.parquet as pq
import pytest

from batchrunner.errors import RunAbortedError
from tests.helpers import run_cli, status_json, write_jsonl
from tests.hostile import HostileState, hostile_api

if TYPE_CHECKING:
    from pathlib import Path

ROWS = 60


def _job(tmp_path: Path, rows: list[dict[str, str]], *, window: int, concurrency: int) -> Path:
    write_jsonl(tmp_path / "in.jsonl", rows)
    job = tmp_path / "job.toml"
    job.write_text(
        '[job]\ninput = "in.jsonl"\noutput = "run"\n[limits]\n'
        f"concurrency = {concurrency}\nmax_attempts = 2\nbreaker_window = {window}\n",
        encoding="utf-8",
    )
    return job


@pytest.mark.parametrize("status", [500, 400])
def test_a_tripped_breaker_leaves_its_rows_pending_and_a_plain_resume_finishes(
    tmp_path: Path, status: int
) -> None:
    """Every generation fails (500, retried; or 400): the breaker trips with all 60 rows
    pending, none errored; with the server fixed, the same command (no --retry-errors)
    completes every row."""
    rows = [{"id": f"r{i}", "prompt": f"question {i}"} for i in range(ROWS)]
    job = _job(tmp_path, rows, window=10, concurrency=4)
    out = tmp_path / "run"
    with hostile_api(HostileState(fail_status=status)) as server:
        args = ["run", "--job", str(job), "--base-url", server.base_url, "-q"]
        tripped = run_cli(args)
        sent_before = sum(server.state.prompts.values())
        assert tripped.exit_code == RunAbortedError.exit_code, tripped.output
        assert "last 10 rows all failed" in tripped.stderr and "left pending" in tripped.stderr
        assert f"HTTP {status}" in tripped.stderr  # the last error is quoted
        st = status_json(out)
        assert (st["total"], st["pending"], st["errored"], st["succeeded"]) == (ROWS, ROWS, 0, 0)
        assert sent_before < ROWS  # it stopped early: most rows were never sent
        server.state.fail_status = None
        fixed = run_cli(args)
    assert fixed.exit_code == 0, fixed.output
    st = status_json(out)
    assert (st["succeeded"], st["errored"], st["pending"], st["complete"]) == (ROWS, 0, 0, True)
    results = pq.read_table(out / "results.parquet").to_pylist()
    assert [r["text"] for r in results] == [f"answer to question {i}" for i in range(ROWS)]


def test_failures_a_success_interrupts_and_a_short_final_streak_are_recorded(
    tmp_path: Path,
) -> None:
    """Streaks shorter than the window are real outcomes: journaled when a success ends
    them, or when the input ends, so the run completes with those rows errored."""
    kinds = ["fail", "fail", "ok", "fail", "ok", "ok", "fail", "fail", "fail"]
    rows = [{"id": f"r{i}", "prompt": f"{kind} {i}"} for i, kind in enumerate(kinds)]
    job = _job(tmp_path, rows, window=4, concurrency=1)
    with hostile_api() as server:
        res = run_cli(["run", "--job", str(job), "--base-url", server.base_url, "-q"])
    assert res.exit_code == 1, res.output  # finished with errored rows, not stopped
    assert "9 rows: 3 succeeded, 6 errored" in res.stdout
    results = pq.read_table(tmp_path / "run" / "results.parquet").to_pylist()
    assert [r["status"] == "succeeded" for r in results] == [k == "ok" for k in kinds]
    assert {r["error_type"] for r in results if r["status"] == "errored"} == {
        "invalid_request_error"
    }


def test_a_429_with_billing_hard_limit_stops_the_run_at_once(tmp_path: Path) -> None:
    """A 429 carrying OpenAI's `billing_hard_limit_reached` is a quota refusal: it is not
    retried, the first one stops the run with the quota message (exit 3), and every row
    stays pending (not errored row by row until the 50-failure breaker trips)."""
    rows = [{"id": f"r{i}", "prompt": f"question {i}"} for i in range(ROWS)]
    job = _job(tmp_path, rows, window=50, concurrency=4)
    billing = {
        "error": {
            "message": "Billing hard limit has been reached",
            "type": "invalid_request_error",
            "param": None,
            "code": "billing_hard_limit_reached",
        }
    }
    state = HostileState(fail_status=429, fail_body=billing)
    with hostile_api(state) as server:
        res = run_cli(["run", "--job", str(job), "--base-url", server.base_url, "-q"])
        sent = sum(server.state.prompts.values())
    assert res.exit_code == RunAbortedError.exit_code == 3, res.output
    assert "the account has no quota or credit left (HTTP 429" in res.stderr, res.stderr
    assert "Billing hard limit has been reached" in res.stderr
    assert sent == 1  # the first answer stopped the run: no retry, no second row
    st = status_json(tmp_path / "run")
    assert (st["pending"], st["errored"], st["succeeded"]) == (ROWS, 0, 0)
