"""End to end: `batchrunner run` against the fake API on a real loopback socket."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrunner.fakeapi import answer_for
from batchrunner.rundir.parts import OUTPUT_SCHEMA
from tests.fakeserver import FakeServer
from tests.helpers import TEST_KEY, read_results, run_cli, write_jsonl

if TYPE_CHECKING:
    from pathlib import Path

ALL_FAULTS = "429,429-ms,429-date,500,502,503,504,529,reset,truncate,badjson"


def test_faults_of_every_kind_are_recovered_and_bad_rows_fail_once(tmp_path: Path) -> None:
    """35% faults of every kind: good rows succeed, 400s are tried once, Retry-After holds."""
    rows: list[dict[str, object]] = [
        {"id": f"g{i}", "prompt": f"good question {i}"} for i in range(400)
    ]
    for k in range(5):  # temperature 7 is out of range: the server answers 400
        rows.insert(80 * k + 3, {"id": f"bad{k}", "prompt": f"bad question {k}", "temperature": 7})
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "run"
    args = ["--fault-rate", "0.35", "--faults", ALL_FAULTS, "--fault-retry-after", "0.1"]
    with FakeServer(*args, api_key=TEST_KEY) as server:
        res = run_cli(
            [
                "run",
                str(src),
                "-o",
                str(out),
                "--base-url",
                server.base_url,
                "--max-attempts",
                "5",
                "--concurrency",
                "32",
                "--no-progress",
            ]
        )
        log = server.log()
    assert res.exit_code == 1, res.stderr
    results = read_results(out)
    assert [r["id"] for r in results] == [r["id"] for r in rows]
    by_id = {r["id"]: r for r in results}
    for row in rows:
        got = by_id[row["id"]]
        if str(row["id"]).startswith("bad"):
            assert got["status"] == "errored"
            assert (got["attempts"], got["http_status"]) == (1, 400)
            assert got["error_type"] == "invalid_request_error"
            assert got["response_id"] is None and got["error_message"]
        else:
            assert got["status"] == "succeeded", got
            assert got["text"] == answer_for(str(row["prompt"]), max_tokens=1024)[0]
    kinds = {e["fault"] for e in log if e["fault"]}
    assert kinds >= set(ALL_FAULTS.split(",")), kinds
    by_prompt: dict[str, list[dict[str, object]]] = defaultdict(list)
    for entry in log:
        by_prompt[str(entry["prompt"])].append(entry)
    gaps = []
    for entries in by_prompt.values():
        entries.sort(key=lambda e: float(str(e["t"])))
        for before, after in itertools.pairwise(entries):
            if before["retry_after"] is not None:
                gap = float(str(after["t"])) - float(str(before["t"]))
                gaps.append(gap)
                assert gap >= float(str(before["retry_after"])), (before, after)
    assert gaps, "no Retry-After was exercised"
    attempts_logged = (out / "calls.log").read_text().splitlines()
    assert len(attempts_logged) == sum(int(str(r["attempts"])) for r in results)


@pytest.mark.parametrize("api", ["messages", "chat"])
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_every_row_gets_its_own_answer_and_response_id(
    tmp_path: Path, fake_api: FakeServer, api: str, fmt: str
) -> None:
    """Both conventions, JSONL and Parquet: each row's own answer and the id the server issued."""
    rows = [{"id": f"r{i}", "prompt": f"prompt number {i}", "expected": f"x{i}"} for i in range(60)]
    if fmt == "jsonl":
        src = write_jsonl(tmp_path / "in.jsonl", rows)
    else:
        src = tmp_path / "in.parquet"
        pq.write_table(pa.Table.from_pylist(rows), src)
    out = tmp_path / "run"
    res = run_cli(
        [
            "run",
            str(src),
            "-o",
            str(out),
            "--api",
            api,
            "--base-url",
            fake_api.base_url,
            "--concurrency",
            "8",
            "-q",
        ]
    )
    assert res.exit_code == 0, res.stderr
    issued = {e["prompt"]: e["response_id"] for e in fake_api.log() if e["status"] == 200}
    table = pq.read_table(out / "results.parquet")
    assert table.schema.names[: len(OUTPUT_SCHEMA)] == OUTPUT_SCHEMA.names
    for name in OUTPUT_SCHEMA.names:
        assert table.schema.field(name).type == OUTPUT_SCHEMA.field(name).type
    assert table.schema.field("expected").type == pa.string()
    results = table.to_pylist()
    assert [r["id"] for r in results] == [r["id"] for r in rows]
    for row, got in zip(rows, results, strict=True):
        assert got["text"] == answer_for(row["prompt"], max_tokens=1024)[0]
        assert got["response_id"] == issued[row["prompt"]]
        assert got["expected"] == row["expected"]
        assert got["status"] == "succeeded" and got["attempts"] == 1
        assert got["input_tokens"] and got["output_tokens"]
        assert json.loads(str(got["response"]))["id"] == got["response_id"]
        assert got["request_id"]
    calls = [json.loads(line) for line in (out / "calls.log").read_text().splitlines()]
    assert {c["response_id"] for c in calls} == {r["response_id"] for r in results}


