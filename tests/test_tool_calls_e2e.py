"""The `tool_calls` column end to end, and run directories from before it existed.

The CLI in-process against the fake API on loopback. A "[tool]" prompt offered a tool gets
a tool call from the fake on both conventions, plain and streamed. A run directory whose
parts and journal lines lack the newer columns (`tool_calls`, `parsed`) must still be read,
resumed and assembled, with those columns null for its rows.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
import pytest

from batchrunner.rundir.files import list_parts, segment_path
from batchrunner.rundir.parts import OUTPUT_SCHEMA
from tests.helpers import journal_lines, make_result, run_cli, status_json, write_jsonl

if TYPE_CHECKING:
    from pathlib import Path

    from click.testing import Result

    from tests.fakeserver import FakeServer

WEATHER: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
}
ID_PREFIX = {"messages": "toolu_", "chat": "call_"}


def _tool(api: str) -> dict[str, Any]:
    if api == "messages":
        return {"name": "get_weather", "input_schema": WEATHER}
    return {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}


def _run(src: Path, out: Path, server: FakeServer, *extra: str) -> Result:
    args = ["run", str(src), "-o", str(out), "--base-url", server.base_url, "--no-progress"]
    return run_cli([*args, *extra])


def _body_calls(api: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool calls as the response body has them: (id, name, decoded arguments)."""
    if api == "messages":
        uses = [b for b in body["content"] if b["type"] == "tool_use"]
        return [{"id": b["id"], "name": b["name"], "arguments": b["input"]} for b in uses]
    calls = body["choices"][0]["message"].get("tool_calls") or []
    return [
        {
            "id": c["id"],
            "name": c["function"]["name"],
            "arguments": json.loads(c["function"]["arguments"]),
        }
        for c in calls
    ]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", ["messages", "chat"])
def test_tool_use_answers_fill_the_tool_calls_column(
    tmp_path: Path, shared_api: FakeServer, api: str, stream: bool
) -> None:
    """A tool-use answer gives one {id, name, arguments} entry (arguments as JSON text,
    what the response holds); an answer without one gives an empty list."""
    rows: list[dict[str, Any]] = [
        {"id": f"t{i}", "prompt": f"[tool] weather in town {i}", "tools": [_tool(api)]}
        for i in range(3)
    ]
    rows.append({"id": "none", "prompt": "no tool needed", "tools": [_tool(api)]})
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    res = _run(src, out, shared_api, "--api", api, "--stream" if stream else "--no-stream")
    assert res.exit_code == 0, res.stderr
    table = pq.read_table(out / "results.parquet")
    assert table.schema.field("tool_calls").type == OUTPUT_SCHEMA.field("tool_calls").type
    for row, given in zip(table.to_pylist(), rows, strict=True):
        calls = row["tool_calls"]
        if given["id"] == "none":
            assert calls == [], row
            continue
        assert len(calls) == 1, row
        call = calls[0]
        assert call["name"] == "get_weather" and call["id"].startswith(ID_PREFIX[api])
        arguments = json.loads(call["arguments"])
        assert arguments["city"] == given["prompt"] and isinstance(arguments["days"], int)
        decoded = {**call, "arguments": arguments}
        assert _body_calls(api, json.loads(row["response"])) == [decoded]


def _downgrade(out: Path) -> None:
    """Rewrite the run dir as a version before `tool_calls` and `parsed` wrote it."""
    for _, part in list_parts(out / "parts"):
        table = pq.read_table(part).drop_columns(["tool_calls", "parsed"])
        pq.write_table(table, part, compression="zstd")
    results = pq.read_table(out / "results.parquet").drop_columns(["tool_calls"])
    pq.write_table(results, out / "results.parquet")


def test_a_run_dir_from_before_tool_calls_resumes_and_assembles(
    tmp_path: Path, shared_api: FakeServer
) -> None:
    """Old parts and an old journal line (no tool_calls, no parsed) are read by status
    and export, resumed without sending their rows again, and assembled with nulls."""
    rows = [
        {"id": f"r{i}", "prompt": f"[tool] town {i}", "tools": [_tool("chat")]} for i in range(8)
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    assert _run(src, out, shared_api, "--api", "chat", "--limit", "4").exit_code == 0
    _downgrade(out)
    # A crash left row 4's outcome in a journal segment written by the old version.
    old_line = journal_lines([make_result(4, id="r4", text="old", attempts=1)])
    assert b"tool_calls" not in old_line
    seq = max(n for n, _ in list_parts(out / "parts")) + 1
    segment_path(out / "journal", seq).write_bytes(old_line)
    status = status_json(out)  # rows 0..3: the --limit run's input size
    assert (status["succeeded"], status["pending"], status["warnings"]) == (4, 0, [])
    exported = run_cli(["export", str(out), "--format", "jsonl"])
    assert exported.exit_code == 0, exported.stderr
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [(r["id"], r["tool_calls"]) for r in lines] == [(f"r{i}", None) for i in range(4)]
    shared_api.reset()
    res = _run(src, out, shared_api, "--api", "chat")
    assert res.exit_code == 0, res.stderr
    assert shared_api.stats()["answers_total"] == 3  # rows 5..7 only
    results = pq.read_table(out / "results.parquet").to_pylist()
    assert [r["id"] for r in results] == [f"r{i}" for i in range(8)]
    assert [r["tool_calls"] for r in results[:5]] == [None] * 5
    assert results[4]["text"] == "old"
    for row in results[5:]:
        (call,) = row["tool_calls"]
        assert call["name"] == "get_weather" and json.loads(call["arguments"])["city"] == row[
            "id"
        ].replace("r", "[tool] town ")
