"""report: counts, tokens (cache included), latency, busy time and cost from the run dir alone."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from batchrunner.errors import ConfigError
from batchrunner.records import Result
from batchrunner.report import Pricing, find_pricing, summarize
from tests.helpers import open_run, run_cli

if TYPE_CHECKING:
    from pathlib import Path

T0 = 1_760_000_000_000_000  # microseconds since the epoch
DAY_US = 86_400 * 10**6


def _ok(i: int, *, response: dict[str, Any] | None = None, **kw: Any) -> Result:
    body = response or {"id": f"msg_{i}", "type": "message", "usage": {"input_tokens": 1}}
    fields: dict[str, Any] = {
        "input_tokens": 10,
        "output_tokens": 4,
        "attempts": 1,
        "latency_ms": 100.0,
        "completed_at_us": T0 + i * 1000,
        **kw,
    }
    return Result(index=i, id=f"r{i}", status="succeeded", response=json.dumps(body), **fields)


def _err(i: int, error_type: str, **kw: Any) -> Result:
    fields: dict[str, Any] = {"attempts": 1, "latency_ms": 5.0, "completed_at_us": T0, **kw}
    return Result(index=i, id=f"r{i}", status="errored", error_type=error_type, **fields)


def test_cache_tokens_are_read_from_both_conventions_and_not_from_a_tool_input(
    tmp_path: Path,
) -> None:
    """Messages cache read/creation and chat cached_tokens count; a tool's input does not."""
    messages = {
        "type": "message",
        "content": [
            {"type": "text", "text": 'say "usage": {"cache_read_input_tokens": 55}'},
            {"type": "tool_use", "input": {"usage": {"cache_read_input_tokens": 99}}},
        ],
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 3,
            "cache_creation": {"ephemeral_5m_input_tokens": 3},
            "cache_read_input_tokens": 7,
            "output_tokens": 4,
        },
    }
    chat = {
        "object": "chat.completion",
        "usage": {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 5}},
    }
    run = tmp_path / "run"
    with open_run(run, total=3) as rd:
        rd.record(_ok(0, response=messages))
        rd.record(_ok(1, response=chat))
        rd.record(_ok(2))  # a response without cache fields
    rep = summarize(run)
    assert rep.cache_read_input_tokens == {"sum": 12, "mean": 6.0}
    assert rep.cache_creation_input_tokens == {"sum": 3, "mean": 3.0}
    assert rep.input_tokens == {"sum": 30, "mean": 10.0}
    assert rep.output_tokens == {"sum": 12, "mean": 4.0}


def test_counts_latency_percentiles_and_attempts_histogram(tmp_path: Path) -> None:
    """Status and error-type counts, pending, p50/p90/p99 within 1%, attempts histogram."""
    run = tmp_path / "run"
    with open_run(run, total=110) as rd:
        for i in range(100):
            rd.record(_ok(i, latency_ms=float(i + 1), attempts=1 + (i % 10 == 0)))
        rd.record(_err(100, "invalid_request_error", latency_ms=50.5))
        rd.record(_err(101, "timeout", attempts=3, latency_ms=50.5))
        rd.record(_err(102, "timeout", attempts=0, latency_ms=0.0))  # never sent
    rep = summarize(run)
    assert rep.status == {"succeeded": 100, "errored": 3, "pending": 7}
    assert rep.error_type == {"timeout": 2, "invalid_request_error": 1}
    assert not rep.complete and not rep.running
    assert rep.latency_ms is not None
    # Nearest rank over the 102 sent rows (1..100 ms, and 50.5 ms twice).
    for key, exact in (("p50", 50.5), ("p90", 90.0), ("p99", 99.0)):
        assert abs(rep.latency_ms[key] - exact) <= 0.006 * exact, (key, rep.latency_ms)
    assert rep.latency_ms["max"] == 100.0
    assert rep.attempts == {"sum": 114, "histogram": {"0": 1, "1": 91, "2": 10, "3": 1}}


def test_busy_time_leaves_out_the_pause_between_two_invocations(tmp_path: Path) -> None:
    """Two 2 s stretches a day apart: about 4 s busy (not a day), rates from that."""
    run = tmp_path / "run"
    with open_run(run, total=40) as rd:
        for i in range(20):  # rows busy over [T0, T0 + 2 s]
            rd.record(_ok(i, latency_ms=1000.0, completed_at_us=T0 + 10**6 + i * 50_000))
        for i in range(20, 40):  # the resume, a day later
            done = T0 + DAY_US + 10**6 + (i - 20) * 50_000
            rd.record(_ok(i, latency_ms=1000.0, completed_at_us=done, attempts=2))
    rep = summarize(run)
    assert 3.9 <= rep.wall_s <= 6.0, rep.wall_s
    assert rep.rows_per_s == pytest.approx(40 / rep.wall_s, rel=1e-3)
    assert rep.requests_per_s == pytest.approx(60 / rep.wall_s, rel=1e-3)
    assert rep.completed_at["first"] == "2025-10-09T08:53:21Z"


