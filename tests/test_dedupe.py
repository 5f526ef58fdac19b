"""--dedupe: identical request bodies are sent once, every row recorded under its own id."""

from __future__ import annotations

import json
import signal
import time
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
import pytest

from batchrunner.dedupe import FILE_NAME
from batchrunner.fakeapi import answer_for
from tests.fakeserver import FakeServer
from tests.helpers import TEST_KEY, run_cli, start_run, write_jsonl

if TYPE_CHECKING:
    from pathlib import Path

ROWS, DISTINCT = 1000, 100


def _rows() -> list[dict[str, str]]:
    return [
        {"id": f"row-{i:04d}", "prompt": f"distinct prompt {i % DISTINCT}"} for i in range(ROWS)
    ]


def _check_all_succeeded(out: Path, rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = pq.read_table(out / "results.parquet").to_pylist()
    assert [r["id"] for r in results] == [r["id"] for r in rows]
    for row, got in zip(rows, results, strict=True):
        assert got["status"] == "succeeded", got
        assert got["text"] == answer_for(row["prompt"], max_tokens=1024)[0]
    return results


def test_thousand_rows_with_a_hundred_prompts_send_a_hundred_requests(
    tmp_path: Path, shared_api: FakeServer
) -> None:
    rows = _rows()
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "run"
    args = ["run", str(src), "-o", str(out), "--base-url", shared_api.base_url, "-q"]
    res = run_cli([*args, "--dedupe", "--concurrency", "32"])
    assert res.exit_code == 0, res.stderr
    assert "900 rows answered without a request" in res.stdout
    generations = shared_api.log()
    assert len(generations) == DISTINCT
    assert len({g["prompt"] for g in generations}) == DISTINCT
    results = _check_all_succeeded(out, rows)
    # One leader per body sent it (attempts 1); the copies sent nothing of their own.
    assert [r["attempts"] for r in results].count(0) == ROWS - DISTINCT
    by_prompt: dict[str, set[object]] = {}
    for row, got in zip(rows, results, strict=True):
        by_prompt.setdefault(row["prompt"], set()).add(got["response_id"])
    assert all(len(ids) == 1 for ids in by_prompt.values())  # the answer's own response_id
    # Each copy is its own journal line: the status counts every row.
    status = run_cli(["status", str(out), "--json"])
    assert json.loads(status.stdout)["succeeded"] == ROWS
    # This invocation paid for 100 answers: its tokens are theirs, not the copies'.
    counted = json.loads((out / "run.json").read_text())["invocations"][-1]["this_invocation"]
    paid = [r for r in results if r["attempts"] > 0]
    assert (counted["requests"], counted["reused"]) == (DISTINCT, ROWS - DISTINCT)
    assert counted["output_tokens"] == sum(r["output_tokens"] for r in paid)


def test_without_dedupe_every_row_is_sent(tmp_path: Path, shared_api: FakeServer) -> None:
    rows = _rows()[:200]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    args = ["run", str(src), "-o", str(tmp_path / "run"), "--base-url", shared_api.base_url]
    assert run_cli([*args, "-q"]).exit_code == 0
    assert len(shared_api.log()) == 200


def test_when_the_first_copy_fails_the_next_sends_its_own(
    tmp_path: Path, shared_api: FakeServer
) -> None:
    """An errored answer is nobody's answer: each copy of a refused body asks for itself."""
    bad = {"prompt": "x", "thinking": {"type": "enabled", "budget_tokens": 10}}
    rows = [{"id": f"bad{i}", **bad} for i in range(3)] + [{"id": "ok", "prompt": "fine"}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    args = ["run", str(src), "-o", str(tmp_path / "run"), "--base-url", shared_api.base_url]
    assert run_cli([*args, "-q", "--dedupe"]).exit_code == 1
    assert sorted(g["prompt"] for g in shared_api.log()) == ["fine", "x", "x", "x"]
    assert not (tmp_path / "run" / FILE_NAME).read_text().count("budget_tokens")
    assert len((tmp_path / "run" / FILE_NAME).read_text().splitlines()) == 1


@pytest.mark.crash
def test_kill_halfway_then_resume_sends_no_answered_body_again(tmp_path: Path) -> None:
    rows = _rows()
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "run"
    extra = ("--dedupe", "--concurrency", "8")
    with FakeServer(*["--latency", "0.02-0.04"], api_key=TEST_KEY) as server:
        proc = start_run(src, out, server.base_url, *extra)
        answered_file = out / FILE_NAME
        deadline = time.monotonic() + 60
        # Kill once about half the distinct bodies are answered.
        while time.monotonic() < deadline and proc.poll() is None:
            if answered_file.exists() and answered_file.read_text().count("\n") >= DISTINCT // 2:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before the kill"
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        first = server.log()
        answered = {
            json.loads(line)["answer"]["text"] for line in answered_file.read_text().splitlines()
        }
        assert DISTINCT // 2 <= len(answered) < DISTINCT
        server.reset()
        final = start_run(src, out, server.base_url, *extra)
        _, err = final.communicate(timeout=120)
        assert final.returncode == 0, err
        second = server.log()
    texts = {g["prompt"]: answer_for(g["prompt"], max_tokens=1024)[0] for g in second}
    again = [prompt for prompt, text in texts.items() if text in answered]
    assert again == [], "a body answered before the kill was sent again"
    assert len(second) == len(texts)  # and each remaining body once
    assert len(first) + len(second) <= DISTINCT + 8  # at most the kill's in-flight again
    _check_all_succeeded(out, rows)
