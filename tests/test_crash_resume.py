"""Crash safety with real subprocesses: SIGKILL at random moments, SIGINT, then resume."""

from __future__ import annotations

import random
import signal
import time
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
import pytest

from batchrunner.fakeapi import answer_for
from tests.fakeserver import FakeServer
from tests.helpers import TEST_KEY, run_cli, start_run, wait_for_traffic, write_jsonl

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.crash

ROWS = 6000
CONCURRENCY = 64


def test_sigkill_six_times_then_sigint_then_resume_loses_nothing(tmp_path: Path) -> None:
    """6 kills + 1 Ctrl-C: every id exactly once with its own answer, few extra answers."""
    rng = random.Random(20261125)
    rows = [{"id": f"row-{i:05d}", "prompt": f"crash test prompt {i}"} for i in range(ROWS)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "run"
    kills = 0
    with FakeServer(*["--latency", "0.025-0.055"], api_key=TEST_KEY) as server:
        for _ in range(6):
            proc = start_run(src, out, server.base_url, "--concurrency", str(CONCURRENCY))
            wait_for_traffic(out, proc)
            time.sleep(rng.uniform(0.0, 0.6))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.communicate(timeout=30)
        proc = start_run(src, out, server.base_url, "--concurrency", str(CONCURRENCY))
        wait_for_traffic(out, proc)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        if proc.returncode == 130:
            assert "run the same command again" in err
        else:  # it finished before the signal landed: fine, but it must have succeeded
            assert proc.returncode == 0, err
        final = start_run(src, out, server.base_url, "--concurrency", str(CONCURRENCY))
        _, err = final.communicate(timeout=300)
        assert final.returncode == 0, err
        answers = server.stats()["answers_total"]
    assert kills >= 4, "most kills should land while the run is going"
    results = pq.read_table(out / "results.parquet").to_pylist()
    assert [r["id"] for r in results] == [r["id"] for r in rows]
    for row, got in zip(rows, results, strict=True):
        assert got["status"] == "succeeded"
        assert got["text"] == answer_for(row["prompt"], max_tokens=1024)[0]
    extra = answers - ROWS
    assert 0 <= extra <= (kills + 1) * CONCURRENCY, (answers, kills)
    assert not list(out.rglob("*.tmp"))


def test_resume_with_other_settings_is_refused_and_sends_nothing(tmp_path: Path) -> None:
    """A resume with a different --max-tokens: exit 2, the difference named, zero requests."""
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"p{i}"} for i in range(20)])
    out = tmp_path / "run"
    with FakeServer(api_key=TEST_KEY) as server:
        args = ["run", str(src), "-o", str(out), "--base-url", server.base_url, "-q"]
        assert run_cli([*args, "--limit", "5"]).exit_code == 0
        server.reset()
        res = run_cli([*args, "--max-tokens", "77"])
        assert res.exit_code == 2
        assert "max_tokens" in res.stderr
        assert server.stats()["requests_total"] == 0
        # The same settings resume and finish the other 15 rows only.
        assert run_cli(args).exit_code == 0
        assert len(server.log()) == 15  # generations only (the preflight GET /models is not one)


def test_second_runner_on_the_same_dir_is_refused(tmp_path: Path) -> None:
    """While one runner holds DIR, another is refused with exit 2 and a clear message."""
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"p{i}"} for i in range(400)])
    out = tmp_path / "run"
    with FakeServer(*["--latency", "0.5"], api_key=TEST_KEY) as server:
        first = start_run(src, out, server.base_url, "--concurrency", "4")
        try:
            wait_for_traffic(out, first)
            res = run_cli(["run", str(src), "-o", str(out), "--base-url", server.base_url, "-q"])
            assert res.exit_code == 2
            assert "in use" in res.stderr
        finally:
            first.send_signal(signal.SIGKILL)
            first.communicate(timeout=30)
        # The killed runner's lock is taken over.
        status = run_cli(["status", str(out), "--json"])
        assert status.exit_code == 0 and '"running": false' in status.stdout
