"""Acceptance: every input shape and job file runs unchanged end to end against the fake API.

Each test drives the real CLI in-process against a fake API subprocess on loopback and
checks results.parquet and the server's own log. Bad input must stop before any request.
"""

from __future__ import annotations

import gzip
import json
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrunner.config import load_job
from batchrunner.fakeapi import answer_for
from batchrunner.fakeapi.answers import input_tokens
from tests.fakeserver import FakeServer
from tests.helpers import TEST_KEY, file_with_line_7, read_results, run_cli, write_jsonl

if TYPE_CHECKING:
    from pathlib import Path

ROWS = 120
_FINISH = {
    "chat": {"end": "stop", "max": "length"},
    "messages": {"end": "end_turn", "max": "max_tokens"},
}


def _shuffled_id(i: int, prefix: str) -> str:
    """Ids whose input order is not their sorted order, so order checks can fail."""
    return f"{prefix}-{(i * 37) % ROWS:03d}"


def _openai_line(i: int) -> dict[str, Any]:
    # A system text whose length varies per line: a dropped or replaced one changes tokens.
    system = f"You are assistant number {i}. " + "Be brief. " * (i % 7 + 3)
    return {
        "custom_id": _shuffled_id(i, "oa"),
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "caicaini/small",
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": f"OpenAI batch question {i}?"},
            ],
            "max_tokens": 4 if i % 3 == 0 else 512,
        },
    }


def test_openai_batch_lines_run_unchanged(tmp_path: Path, shared_api: FakeServer) -> None:
    """OpenAI Batch API lines run as they are: own answer per custom_id, body sent intact."""
    lines = [_openai_line(i) for i in range(ROWS)]
    src = write_jsonl(tmp_path / "batch.jsonl", lines)
    out = tmp_path / "run"
    res = run_cli(["run", str(src), "-o", str(out), "--base-url", shared_api.base_url, "-q"])
    assert res.exit_code == 0, res.stderr
    log = shared_api.log()
    results = read_results(out)
    assert [r["id"] for r in results] == [line["custom_id"] for line in lines]
    for line, got in zip(lines, results, strict=True):
        body = line["body"]
        prompt = body["messages"][-1]["content"]
        text, kind = answer_for(prompt, max_tokens=body["max_tokens"])
        assert got["status"] == "succeeded", got
        assert got["text"] == text
        assert got["stop_reason"] == _FINISH["chat"][kind]
        assert got["model"] == body["model"]
        # The fake counts system + message characters: the system message arrived as written.
        assert got["input_tokens"] == input_tokens(body), line["custom_id"]
    assert any(r["stop_reason"] == "length" for r in results)
    assert len(log) == ROWS
    assert {e["path"] for e in log} == {"/v1/chat/completions"}
    assert sorted(e["prompt"] for e in log) == sorted(
        line["body"]["messages"][-1]["content"] for line in lines
    )
    issued = {e["prompt"]: e["response_id"] for e in log}
    for line, got in zip(lines, results, strict=True):
        assert got["response_id"] == issued[line["body"]["messages"][-1]["content"]]


def test_anthropic_batch_requests_gzipped_run_unchanged(
    tmp_path: Path, shared_api: FakeServer
) -> None:
    """Gzipped Anthropic Message Batches requests with block content go to /v1/messages."""
    requests: list[dict[str, Any]] = []
    for i in range(ROWS):
        blocks = [
            {"type": "text", "text": f"Anthropic part one {i}. "},
            {"type": "text", "text": f"Part two {i * 7}?"},
        ]
        params: dict[str, Any] = {
            "model": "caicaini/large",
            "max_tokens": 300,
            "messages": [{"role": "user", "content": blocks}],
        }
        requests.append({"custom_id": _shuffled_id(i, "an"), "params": params})
    src = tmp_path / "requests.jsonl.gz"
    with gzip.open(src, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in requests)
    out = tmp_path / "run"
    res = run_cli(["run", str(src), "-o", str(out), "--base-url", shared_api.base_url, "-q"])
    assert res.exit_code == 0, res.stderr
    log = shared_api.log()
    results = read_results(out)
    assert [r["id"] for r in results] == [r["custom_id"] for r in requests]
    prompts = []
    for request, got in zip(requests, results, strict=True):
        prompt = "".join(b["text"] for b in request["params"]["messages"][0]["content"])
        prompts.append(prompt)
        assert got["status"] == "succeeded", got
        assert got["text"] == answer_for(prompt, max_tokens=300)[0]
        assert got["model"] == "caicaini/large"
        assert got["input_tokens"] == input_tokens(request["params"])
    assert len(log) == ROWS
    assert {e["path"] for e in log} == {"/v1/messages"}
    assert sorted(e["prompt"] for e in log) == sorted(prompts)