def test_a_single_stretch_is_timed_exactly(tmp_path: Path) -> None:
    """One invocation: wall time is first send to last outcome, to the millisecond."""
    run = tmp_path / "run"
    with open_run(run, total=2) as rd:
        rd.record(_ok(0, latency_ms=200.0, completed_at_us=T0 + 300_000))
        rd.record(_ok(1, latency_ms=100.0, completed_at_us=T0 + 500_000))
    rep = summarize(run)
    assert rep.wall_s == pytest.approx(0.4)  # from T0 + 0.1 s to T0 + 0.5 s
    assert rep.rows_per_s == pytest.approx(5.0)


def test_pricing_from_the_job_file_or_run_json_gives_the_cost(tmp_path: Path) -> None:
    """--job's [pricing] wins; else run.json's job.pricing; else no cost."""
    run = tmp_path / "run"
    with open_run(run, total=2) as rd:
        rd.record(_ok(0, input_tokens=1_000_000, output_tokens=200_000))
        rd.record(_ok(1, input_tokens=1_000_000, output_tokens=0))
    assert find_pricing(run, None) is None
    assert summarize(run).cost is None
    (run / "run.json").write_text(
        json.dumps({"job": {"pricing": {"input_per_mtok": 1.0, "output_per_mtok": 10.0}}})
    )
    job = tmp_path / "job.toml"
    job.write_text("[pricing]\ninput_per_mtok = 3.0\noutput_per_mtok = 15\n")
    from_run = find_pricing(run, None)
    assert from_run == Pricing(1.0, 10.0, str(run / "run.json"))
    assert summarize(run, pricing=from_run).cost == {
        "usd": 4.0,
        "input_usd": 2.0,
        "output_usd": 2.0,
        "input_per_mtok": 1.0,
        "output_per_mtok": 10.0,
        "pricing_from": str(run / "run.json"),
    }
    res = run_cli(["report", str(run), "--job", str(job), "--json"])
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["cost"]["usd"] == 9.0  # 2 Mtok x $3 + 0.2 Mtok x $15
    text = run_cli(["report", str(run), "--job", str(job)]).stdout
    assert "cost      $9.0000 (input $6.0000, output $3.0000; $3/$15 per million" in text


def test_bad_pricing_is_refused_with_exit_2(tmp_path: Path) -> None:
    """A negative price, a typo in [pricing] or a missing job file: exit 2, named."""
    run = tmp_path / "run"
    with open_run(run, total=1):
        pass
    job = tmp_path / "job.toml"
    job.write_text("[pricing]\ninput_per_mtok = -1\n")
    res = run_cli(["report", str(run), "--job", str(job)])
    assert res.exit_code == 2 and "input_per_mtok must be a number >= 0" in res.stderr
    job.write_text("[pricing]\ninput_per_mtoks = 1\n[limits]\nbogus = 1\n")
    with pytest.raises(ConfigError, match="unknown key 'input_per_mtoks' in \\[pricing\\]"):
        find_pricing(run, job)
    res = run_cli(["report", str(run), "--job", str(tmp_path / "nope.toml")])
    assert res.exit_code == 2 and "job file not found" in res.stderr


def test_text_report_for_people_and_an_empty_run(tmp_path: Path) -> None:
    """The text names rows, errors, tokens, latency, attempts and how to get a cost."""
    run = tmp_path / "run"
    with open_run(run, total=3) as rd:
        res = run_cli(["report", str(run)])
        assert res.exit_code == 0
        assert "3 pending" in res.stdout and "(running)" in res.stdout
        rd.record(_ok(0))
        rd.record(_err(1, "rate_limit_error"))
    out = run_cli(["report", str(run)]).stdout
    for expected in (
        "rows      3: 1 succeeded, 1 errored, 1 pending",
        "errors    rate_limit_error 1",
        "tokens    input 10 (mean 10), output 4 (mean 4)",
        "latency   p50 ",
        "attempts  1: 2",
        "cost      unknown: give --job FILE with a [pricing] section",
    ):
        assert expected in out, out
    assert "last error" not in out  # no calls.log: nothing failed on the wire
    missing = run_cli(["report", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "not a batchrunner run directory" in missing.stderr


def test_the_last_failed_attempt_comes_from_calls_log(tmp_path: Path) -> None:
    """The newest failed attempt of calls.log (cancelled ones and a torn last line skipped)
    is in `last_error` and in the text: what a tripped breaker's pending rows failed with."""
    run = tmp_path / "run"
    open_run(run, total=3).close()
    lines = [
        {"ts": 1.0, "row_id": "r0", "attempt": 1, "http_status": 200, "error_type": None},
        {
            "ts": 1_760_000_000.5,
            "row_id": "r1",
            "attempt": 2,
            "http_status": 400,
            "error_type": "invalid_request_error",
            "error_message": "Invalid model name passed in model=nope",
        },
        {"ts": 3.0, "row_id": "r2", "attempt": 1, "http_status": None, "error_type": "cancelled"},
    ]
    text = "".join(json.dumps(line) + "\n" for line in lines) + '{"ts": 4.0, "row_id'
    (run / "calls.log").write_text(text)
    report = summarize(run)
    assert report.last_error == lines[1]
    assert json.loads(report.to_json())["last_error"]["row_id"] == "r1"
    assert (
        "last error 2025-10-09T08:53:20.500000Z, row r1 attempt 2: HTTP 400 "
        'invalid_request_error: "Invalid model name passed in model=nope" '
        "(calls.log has every attempt)"
    ) in report.to_text()
    (run / "calls.log").write_text(json.dumps(lines[0]) + "\n")
    assert summarize(run).last_error is None
