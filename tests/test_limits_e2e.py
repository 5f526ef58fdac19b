"""End to end: server rate limits, run-level breakers and the stall watchdog.

Each test drives the real CLI against the fake API on loopback and judges the run from what
the server logged (arrival times, statuses) and what the run directory holds. Runs that need
real wall-clock pacing, or that might hang if the product is wrong, are subprocesses with a
deadline; the rest run in-process.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import pytest

from tests.fakeserver import FakeServer
from tests.helpers import TEST_KEY, run_cli, status_json, write_jsonl

# Paced against a clock: with `--dist loadgroup` these run one at a time on one worker,
# never beside another such test (a starved fake API bunches arrivals into its window).
pytestmark = pytest.mark.xdist_group("timing")

if TYPE_CHECKING:
    from pathlib import Path


def _rows(n: int, tag: str = "q") -> list[dict[str, object]]:
    return [{"id": f"{tag}{i}", "prompt": f"{tag} question number {i}"} for i in range(n)]


def _run_args(src: Path, out: Path, base_url: str, *extra: str) -> list[str]:
    return ["run", str(src), "-o", str(out), "--base-url", base_url, *extra]


def _subprocess_run(
    args: list[str], *, timeout: float, key: str = TEST_KEY
) -> tuple[subprocess.CompletedProcess[str], float]:
    """`python -m batchrunner ARGS` with a deadline; returns the result and its wall time."""
    env = {**os.environ, "CAICAINI_API_KEY": key}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "batchrunner", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done, time.monotonic() - started


def _by_prompt(log: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in log:
        grouped[str(entry["prompt"])].append(entry)
    for entries in grouped.values():
        entries.sort(key=lambda e: float(e["t"]))
    return grouped


@pytest.mark.slow
def test_paces_to_the_server_limit_without_rpm_and_honours_retry_after(tmp_path: Path) -> None:
    """At 100 req/s, 2 000 rows at concurrency 256 without --rpm pace >= 85 % with <= 5 % 429s."""
    rows = _rows(2000)
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "run"
    with FakeServer("--rate-limit-rps", "100", api_key=TEST_KEY) as server:
        done, _ = _subprocess_run(
            _run_args(src, out, server.base_url, "--concurrency", "256", "-q"),
            timeout=90,
        )
        log = server.log()
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2000 rows: 2000 succeeded, 0 errored" in done.stdout
    arrivals = [float(e["t"]) for e in log]
    ok = sum(1 for e in log if e["status"] == 200)
    refused = sum(1 for e in log if e["status"] == 429)
    assert ok == 2000, (ok, len(log))
    pace = ok / (max(arrivals) - min(arrivals))
    assert pace >= 85.0, pace
    assert refused <= 0.05 * len(log), (refused, len(log))
    early = []
    for entries in _by_prompt(log).values():
        for before, after in itertools.pairwise(entries):
            if before["status"] == 429:
                gap = float(after["t"]) - float(before["t"])
                if gap < float(before["retry_after"]):
                    early.append((before, after))
    assert not early, early[:5]


def test_a_refused_key_stops_at_once_and_the_fixed_key_resumes(tmp_path: Path) -> None:
    """A wrong key sends <= 64 requests, exits 3 naming the variable, and the fixed key resumes."""
    src = write_jsonl(tmp_path / "in.jsonl", _rows(5000))
    out = tmp_path / "run"
    wrong = "sk-wrong-9876543210-OTHER"
    args = ["run", str(src), "-o", str(out), "--concurrency", "32", "-q"]
    with FakeServer(api_key=TEST_KEY) as server:
        args += ["--base-url", server.base_url]
        started = time.monotonic()
        refused = run_cli(args, key=wrong)
        elapsed = time.monotonic() - started
        sent = server.stats()["requests_total"]
        assert refused.exit_code == 3, refused.output
        assert elapsed < 20, elapsed
        assert sent <= 64, sent
        assert "key was refused" in refused.stderr and "CAICAINI_API_KEY" in refused.stderr
        assert wrong not in refused.output and TEST_KEY not in refused.output
        assert not (out / "results.parquet").exists()
        st = status_json(out)
        assert (st["total"], st["pending"], st["succeeded"], st["errored"]) == (5000, 5000, 0, 0)
        fixed = run_cli(args)
    assert fixed.exit_code == 0, fixed.stderr[-2000:]
    assert "5000 rows: 5000 succeeded, 0 errored" in fixed.stdout
    st = status_json(out)
    assert (st["succeeded"], st["pending"], st["complete"]) == (5000, 0, True)


def test_an_unknown_model_stops_the_run_and_names_the_model(tmp_path: Path) -> None:
    """--model nope/none: exit 3 within seconds, the message names the model, every row pending."""
    src = write_jsonl(tmp_path / "in.jsonl", _rows(500))
    out = tmp_path / "run"
    with FakeServer(api_key=TEST_KEY) as server:
        started = time.monotonic()
        res = run_cli(
            _run_args(
                src, out, server.base_url, "--model", "nope/none", "--concurrency", "16", "-q"
            )
        )
        elapsed = time.monotonic() - started
        generation = len(server.log())
    assert res.exit_code == 3, res.output
    assert elapsed < 20, elapsed
    assert "nope/none" in res.stderr and "model" in res.stderr
    assert generation <= 16, generation
    st = status_json(out)
    assert (st["pending"], st["succeeded"], st["errored"]) == (500, 0, 0)
    assert not (out / "results.parquet").exists()


@pytest.mark.parametrize("api", ["messages", "chat"])
def test_an_exhausted_quota_stops_the_run_and_records_nothing(tmp_path: Path, api: str) -> None:
    """A quota refusal (402 or 429 insufficient_quota) exits 3 naming it and records no row."""
    src = write_jsonl(tmp_path / "in.jsonl", _rows(300))
    out = tmp_path / "run"
    with FakeServer("--quota-exhausted", api_key=TEST_KEY) as server:
        started = time.monotonic()
        res = run_cli(
            _run_args(src, out, server.base_url, "--api", api, "--concurrency", "8", "-q")
        )
        elapsed = time.monotonic() - started
        log = server.log()
    assert res.exit_code == 3, res.output
    assert elapsed < 20, elapsed
    assert "quota" in res.stderr.lower() or "billing" in res.stderr.lower(), res.stderr
    # A quota refusal is not retried: no prompt reaches the server twice.
    assert len(log) <= 8 and all(len(e) == 1 for e in _by_prompt(log).values()), len(log)
    st = status_json(out)
    assert (st["errored"], st["succeeded"], st["pending"]) == (0, 0, 300)


def test_consecutive_failures_trip_the_breaker_and_leave_the_rest_pending(tmp_path: Path) -> None:
    """With breaker_window = 10 and every row a 400, the run stops after about 10 failures."""
    write_jsonl(tmp_path / "in.jsonl", _rows(200))
    job = tmp_path / "job.toml"
    job.write_text(
        '[job]\ninput = "in.jsonl"\noutput = "run"\n\n'
        "[request]\ntemperature = 7\n\n"
        "[limits]\nconcurrency = 4\nbreaker_window = 10\n",
        encoding="utf-8",
    )
    out = tmp_path / "run"
    with FakeServer(api_key=TEST_KEY) as server:
        res = run_cli(["run", "--job", str(job), "--base-url", server.base_url, "-q"])
        log = server.log()
    assert res.exit_code == 3, res.output
    assert "last 10 rows all failed" in res.stderr, res.stderr
    st = status_json(out)
    # The rows whose failures tripped the breaker are left pending with the rest.
    assert (st["succeeded"], st["errored"], st["pending"]) == (0, 0, 200), st
    assert all(e["status"] == 400 for e in log if e["status"] is not None)
    assert len(log) < 10 + 2 * 4, len(log)


def test_the_stall_watchdog_requeues_hung_requests(tmp_path: Path) -> None:
    """With every first attempt hung, --stall-timeout 1 requeues them and the run completes;
    calls.log says each hung attempt was `cancelled` (not a line of nulls)."""
    src = write_jsonl(tmp_path / "in.jsonl", _rows(24))
    out = tmp_path / "run"
    fake = ["--faults", "hang", "--fault-rate", "1.0", "--fault-max-per-prompt", "1"]
    with FakeServer(*fake, api_key=TEST_KEY) as server:
        done, elapsed = _subprocess_run(
            _run_args(
                src,
                out,
                server.base_url,
                "--concurrency",
                "8",
                "--stall-timeout",
                "1",
                "--timeout",
                "60",
                "-q",
            ),
            timeout=55,
        )
        log = server.log()
    assert done.returncode == 0, done.stderr[-2000:]
    assert elapsed < 30, elapsed
    assert "requeueing" in done.stderr, done.stderr
    assert "24 rows: 24 succeeded, 0 errored" in done.stdout
    by_prompt = _by_prompt(log)
    assert len(by_prompt) == 24
    calls = [json.loads(line) for line in (out / "calls.log").read_text().splitlines()]
    cancelled = [c for c in calls if c["error_type"] == "cancelled"]
    assert {c["row_id"] for c in cancelled} == {f"q{i}" for i in range(24)}
    assert all(c["attempt"] == 1 and c["http_status"] is None for c in cancelled)
    assert all(c["error_type"] is not None or c["http_status"] is not None for c in calls)
    for entries in by_prompt.values():
        # The first attempt hung and was requeued; a later one was answered.
        assert entries[0]["fault"] == "hang" and entries[0]["status"] is None, entries
        assert any(e["status"] == 200 for e in entries[1:]), entries