def test_parquet_nested_messages_carry_expected(tmp_path: Path, shared_api: FakeServer) -> None:
    """Parquet `messages` as list<struct<role, content>> runs with --api chat; `expected` kept."""
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    schema = pa.schema(
        [("id", pa.string()), ("messages", pa.list_(message)), ("expected", pa.string())]
    )
    rows: list[dict[str, Any]] = [
        {
            "id": f"pq{i}",
            "messages": [
                {"role": "user", "content": f"first turn {i}"},
                {"role": "assistant", "content": f"reply {i}"},
                {"role": "user", "content": f"parquet follow-up {i}?"},
            ],
            "expected": f"want-{i}",
        }
        for i in range(40)
    ]
    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), src)
    assert pq.read_schema(src).field("messages").type == pa.list_(message)
    out = tmp_path / "run"
    res = run_cli(
        ["run", str(src), "-o", str(out), "--api", "chat", "--base-url", shared_api.base_url, "-q"]
    )
    assert res.exit_code == 0, res.stderr
    table = pq.read_table(out / "results.parquet")
    assert table.schema.field("expected").type == pa.string()
    results = table.to_pylist()
    assert [r["id"] for r in results] == [r["id"] for r in rows]
    for row, got in zip(rows, results, strict=True):
        assert got["expected"] == row["expected"]
        assert got["text"] == answer_for(row["messages"][-1]["content"], max_tokens=1024)[0]
        # All three turns were sent: the fake's token count covers every message.
        assert got["input_tokens"] == input_tokens({"messages": row["messages"]})
    assert {e["path"] for e in shared_api.log()} == {"/v1/chat/completions"}


_SYSTEM = "Answer in exactly one word, please."
_QUESTIONS = [f"What is {i} squared" for i in range(9)]


def _job_project(tmp_path: Path, *, extra_job: str = "", extra_request: str = "") -> Path:
    """A job file under tmp_path/proj/jobs with its data beside it; returns the file."""
    jobs = tmp_path / "proj" / "jobs"
    (jobs / "data").mkdir(parents=True)
    rows = [
        {"id": f"q{i}", "question": q, "expected": str(i * i)} for i, q in enumerate(_QUESTIONS)
    ]
    write_jsonl(jobs / "data" / "questions.jsonl", rows)
    job = jobs / "nightly.toml"
    job.write_text(
        f"""
[job]
input = "data/questions.jsonl"
output = "../runs/nightly"
api = "messages"
{extra_job}
[request]
model = "caicaini/small"
max_tokens = 64
system = "{_SYSTEM}"
template = "Question: {{question}}"
{extra_request}
[limits]
concurrency = 3
max_attempts = 2
""",
        encoding="utf-8",
    )
    return job


