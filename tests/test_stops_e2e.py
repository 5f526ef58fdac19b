"""Run-level stops end to end: the input changing under the run, open-file limits, and a run
that ends with rows pending. Each must exit with its code (never 0 with rows pending, never
2 once requests were sent), without a traceback, losing nothing that was received."""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from batchrunner.rundir import RunDir
from tests.fakeserver import FakeServer
from tests.helpers import TEST_KEY, run_cli, status_json, write_jsonl

if TYPE_CHECKING:
    from collections.abc import Callable

    from batchrunner.feed import Feed
    from batchrunner.records import Result, Row


def _rows(n: int) -> list[dict[str, object]]:
    return [{"id": f"r{i}", "prompt": f"question number {i}"} for i in range(n)]


def _popen(
    args: list[str], *, preexec_fn: Callable[[], None] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "batchrunner", *args],
        env={**os.environ, "CAICAINI_API_KEY": TEST_KEY},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,
    )


def _wait_for_answers(calls_log: Path, proc: subprocess.Popen[str], n: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if calls_log.exists() and len(calls_log.read_bytes().splitlines()) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"never saw {n} answers")


@pytest.mark.parametrize("cut", ["mid-line", "to-nothing"])
def test_an_input_truncated_mid_run_stops_with_exit_3(tmp_path: Path, cut: str) -> None:
    """The input shrinks while a slow run reads it: exit 3 saying the input changed, the
    answered rows recorded, the rest pending, no results.parquet (never exit 0 or 2)."""
    src = write_jsonl(tmp_path / "in.jsonl", _rows(400))
    out = tmp_path / "run"
    with FakeServer("--latency", "0.2", api_key=TEST_KEY) as server:
        args = ["run", str(src), "-o", str(out), "--base-url", server.base_url]
        with _popen([*args, "--concurrency", "4", "-q"]) as proc:
            _wait_for_answers(out / "calls.log", proc, 4)
            with src.open("r+b") as handle:
                handle.truncate(src.stat().st_size // 3 + 7 if cut == "mid-line" else 0)
            _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert "the input changed under the run" in err, err
    assert "Traceback" not in err
    st = status_json(out)
    assert st["succeeded"] >= 4 and st["errored"] == 0
    assert st["pending"] == 400 - st["succeeded"] > 0
    assert not (out / "results.parquet").exists()


def _limit_open_files(soft: int, hard: int | None = None) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, soft if hard is None else hard))

    return limit


def test_concurrency_2000_under_ulimit_256_runs_with_a_lower_concurrency(tmp_path: Path) -> None:
    """Soft and hard limit 256: a warning, concurrency lowered to fit, every row answered
    once and recorded, no traceback (it used to crash on the journal and lose the answers)."""
    src = write_jsonl(tmp_path / "in.jsonl", _rows(400))
    out = tmp_path / "run"
    # 1 s answers: even on a loaded machine each wave is wholly in flight at once.
    with FakeServer("--latency", "1.0", api_key=TEST_KEY) as server:
        args = ["run", str(src), "-o", str(out), "--base-url", server.base_url]
        with _popen([*args, "--concurrency", "2000", "-q"], preexec_fn=_limit_open_files(256)) as p:
            stdout, err = p.communicate(timeout=120)
        stats = server.stats()
    assert p.returncode == 0, err
    assert "open-file limit is 256" in err and "instead of 2000" in err, err
    assert "Traceback" not in err
    assert "400 rows: 400 succeeded, 0 errored" in stdout
    assert stats["answers_total"] == 400  # nothing was received and then lost or re-sent
    assert 100 <= stats["max_in_flight"] < 256 - 64
    assert status_json(out)["complete"]


