"""--cache DIR: answers shared across runs through one SQLite file."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
import pytest

import batchrunner
from batchrunner.cache import FILE_NAME
from batchrunner.outcomes import answer_fields, reused_answer, stored_answer
from batchrunner.records import Result, Row
from tests.helpers import TEST_KEY, run_cli, start_run, write_jsonl

if TYPE_CHECKING:
    from pathlib import Path

    from tests.fakeserver import FakeServer

VARYING = ("completed_at", "latency_ms")


def _rows(n: int, distinct: int) -> list[dict[str, str]]:
    return [{"id": f"row-{i:04d}", "prompt": f"cached prompt {i % distinct}"} for i in range(n)]


def _run(src: Path, out: Path, server: FakeServer, *extra: str) -> None:
    args = ["run", str(src), "-o", str(out), "--base-url", server.base_url, "-q", *extra]
    res = run_cli(args)
    assert res.exit_code == 0, res.stderr


def _table(out: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = pq.read_table(out / "results.parquet").to_pylist()
    return [{k: v for k, v in row.items() if k not in VARYING} for row in rows]


def test_the_same_job_into_a_fresh_dir_sends_nothing(
    tmp_path: Path, shared_api: FakeServer
) -> None:
    """1 000 rows (100 bodies, --dedupe): the second run into a new dir is all cache hits."""
    src = write_jsonl(tmp_path / "in.jsonl", _rows(1000, 100))
    cache = tmp_path / "cache"
    _run(src, tmp_path / "first", shared_api, "--dedupe", "--cache", str(cache))
    assert len(shared_api.log()) == 100
    shared_api.reset()
    _run(src, tmp_path / "second", shared_api, "--dedupe", "--cache", str(cache))
    assert shared_api.log() == []  # 0 generation requests
    runs = json.loads((tmp_path / "second" / "run.json").read_text())["invocations"]
    counted = runs[-1]["this_invocation"]
    assert (counted["requests"], counted["reused"], counted["output_tokens"]) == (0, 1000, 0)
    first, second = _table(tmp_path / "first"), _table(tmp_path / "second")
    assert len(second) == 1000 and all(r["status"] == "succeeded" for r in second)
    assert second == first
    lines = [json.loads(x) for x in (tmp_path / "second" / "calls.log").read_text().splitlines()]
    assert len(lines) == 100 and all(line["cache"] == "hit" for line in lines)
    ids = {r["id"]: r["response_id"] for r in first}
    assert all(line["response_id"] == ids[line["row_id"]] for line in lines)


def test_without_the_cache_flag_nothing_is_reused(tmp_path: Path, shared_api: FakeServer) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", _rows(20, 20))
    _run(src, tmp_path / "a", shared_api, "--cache", str(tmp_path / "c"))
    _run(src, tmp_path / "b", shared_api)
    assert len(shared_api.log()) == 40


@pytest.mark.parametrize(
    ("first", "second", "sent_again"),
    [
        (("--cache-mode", "read"), (), 20),  # read only: the first run stored nothing
        ((), ("--cache-mode", "write"), 20),  # write only: the second run looked nothing up
        ((), ("--cache-ttl", "0.000001"), 20),  # every stored answer is too old
        ((), ("--cache-mode", "read", "--cache-ttl", "3600"), 0),
    ],
)
def test_cache_mode_and_ttl(
    tmp_path: Path,
    shared_api: FakeServer,
    first: tuple[str, ...],
    second: tuple[str, ...],
    sent_again: int,
) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", _rows(20, 20))
    cache = ("--cache", str(tmp_path / "c"))
    _run(src, tmp_path / "a", shared_api, *cache, *first)
    shared_api.reset()
    _run(src, tmp_path / "b", shared_api, *cache, *second)
    assert len(shared_api.log()) == sent_again


def test_errored_rows_are_not_cached(tmp_path: Path, shared_api: FakeServer) -> None:
    """A row the server refuses (a thinking budget under 1024) is asked again by the next run."""
    rows: list[dict[str, Any]] = [
        {"id": "ok", "prompt": "fine"},
        {"id": "bad", "prompt": "x", "thinking": {"type": "enabled", "budget_tokens": 10}},
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    cache = ("--cache", str(tmp_path / "c"))
    args = ["run", str(src), "--base-url", shared_api.base_url, "-q", *cache]
    assert run_cli([*args, "-o", str(tmp_path / "a")]).exit_code == 1
    shared_api.reset()
    assert run_cli([*args, "-o", str(tmp_path / "b")]).exit_code == 1
    assert [g["prompt"] for g in shared_api.log()] == ["x"]


def test_two_runs_sharing_one_cache_at_once_both_complete(
    tmp_path: Path, shared_api: FakeServer
) -> None:
    """Two processes read and write the same bodies in one cache file at the same time."""
    cache = tmp_path / "cache"
    procs = []
    for name in ("a", "b"):
        rows = [{"id": f"{name}{i}", "prompt": f"shared {i % 150}"} for i in range(300)]
        src = write_jsonl(tmp_path / f"{name}.jsonl", rows)
        extra = ("--cache", str(cache), "--concurrency", "16")
        procs.append(start_run(src, tmp_path / name, shared_api.base_url, *extra))
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert (cache / FILE_NAME).exists()
    both = len(shared_api.log())
    assert 150 <= both <= 600  # each body sent at least once, hits in between
    shared_api.reset()
    for name in ("a", "b"):  # every body was stored, and is read back
        src = tmp_path / f"{name}.jsonl"
        _run(src, tmp_path / f"{name}2", shared_api, "--cache", str(cache))
    assert len(shared_api.log()) == 0
    # A body both runs sent is stored once, with the answer stored last: one of the two.
    paid = {r["response_id"] for name in ("a", "b") for r in _table(tmp_path / name)}
    assert {r["response_id"] for r in _table(tmp_path / "a2")} <= paid


def test_the_python_api_takes_the_cache_and_dedupe(tmp_path: Path, shared_api: FakeServer) -> None:
    """`run(..., dedupe=True, cache=str)` as the flags; `cache_mode`, `cache_ttl` too."""
    rows = _rows(30, 10)
    opts: dict[str, Any] = {"base_url": shared_api.base_url, "cache": str(tmp_path / "c")}
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CAICAINI_API_KEY", TEST_KEY)
        first = batchrunner.run(rows, output=tmp_path / "a", dedupe=True, **opts)
        assert (first.succeeded, len(shared_api.log())) == (30, 10)
        second = batchrunner.run(rows, output=tmp_path / "b", cache_ttl=3600.0, **opts)
        assert (second.succeeded, len(shared_api.log())) == (30, 10)  # all 30 were hits
        third = batchrunner.run(rows, output=tmp_path / "c2", cache_mode="write", **opts)
    assert (third.succeeded, len(shared_api.log())) == (30, 40)  # looked nothing up
    run_json = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run_json["job"]["cache"] == str((tmp_path / "c").absolute())
    assert run_json["job"]["dedupe"] is True


def test_a_stored_answer_reads_back_whole() -> None:
    """What the cache and dedupe.jsonl keep (tool calls, parsed, usage) comes back as was."""
    result = Result(
        index=7,
        id="r7",
        status="succeeded",
        response_id="msg_1",
        request_id="req_1",
        text="hi \ud83d",  # a lone surrogate, as a stream cut mid-emoji leaves
        input_tokens=3,
        output_tokens=4,
        attempts=2,
        latency_ms=12.5,
        http_status=200,
        response="{}",
        completed_at_us=1,
        extra={"topic": "x"},
        tool_calls=({"id": "t1", "name": "f", "arguments": '{"a":1}'},),
        parsed='{"a":1}',
    )
    back = stored_answer(json.loads(json.dumps(answer_fields(result))))
    row = Row(index=9, id="r9", body={}, extra={"topic": "y"})
    mine = reused_answer(back, row)
    assert (mine.index, mine.id, mine.extra, mine.latency_ms) == (9, "r9", {"topic": "y"}, 0.0)
    assert mine.completed_at_us > 1
    assert (
        replace(mine, index=7, id="r7", extra={"topic": "x"}, latency_ms=12.5, completed_at_us=1)
        == result
    )
    with pytest.raises((ValueError, TypeError)):
        stored_answer({"status": "errored"})
    with pytest.raises((ValueError, TypeError)):
        stored_answer({"status": "succeeded", "no_such_field": 1})


def test_a_cache_that_cannot_be_opened_sends_nothing(
    tmp_path: Path, shared_api: FakeServer
) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", _rows(5, 5))
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    args = ["run", str(src), "-o", str(tmp_path / "a"), "--base-url", shared_api.base_url]
    res = run_cli([*args, "-q", "--cache", str(blocker)])
    assert res.exit_code == 2
    assert "cannot open the cache" in res.stderr
    assert shared_api.log() == []