def test_server_never_sees_more_than_concurrency_in_flight(tmp_path: Path) -> None:
    """--concurrency N means exactly N requests in flight at the most, and it is reached."""
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"p{i}"} for i in range(48)])
    with FakeServer(*["--latency", "0.2"], api_key=TEST_KEY) as server:
        res = run_cli(
            [
                "run",
                str(src),
                "-o",
                str(tmp_path / "run"),
                "--base-url",
                server.base_url,
                "--concurrency",
                "6",
                "-q",
            ]
        )
        stats = server.stats()
    assert res.exit_code == 0, res.stderr
    assert stats["max_in_flight"] == 6


def test_the_key_is_in_no_file_and_no_output(tmp_path: Path) -> None:
    """The API key appears in no file of the run dir, nor in stdout/stderr, even with -v."""
    key = "sk-live-DO-NOT-LEAK-8f3a9c"
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [{"id": "a", "prompt": "hi"}, {"id": "b", "prompt": "x", "temperature": 9}],
    )
    out = tmp_path / "run"
    with FakeServer(*["--fault-rate", "0.5"], api_key=key) as server:
        res = run_cli(
            ["run", str(src), "-o", str(out), "--base-url", server.base_url, "-v", "-q"], key=key
        )
        bad = run_cli(
            ["run", str(src), "-o", str(tmp_path / "run2"), "--base-url", server.base_url],
            key=key + "-wrong",
        )
    assert res.exit_code == 1 and bad.exit_code == 3
    assert "key" in bad.stderr.lower()
    for text in (res.stdout, res.stderr, bad.stdout, bad.stderr):
        assert key not in text
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "calls.log" for p in files)
    for path in files:
        assert key.encode() not in path.read_bytes(), path


def test_usage_errors_exit_2_and_send_nothing(tmp_path: Path, fake_api: FakeServer) -> None:
    """No key, unreadable input, a bad flag or a bad row: one line, exit 2, zero requests."""
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "hi"}])
    base = ["-o", str(tmp_path / "run"), "--base-url", fake_api.base_url]
    no_key = run_cli(["run", str(src), *base], key=None)
    assert no_key.exit_code == 2 and "CAICAINI_API_KEY" in no_key.stderr
    missing = run_cli(["run", str(tmp_path / "nope.jsonl"), *base])
    assert missing.exit_code == 2 and "nope.jsonl" in missing.stderr
    flag = run_cli(["run", str(src), *base, "--concurrency", "0"])
    assert flag.exit_code == 2
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "a", "prompt": "ok"}\n{"id": "b", "prompt": \n')
    bad_row = run_cli(["run", str(broken), *base])
    assert bad_row.exit_code == 2 and ":2" in bad_row.stderr
    for res in (no_key, missing, flag, bad_row):
        assert "Traceback" not in res.stderr
    assert fake_api.stats()["requests_total"] == 0


def test_status_command_reports_counts(tmp_path: Path, fake_api: FakeServer) -> None:
    """`status --json` reads the run dir alone and counts succeeded and errored rows."""
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [{"id": "a", "prompt": "one"}, {"id": "b", "prompt": "two", "temperature": 5}],
    )
    out = tmp_path / "run"
    res = run_cli(["run", str(src), "-o", str(out), "--base-url", fake_api.base_url, "-q"])
    assert res.exit_code == 1
    st = run_cli(["status", str(out), "--json"])
    assert st.exit_code == 0
    data = json.loads(st.stdout)
    assert (data["total"], data["succeeded"], data["errored"], data["pending"]) == (2, 1, 1, 0)
    assert data["complete"] is True


def test_warnings_of_the_run_are_printed_on_stderr(tmp_path: Path, shared_api: FakeServer) -> None:
    """A carried-through column whose values do not fit its type (an integer beyond int64)
    is written as JSON text, and the run says so on stderr; stdout keeps the summary."""
    rows = [{"id": "a", "prompt": "one", "n": 1}, {"id": "b", "prompt": "two", "n": 2**70}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "run"
    res = run_cli(["run", str(src), "-o", str(out), "--base-url", shared_api.base_url, "-q"])
    assert res.exit_code == 0, res.output
    warning = "warning: column 'n': some values do not fit type 'int64'; written as JSON text"
    assert warning in res.stderr and "warning:" not in res.stdout
    assert [r["n"] for r in read_results(out)] == ["1", str(2**70)]
