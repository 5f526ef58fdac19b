"""End to end with `--stream`: SSE runs against the fake API must record what plain runs do.

Acceptance tests of the streamed path as users meet it (CLI in-process, the fake API in a
subprocess on loopback, results read back from results.parquet and calls.log). They never
change product code and never sleep: waits come from the server's own latency only.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import pytest

from batchrunner.fakeapi import answer_for
from tests.fakeserver import FakeServer
from tests.helpers import TEST_KEY, read_results, run_cli, write_jsonl

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from click.testing import Result

Json = dict[str, Any]
COMPARED = ("text", "stop_reason", "input_tokens", "output_tokens")
STOP_MAX = {"messages": "max_tokens", "chat": "length"}
STOP_TOOL = {"messages": "tool_use", "chat": "tool_calls"}
# What the fake's stream-error event says its error is, per convention (fakeapi/streams.py).
STREAM_ERROR_TYPE = {"messages": "overloaded_error", "chat": "server_error"}
# The error type the fake's 529 body names, per convention (fakeapi/faults.py).
OVERLOADED_TYPE = {"messages": "overloaded_error", "chat": "server_error"}
CUT_ERROR_TYPES = frozenset({"connection_error", "invalid_response"})
WEATHER_SCHEMA: Json = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
}


def _run(src: Path, out: Path, server: FakeServer, api: str, *extra: str, stream: bool) -> Result:
    args = ["run", str(src), "-o", str(out), "--api", api, "--base-url", server.base_url]
    args += ["--stream" if stream else "--no-stream", "--no-progress", *extra]
    return run_cli(args)


def _calls(out: Path) -> list[Json]:
    return [json.loads(line) for line in (out / "calls.log").read_text().splitlines()]


def _plain_and_streamed(
    tmp_path: Path, server: FakeServer, api: str, rows: Sequence[Json]
) -> tuple[list[Json], list[Json]]:
    """Run `rows` plain, then streamed, against one server into two run directories."""
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    got = []
    for stream in (False, True):
        out = tmp_path / ("streamed" if stream else "plain")
        res = _run(src, out, server, api, "--concurrency", "8", stream=stream)
        assert res.exit_code == 0, res.stderr
        results = read_results(out)
        assert [r["id"] for r in results] == [r["id"] for r in rows]
        assert all(r["status"] == "succeeded" for r in results), results
        got.append(results)
    return got[0], got[1]


def _mixed_rows() -> list[Json]:
    """Short answers, several-hundred-character "[long]" answers, and rows cut by max_tokens."""
    rows: list[Json] = [{"id": f"s{i}", "prompt": f"short question {i}"} for i in range(12)]
    rows += [{"id": f"l{i}", "prompt": f"[long] essay number {i}"} for i in range(6)]
    rows += [
        {"id": f"m{i}", "prompt": f"[long] cut essay {i}", "max_tokens": 3 + i} for i in range(4)
    ]
    rows += [{"id": "m-short", "prompt": "tiny budget question", "max_tokens": 1}]
    return rows


@pytest.mark.parametrize("api", ["messages", "chat"])
def test_streamed_run_records_what_a_plain_run_records(
    tmp_path: Path, fake_api: FakeServer, api: str
) -> None:
    """Same prompts: streamed and plain runs give identical text, stop reason and usage."""
    rows = _mixed_rows()
    plain, streamed = _plain_and_streamed(tmp_path, fake_api, api, rows)
    for row, p, s in zip(rows, plain, streamed, strict=True):
        assert {k: s[k] for k in COMPARED} == {k: p[k] for k in COMPARED}, row["id"]
        text, kind = answer_for(row["prompt"], max_tokens=row.get("max_tokens", 1024))
        assert s["text"] == text
        assert (s["stop_reason"] == STOP_MAX[api]) == (kind == "max"), (row, s["stop_reason"])
        assert s["input_tokens"] and s["output_tokens"]
    long_texts = [s["text"] for row, s in zip(rows, streamed, strict=True) if row["id"][0] == "l"]
    assert min(len(t) for t in long_texts) > 500  # the streams really carried many deltas
    assert sum(s["stop_reason"] == STOP_MAX[api] for s in streamed) == 5
    modes = [entry["stream"] for entry in fake_api.log()]
    assert modes.count(False) == modes.count(True) == len(rows)


def _check_response_shape(api: str, body: Json, plain: Json) -> None:
    """`body` (assembled from a stream) has the shape of the non-streamed `plain` body."""
    if api == "messages":
        assert body["type"] == "message" and body["role"] == "assistant"
        assert [b["type"] for b in body["content"]] == ["text"]
        assert isinstance(body["usage"]["output_tokens"], int)
        # Every field of a Message travels in the stream, so nothing may differ but the id.
        assert {**body, "id": None} == {**plain, "id": None}
    else:
        assert body["object"] == "chat.completion"
        assert {"id", "created", "model", "choices", "usage"} <= set(body)
        message = body["choices"][0]["message"]
        assert message["role"] == "assistant"
        assert message["content"] == plain["choices"][0]["message"]["content"]
        assert body["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            assert body["usage"][key] == plain["usage"][key]
        assert body["model"] == plain["model"]


@pytest.mark.parametrize("api", ["messages", "chat"])
def test_streamed_response_id_is_the_announced_id(
    tmp_path: Path, fake_api: FakeServer, api: str
) -> None:
    """A streamed row keeps the id its stream announced, inside a non-streamed-shape body."""
    rows = _mixed_rows()
    plain, streamed = _plain_and_streamed(tmp_path, fake_api, api, rows)
    announced = {e["prompt"]: e["response_id"] for e in fake_api.log() if e["stream"]}
    assert len(announced) == len(rows)
    prefix = "msg_" if api == "messages" else "chatcmpl-"
    for row, p, s in zip(rows, plain, streamed, strict=True):
        body = json.loads(s["response"])
        assert s["response_id"] == announced[row["prompt"]] == body["id"]
        assert s["response_id"].startswith(prefix)
        _check_response_shape(api, body, json.loads(p["response"]))
    calls = _calls(tmp_path / "streamed")
    assert {c["row_id"]: c["response_id"] for c in calls} == {
        s["id"]: s["response_id"] for s in streamed
    }


def _check_faulted_attempts(
    api: str, rows: list[Json], results: list[Json], out: Path, log: list[Json]
) -> None:
    """calls.log, attempt by attempt, against the server log for the same prompt."""
    by_prompt: dict[str, list[Json]] = defaultdict(list)
    for entry in sorted(log, key=lambda e: float(e["t"])):
        by_prompt[entry["prompt"]].append(entry)
    by_row: dict[str, list[Json]] = defaultdict(list)
    for call in _calls(out):
        by_row[call["row_id"]].append(call)
    for row, got in zip(rows, results, strict=True):
        calls = sorted(by_row[row["id"]], key=lambda c: int(c["attempt"]))
        served = by_prompt[row["prompt"]]
        assert [c["attempt"] for c in calls] == list(range(1, got["attempts"] + 1)), row["id"]
        assert len(served) == len(calls), (row["id"], served, calls)
        for call, entry in zip(calls[:-1], served[:-1], strict=True):
            assert call["error_type"] is not None and call["response_id"] is None, call
            if entry["fault"] == "stream-error":
                assert call["error_type"] == STREAM_ERROR_TYPE[api], call
            elif entry["fault"] == "529":
                assert (call["http_status"], call["error_type"]) == (529, OVERLOADED_TYPE[api])
            else:
                assert entry["fault"] == "stream-cut", entry
                assert call["error_type"] in CUT_ERROR_TYPES, call
        last, final = calls[-1], served[-1]
        assert final["fault"] is None and final["status"] == 200, final
        assert last["error_type"] is None and last["response_id"] == got["response_id"]
        # The id of the stream that completed, not of a broken one before it.
        assert got["response_id"] == final["response_id"]


@pytest.mark.parametrize("api", ["messages", "chat"])
def test_broken_streams_are_retried_and_never_recorded_partially(tmp_path: Path, api: str) -> None:
    """30% error events and cut streams: every row succeeds with its whole answer."""
    rows = [{"id": f"r{i}", "prompt": f"faulty stream question {i}"} for i in range(200)]
    rows += [{"id": f"L{i}", "prompt": f"[long] faulty essay {i}"} for i in range(10)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "run"
    faults = ["--faults", "stream-error,stream-cut,529", "--fault-rate", "0.3"]
    with FakeServer(*faults, "--fault-retry-after", "0.05", api_key=TEST_KEY) as server:
        res = _run(src, out, server, api, "--max-attempts", "5", "--concurrency", "32", stream=True)
        log = server.log()
    assert res.exit_code == 0, res.stderr
    results = read_results(out)
    assert [r["id"] for r in results] == [r["id"] for r in rows]
    for row, got in zip(rows, results, strict=True):
        assert got["status"] == "succeeded", got
        assert got["text"] == answer_for(row["prompt"])[0], got["id"]
    assert all(entry["stream"] for entry in log)
    kinds = {entry["fault"] for entry in log}
    assert {"stream-error", "stream-cut", "529"} <= kinds, kinds
    assert sum(r["attempts"] for r in results) > len(rows) * 1.15
    _check_faulted_attempts(api, rows, results, out, log)


@pytest.mark.parametrize("api", ["messages", "chat"])
def test_status_errors_before_a_stream_starts_are_retried(tmp_path: Path, api: str) -> None:
    """529 answers to streamed requests: retried after Retry-After, logged, then answered."""
    rows = [{"id": f"r{i}", "prompt": f"overloaded question {i}"} for i in range(60)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "run"
    faults = ["--faults", "529", "--fault-rate", "0.3", "--fault-retry-after", "0.05"]
    with FakeServer(*faults, api_key=TEST_KEY) as server:
        res = _run(src, out, server, api, "--max-attempts", "5", "--concurrency", "16", stream=True)
        log = server.log()
    assert res.exit_code == 0, res.stderr
    results = read_results(out)
    for row, got in zip(rows, results, strict=True):
        assert got["status"] == "succeeded" and got["http_status"] == 200, got
        assert got["text"] == answer_for(row["prompt"])[0]
    faulted = [e for e in log if e["fault"] == "529"]
    assert faulted and all(e["stream"] and e["status"] == 529 for e in faulted)
    calls = _calls(out)
    failed = [c for c in calls if c["error_type"] is not None]
    assert len(failed) == len(faulted)
    assert {(c["http_status"], c["error_type"]) for c in failed} == {(529, OVERLOADED_TYPE[api])}
    assert all(c["retry_after"] is not None and c["retry_after"] >= 0.05 for c in failed)
    attempts: dict[str, int] = defaultdict(int)
    for call in calls:
        attempts[call["row_id"]] += 1
    assert {r["id"]: r["attempts"] for r in results} == dict(attempts)


def _tool(api: str) -> Json:
    if api == "messages":
        return {"name": "get_weather", "description": "Weather", "input_schema": WEATHER_SCHEMA}
    return {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER_SCHEMA},
    }


def _special_rows(api: str) -> list[Json]:
    rows: list[Json] = [
        {"id": f"t{i}", "prompt": f"[tool] weather in town {i}", "tools": [_tool(api)]}
        for i in range(4)
    ]
    # Offered a tool but not asked for it: a plain text answer.
    rows.append({"id": "t-none", "prompt": "no tool needed", "tools": [_tool(api)]})
    if api == "messages":
        thinking = {"type": "enabled", "budget_tokens": 1024}
        rows += [
            {"id": f"k{i}", "prompt": f"think about {i}", "thinking": thinking, "max_tokens": 2048}
            for i in range(4)
        ]
        rows.append(
            {
                "id": "k-tool",
                "prompt": "[tool] think, then call",
                "thinking": thinking,
                "max_tokens": 2048,
                "tools": [_tool(api)],
            }
        )
    return rows


def _blocks(body: Json, kind: str) -> list[Json]:
    return [b for b in body["content"] if b["type"] == kind]


@pytest.mark.parametrize("api", ["messages", "chat"])
def test_thinking_and_tool_use_survive_streaming(
    tmp_path: Path, fake_api: FakeServer, api: str
) -> None:
    """Thinking blocks and tool calls streamed are assembled as the plain response has them."""
    rows = _special_rows(api)
    plain, streamed = _plain_and_streamed(tmp_path, fake_api, api, rows)
    for row, p, s in zip(rows, plain, streamed, strict=True):
        assert {k: s[k] for k in COMPARED} == {k: p[k] for k in COMPARED}, row["id"]
        body, plain_body = json.loads(s["response"]), json.loads(p["response"])
        calls_tool = "[tool]" in row["prompt"]
        assert (s["stop_reason"] == STOP_TOOL[api]) == calls_tool, (row["id"], s["stop_reason"])
        if api == "messages":
            thinks = _blocks(body, "thinking")
            assert thinks == _blocks(plain_body, "thinking")
            assert len(thinks) == ("thinking" in row)
            for block in thinks:
                assert block["thinking"] and block["signature"], block
                assert block["thinking"] not in s["text"]
            uses = _blocks(body, "tool_use")
            assert uses == _blocks(plain_body, "tool_use")
            assert len(uses) == calls_tool
            for use in uses:
                assert use["name"] == "get_weather" and use["id"].startswith("toolu_")
                assert isinstance(use["input"], dict) and set(use["input"]) == {"city", "days"}
                assert isinstance(use["input"]["days"], int)
        else:
            message = body["choices"][0]["message"]
            plain_message = plain_body["choices"][0]["message"]
            assert message.get("tool_calls") == plain_message.get("tool_calls")
            assert len(message.get("tool_calls") or []) == calls_tool
            for call in message.get("tool_calls") or []:
                assert call["type"] == "function" and call["id"].startswith("call_")
                assert call["function"]["name"] == "get_weather"
                arguments = call["function"]["arguments"]
                assert isinstance(arguments, str)
                assert set(json.loads(arguments)) == {"city", "days"}
            if calls_tool:
                assert message["content"] is None and s["text"] == ""


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_attempts_that_outlast_the_timeout_fail_as_timeouts(tmp_path: Path, stream: bool) -> None:
    """--timeout 0.5 against 2 s of latency: rows error as "timeout" after --max-attempts."""
    rows = [{"id": f"r{i}", "prompt": f"slow question {i}"} for i in range(3)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "run"
    with FakeServer("--latency", "2", api_key=TEST_KEY) as server:
        extra = ("--timeout", "0.5", "--max-attempts", "2", "--concurrency", "4")
        res = _run(src, out, server, "messages", *extra, stream=stream)
        log = server.log()
    assert res.exit_code == 1, res.stderr
    for got in read_results(out):
        assert got["status"] == "errored", got
        assert (got["error_type"], got["attempts"]) == ("timeout", 2)
        assert got["response_id"] is None and got["text"] is None and got["error_message"]
    calls = _calls(out)
    assert len(calls) == 2 * len(rows)
    assert all(c["error_type"] == "timeout" and c["http_status"] is None for c in calls)
    assert len(log) == 2 * len(rows) and all(e["stream"] == stream for e in log)