def test_job_file_alone_runs_with_paths_relative_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run --job FILE --base-url URL`: input and output resolve beside the file, sections apply."""
    job = _job_project(tmp_path)
    elsewhere = tmp_path / "elsewhere" / "cwd"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    spec = load_job(job, input_path=None, output=None, overrides={})
    assert (spec.limits.concurrency, spec.limits.max_attempts) == (3, 2)
    # A little latency so that three requests really overlap and concurrency can be seen.
    with FakeServer("--latency", "0.1", api_key=TEST_KEY) as server:
        res = run_cli(["run", "--job", str(job), "--base-url", server.base_url, "-q"])
        stats = server.stats()
        log = server.log()
    assert res.exit_code == 0, res.stderr
    out = tmp_path / "proj" / "runs" / "nightly"
    assert (out / "results.parquet").is_file()
    assert not (tmp_path / "elsewhere" / "runs").exists()
    results = read_results(out)
    assert [r["id"] for r in results] == [f"q{i}" for i in range(len(_QUESTIONS))]
    for i, (question, got) in enumerate(zip(_QUESTIONS, results, strict=True)):
        prompt = f"Question: {question}"
        assert got["text"] == answer_for(prompt, max_tokens=64)[0]
        assert got["model"] == "caicaini/small"
        assert got["expected"] == str(i * i)
        sent = {"system": _SYSTEM, "messages": [{"role": "user", "content": prompt}]}
        assert got["input_tokens"] == input_tokens(sent)
    assert sorted(e["prompt"] for e in log) == sorted(f"Question: {q}" for q in _QUESTIONS)
    assert stats["max_in_flight"] == 3


def test_job_file_base_url_and_flag_override(tmp_path: Path, shared_api: FakeServer) -> None:
    """[job] base_url is used when no flag gives one, and --max-tokens beats the file's value."""
    job = _job_project(tmp_path, extra_job=f'base_url = "{shared_api.base_url}"')
    out = tmp_path / "override"
    res = run_cli(["run", "--job", str(job), "-o", str(out), "--max-tokens", "2", "-q"])
    assert res.exit_code == 0, res.stderr
    assert len(shared_api.log()) == len(_QUESTIONS)
    for question, got in zip(_QUESTIONS, read_results(out), strict=True):
        assert got["text"] == answer_for(f"Question: {question}", max_tokens=2)[0]
        assert got["stop_reason"] == "max_tokens"
        assert got["output_tokens"] == 2
    assert not (tmp_path / "proj" / "runs").exists()


def test_unknown_job_key_exits_2_naming_it(tmp_path: Path, shared_api: FakeServer) -> None:
    """A misspelt key in the job file stops the run with exit 2 and names the key."""
    job = _job_project(tmp_path, extra_request="max_token = 5")
    res = run_cli(["run", "--job", str(job), "--base-url", shared_api.base_url, "-q"])
    assert res.exit_code == 2
    assert "max_token" in res.stderr and "[request]" in res.stderr
    assert "Traceback" not in res.stderr
    assert shared_api.stats()["requests_total"] == 0


_BAD_LINE_7 = {
    "broken-json": ('{"id": "r6", "prompt": "unterminated', "invalid JSON"),
    "no-prompt": (
        '{"id": "r6", "question": "where is the prompt?"}',
        "neither prompt nor messages",
    ),
    "duplicate-id": ('{"id": "r2", "prompt": "again"}', "duplicate id"),
    "number-prompt": ('{"id": "r6", "prompt": 42}', "prompt must be a string"),
}


@pytest.mark.parametrize("case", sorted(_BAD_LINE_7))
def test_bad_line_7_stops_run_and_validate_before_any_request(
    tmp_path: Path, shared_api: FakeServer, case: str
) -> None:
    """A bad line 7 of 21: run and validate exit 2 naming in.jsonl:7; the server sees nothing."""
    line, reason = _BAD_LINE_7[case]
    src = file_with_line_7(tmp_path, line)
    out = tmp_path / "run"
    res = run_cli(["run", str(src), "-o", str(out), "--base-url", shared_api.base_url, "-q"])
    checked = run_cli(["validate", str(src)])
    for result in (res, checked):
        assert result.exit_code == 2, result.stderr
        assert "in.jsonl:7" in result.stderr
        assert reason in result.stderr
        assert "Traceback" not in result.stderr
    assert shared_api.stats()["requests_total"] == 0
    assert not (out / "results.parquet").exists()


def test_validate_accepts_a_valid_file_and_counts_rows(tmp_path: Path) -> None:
    """`validate` on 21 good lines exits 0 and prints the row count."""
    src = file_with_line_7(tmp_path, json.dumps({"id": "r6", "prompt": "fine"}))
    res = run_cli(["validate", str(src)])
    assert res.exit_code == 0, res.stderr
    assert "21 rows" in res.stdout


def test_check_key_accepted_refused_or_missing(shared_api: FakeServer) -> None:
    """`check`: 0 with the right key, 3 naming the key with a wrong one, 2 with none."""
    args = ["check", "--base-url", shared_api.base_url]
    ok = run_cli(args)
    assert ok.exit_code == 0, ok.stderr
    assert shared_api.base_url in ok.stdout
    wrong_key = "sk-wrong-key-4242"
    wrong = run_cli(args, key=wrong_key)
    assert wrong.exit_code == 3
    assert "key" in wrong.stderr.lower()
    before = shared_api.stats()["requests_total"]
    missing = run_cli(args, key=None)
    assert missing.exit_code == 2
    assert "CAICAINI_API_KEY" in missing.stderr
    assert shared_api.stats()["requests_total"] == before
    assert before == 2  # one GET /models each for the right and the wrong key
    assert shared_api.log() == []  # check never sends a generation
    for result in (ok, wrong, missing):
        assert "Traceback" not in result.stderr
        assert TEST_KEY not in result.stdout + result.stderr
        assert wrong_key not in result.stdout + result.stderr


_CALL = {"id": "call_7", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
_TOOL_TURNS: dict[str, dict[str, Any]] = {
    # OpenAI's own shape for a tool-calling turn, then the tool's answer.
    "openai": {
        "url": "/v1/chat/completions",
        "key": "body",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [_CALL]},
            {"role": "tool", "tool_call_id": "call_7", "content": "18 C and sunny"},
            {"role": "user", "content": "And in words?"},
        ],
    },
    # Anthropic's: a tool_use block, then a tool_result block in the next user turn.
    "anthropic": {
        "url": None,
        "key": "params",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_7", "name": "weather", "input": {}}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_7", "content": "18 C"},
                    {"type": "text", "text": "And in words?"},
                ],
            },
        ],
    },
}


@pytest.mark.parametrize("kind", sorted(_TOOL_TURNS))
def test_batch_lines_with_tool_turns_validate_and_run(
    tmp_path: Path, shared_api: FakeServer, kind: str
) -> None:
    """Acceptance (issue 10): tool-calling turns (OpenAI `content: null` + `tool_calls`, then
    a `tool` turn; Anthropic tool_use / tool_result blocks) validate and run, sent intact."""
    case = _TOOL_TURNS[kind]
    lines = []
    for i in range(3):
        body = {"model": "caicaini/small", "max_tokens": 64, "messages": case["messages"]}
        line: dict[str, Any] = {"custom_id": f"t-{i}", case["key"]: body}
        if case["url"]:
            line |= {"method": "POST", "url": case["url"]}
        lines.append(line)
    src = write_jsonl(tmp_path / "tools.jsonl", lines)
    checked = run_cli(["validate", str(src)])
    assert checked.exit_code == 0, checked.stderr
    assert "3 rows" in checked.stdout
    out = tmp_path / "run"
    res = run_cli(["run", str(src), "-o", str(out), "--base-url", shared_api.base_url, "-q"])
    assert res.exit_code == 0, res.stderr
    results = read_results(out)
    assert [r["id"] for r in results] == ["t-0", "t-1", "t-2"]
    for line, got in zip(lines, results, strict=True):
        assert got["status"] == "succeeded", got
        assert got["text"] == answer_for("And in words?", max_tokens=64)[0]
        # The fake counts every message's text, tool calls and results: all arrived.
        assert got["input_tokens"] == input_tokens(line[case["key"]])
    assert len(shared_api.log()) == 3