def test_a_low_soft_limit_is_raised_toward_the_hard_one(tmp_path: Path) -> None:
    """Soft 256, hard 4096: the run raises its soft limit and keeps --concurrency 2000."""
    src = write_jsonl(tmp_path / "in.jsonl", _rows(400))
    out = tmp_path / "run"
    # 1.5 s answers: even on a loaded machine the whole wave is in flight at once.
    with FakeServer("--latency", "1.5", api_key=TEST_KEY) as server:
        args = ["run", str(src), "-o", str(out), "--base-url", server.base_url, "-q"]
        limit = _limit_open_files(256, 4096)
        with _popen([*args, "--concurrency", "2000"], preexec_fn=limit) as proc:
            _wait_for_answers(out / "calls.log", proc, 1)
            limits = Path(f"/proc/{proc.pid}/limits").read_text()
            _, err = proc.communicate(timeout=120)
        stats = server.stats()
    assert proc.returncode == 0, err
    assert "open-file limit" not in err
    soft = next(line.split()[3] for line in limits.splitlines() if "open files" in line)
    assert 2000 < int(soft) <= 4096, limits
    assert stats["max_in_flight"] > 256  # more sockets than the soft limit allowed


def test_an_open_file_limit_too_low_for_one_request_refuses_before_sending(
    tmp_path: Path,
) -> None:
    """Soft and hard limit 60: not one socket fits beside the run's files: exit 2, nothing sent."""
    src = write_jsonl(tmp_path / "in.jsonl", _rows(10))
    with FakeServer(api_key=TEST_KEY) as server:
        args = ["run", str(src), "-o", str(tmp_path / "run"), "--base-url", server.base_url]
        with _popen([*args, "-q"], preexec_fn=_limit_open_files(60)) as proc:
            _, err = proc.communicate(timeout=60)
        sent = server.stats()["requests_total"]
    assert proc.returncode == 2, err
    assert "open-file limit (60" in err and "ulimit -n" in err, err
    assert "Traceback" not in err
    assert sent == 0


def test_out_of_file_descriptors_in_the_run_dir_keeps_what_was_received(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EMFILE while journaling an answer: exit 3 saying what to do; that answer is journaled
    once the run has stopped, so the resume does not send its row again."""
    src = write_jsonl(tmp_path / "in.jsonl", _rows(200))
    out = tmp_path / "run"
    real_record = RunDir.record
    refused: list[str] = []

    def record(self: RunDir, result: Result) -> None:
        if not refused and result.index == 50:
            refused.append(result.id)
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), "journal/seg-000001.jsonl")
        real_record(self, result)

    monkeypatch.setattr(RunDir, "record", record)
    with FakeServer(api_key=TEST_KEY) as server:
        args = ["run", str(src), "-o", str(out), "--base-url", server.base_url, "-q"]
        first = run_cli(args)
        assert first.exit_code == 3, first.output
        assert "Too many open files" in first.stderr and "ulimit -n" in first.stderr
        assert "Traceback" not in first.stderr
        assert refused == ["r50"]
        resumed = run_cli(args)
        log = server.log()
    assert resumed.exit_code == 0, resumed.output
    assert sum(1 for entry in log if entry["prompt"] == "question number 50") == 1
    assert status_json(out)["succeeded"] == 200


def test_a_run_that_ends_with_rows_pending_never_exits_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_api: FakeServer
) -> None:
    """If rows end without an outcome and nothing stopped the run, it still exits 3."""

    async def produce_half(out: Feed[Row], **kwargs: Any) -> None:
        try:  # a producer that (wrongly) stops after row 4
            for row in real_read(kwargs["spec"]):
                if row.index >= 5:
                    return
                await out.send(row)
        finally:
            await out.close()

    from batchrunner import runner
    from batchrunner.inputs import read_rows

    def real_read(spec: Any) -> Any:
        return read_rows(spec.input, spec.source_options())

    monkeypatch.setattr(runner, "produce", produce_half)
    src = write_jsonl(tmp_path / "in.jsonl", _rows(12))
    res = run_cli(["run", str(src), "-o", str(tmp_path / "run"), "--base-url", shared_api.base_url])
    assert res.exit_code == 3, res.output
    assert "7 pending" in res.stderr and "run the same command again" in res.stderr
    assert not (tmp_path / "run" / "results.parquet").exists()
