"""`plan`: rows, input tokens counted by the API (count_tokens), the output bound and the cost,
with no generation sent. Judged against the fake API's own counts: a real run afterwards
records the `usage.input_tokens` it reports, which the plan must match (exactly with
--exact, within its range from a sample)."""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING, Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from aiohttp import web

from batchrunner.errors import ResponseFormatError
from batchrunner.plan import _extrapolate, sample_indices
from batchrunner.protocols.counting import CountReader, count_request
from batchrunner.records import Request
from tests.fakeserver import FakeServer, serve_on_thread
from tests.helpers import TEST_KEY, run_cli, write_jsonl
from tests.hostile import hostile_api

if TYPE_CHECKING:
    from pathlib import Path

ROWS = 1000


def _varied_rows(n: int) -> list[dict[str, Any]]:
    """Prompts of 1 to 400 characters (a fixed seed): counts that differ row to row."""
    rng = random.Random(7)
    words = ["alpha", "beta", "gamma", "delta", "epsilon"]
    return [
        {"id": f"r{i}", "prompt": f"q{i} " + " ".join(rng.choices(words, k=rng.randint(0, 70)))}
        for i in range(n)
    ]


def _job(tmp_path: Path, *extra: str, rows: int = ROWS) -> Path:
    write_jsonl(tmp_path / "in.jsonl", _varied_rows(rows))
    job = tmp_path / "job.toml"
    job.write_text(
        '[job]\ninput = "in.jsonl"\noutput = "run"\n[request]\nmax_tokens = 50\n'
        "[pricing]\ninput_per_mtok = 3.0\noutput_per_mtok = 15.0\n" + "".join(extra),
        encoding="utf-8",
    )
    return job


def _plan(args: list[str], base_url: str) -> dict[str, Any]:
    res = run_cli(["plan", *args, "--base-url", base_url, "--json"])
    assert res.exit_code == 0, res.output
    assert TEST_KEY not in res.output
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def _recorded_input_tokens(out: Path) -> int:
    table = pq.read_table(out / "results.parquet", columns=["input_tokens"])
    total: int = pc.sum(table.column("input_tokens")).as_py()
    return total


@pytest.mark.parametrize(("api", "rows"), [("messages", ROWS), ("chat", 300)])
def test_plan_counts_without_generating_and_matches_what_the_run_records(
    tmp_path: Path, api: str, rows: int
) -> None:
    """On 1 000 rows (300 chat): `plan --exact` sends one count_tokens request a row and no
    generation; its count is the sum of `usage.input_tokens` the run then records (chat rows,
    with a system prompt, counted in the Messages shape, match too); a 100-row sample's range
    holds it; the run's cost falls in the cost range."""
    job = _job(tmp_path, rows=rows)
    flags = ["--job", str(job), "--api", api, "--system", "Answer in one word."]
    with FakeServer(api_key=TEST_KEY) as server:
        exact = _plan([*flags, "--exact"], server.base_url)
        stats, log = server.stats(), server.log()
        sampled = _plan([*flags, "--sample", "100"], server.base_url)
        default = _plan(flags, server.base_url)
        run = run_cli(["run", *flags, "--base-url", server.base_url, "-q"])
    assert run.exit_code == 0, run.output
    assert log == [] and stats["answers_total"] == 0  # no generation was sent
    assert stats["requests_total"] == rows
    truth = _recorded_input_tokens(tmp_path / "run")
    assert exact["exact"] and exact["counted_rows"] == rows == exact["rows"]
    assert exact["input_tokens"]["estimate"] == truth
    assert exact["converted_from_chat"] == (api == "chat")
    assert exact["output_tokens"] == {"max": 50 * rows}
    assert not sampled["exact"] and sampled["counted_rows"] == 100
    # The default sample (1 000 rows) counts a 1 000-row input whole: within 1% by design.
    assert abs(default["input_tokens"]["estimate"] - truth) <= 0.01 * truth
    tokens = sampled["input_tokens"]
    assert tokens["low"] <= truth <= tokens["high"], (tokens, truth)
    assert tokens["high"] - tokens["low"] < 0.25 * truth
    report = run_cli(["report", str(tmp_path / "run"), "--job", str(job), "--json"])
    spent = json.loads(report.stdout)["cost"]["usd"]
    assert exact["cost"]["low_usd"] <= spent <= exact["cost"]["high_usd"]


def test_plan_text_says_what_was_counted_and_the_cost(
    tmp_path: Path, shared_api: FakeServer
) -> None:
    """The text form gives rows, the estimate with its range, the output bound, the cost
    range and, for chat rows, that they were counted in the Messages shape."""
    job = _job(tmp_path)
    res = run_cli(
        [
            "plan",
            "--job",
            str(job),
            "--api",
            "chat",
            "--sample",
            "100",
            "--base-url",
            shared_api.base_url,
        ]
    )
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].endswith("in.jsonl: 1,000 rows (chat)")
    assert lines[1].startswith("input tokens   ~")
    assert lines[1].endswith(": count_tokens on 100 rows spread over the input")
    assert lines[2] == "output tokens  at most 50,000 (every row's max_tokens)"
    assert lines[3].startswith("cost           $") and "$3/$15 per million tokens" in lines[3]
    assert "counted in the Messages shape" in lines[4]


def test_a_refused_key_stops_plan_with_exit_3_quoting_the_server(
    tmp_path: Path, shared_api: FakeServer
) -> None:
    """A wrong key: exit 3 at the first answer, naming the variable and quoting the server."""
    job = _job(tmp_path)
    wrong = "sk-wrong-9876543210-OTHER"
    res = run_cli(["plan", "--job", str(job), "--base-url", shared_api.base_url], key=wrong)
    assert res.exit_code == 3, res.output
    assert "HTTP 401 authentication_error: invalid x-api-key" in res.stderr, res.stderr
    assert "check CAICAINI_API_KEY" in res.stderr
    assert wrong not in res.output and "Traceback" not in res.output
    assert shared_api.stats()["requests_total"] <= 32  # one wave at the most


def test_an_api_without_count_tokens_stops_plan_with_exit_3(tmp_path: Path) -> None:
    """A server with no count_tokens route (404): exit 3 saying it does not count tokens."""
    job = _job(tmp_path)
    with hostile_api() as server:
        res = run_cli(["plan", "--job", str(job), "--base-url", server.base_url])
    assert res.exit_code == 3, res.output
    assert "/messages/count_tokens was refused (HTTP 404" in res.stderr, res.stderr
    assert "does not count tokens" in res.stderr
    assert server.state.prompts == {}  # no generation


def test_a_row_the_api_will_not_count_is_left_out_with_exit_1(
    tmp_path: Path, shared_api: FakeServer
) -> None:
    """One row the API refuses (a 400 for its system blocks): the others are counted, the
    warning names the row and the server's message, exit 1."""
    rows: list[dict[str, Any]] = [{"id": f"r{i}", "prompt": f"question {i}"} for i in range(5)]
    rows[2]["system"] = [{"type": "text"}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    res = run_cli(["plan", str(src), "--base-url", shared_api.base_url, "--json"])
    assert res.exit_code == 1, res.output
    data = json.loads(res.stdout)
    assert (data["counted_rows"], data["failed_rows"]) == (4, 1)
    assert data["first_failure"] == (
        "row r2: HTTP 400 invalid_request_error: system.0.text: Field required"
    )


async def _count_tokens_server() -> tuple[Any, Any]:
    """A server whose count_tokens answers 429 once, then counts (retries are the run's)."""
    seen: list[str] = []

    async def count(request: web.Request) -> web.Response:
        seen.append(request.path)
        if len(seen) == 1:
            return web.json_response(
                {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}},
                status=429,
                headers={"retry-after": "0"},
            )
        return web.json_response({"input_tokens": 7})

    app = web.Application()
    app.router.add_post("/v1/messages/count_tokens", count)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return (f"http://127.0.0.1:{port}/v1", seen), runner.cleanup


def test_a_429_on_count_tokens_is_retried(tmp_path: Path) -> None:
    """count_tokens goes through the run's retries: a 429 is waited out and counted."""
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "hi"}])
    with serve_on_thread(_count_tokens_server, name="counts") as (base_url, seen):
        data = _plan([str(src)], base_url)
    assert data["input_tokens"]["estimate"] == 7 and data["failed_rows"] == 0
    assert len(seen) == 2


# -- pure parts ---------------------------------------------------------------------------


def test_sample_indices_spread_evenly_or_take_all() -> None:
    """The middle of each of n equal slices; every row when there are no more than n."""
    assert sample_indices(1000, 4) == [125, 375, 625, 875]
    assert sample_indices(3, 100) == [0, 1, 2]
    picks = sample_indices(10_001, 100)
    assert len(set(picks)) == 100 and picks[0] == 50 and picks[-1] == 9950


def test_extrapolation_has_a_range_unless_every_row_was_counted() -> None:
    """All rows counted: the sum, no range. A sample: mean x rows with a 95% range that
    narrows as the sample grows, never below one token per uncounted row."""
    assert _extrapolate([3, 4, 5], 3) == {
        "estimate": 12,
        "low": 12,
        "high": 12,
        "counted_sum": 12,
        "counted_mean": 4.0,
    }
    small = _extrapolate([1, 9] * 5, 1000)
    large = _extrapolate([1, 9] * 50, 1000)
    assert small["estimate"] == large["estimate"] == 5000
    assert small["high"] - small["low"] > large["high"] - large["low"] > 0
    assert _extrapolate([1, 100], 1000)["low"] == 101 + 998


def _chat_request(body: dict[str, Any]) -> Request:
    return Request(row_index=0, row_id="r", api="chat", path="/chat/completions", body=body)


def test_a_chat_request_is_counted_in_the_messages_shape() -> None:
    """System messages become `system`, parts blocks (a data: URL image as base64), tool
    calls tool_use and tool messages tool_result blocks, function tools Anthropic tools;
    generation settings are left out."""
    body = {
        "model": "m",
        "max_tokens": 10,
        "temperature": 0,
        "stream": False,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "No lists."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "function": {"name": "look", "arguments": '{"q": "y"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "a cat"},
        ],
        "tools": [{"type": "function", "function": {"name": "look", "parameters": {}}}],
        "tool_choice": "required",
    }
    counted = count_request(_chat_request(body))
    assert (counted.api, counted.path) == ("messages", "/messages/count_tokens")
    assert counted.body == {
        "model": "m",
        "system": "Be brief.\n\nNo lists.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "QUJD"},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "c1", "name": "look", "input": {"q": "y"}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "a cat"}],
            },
        ],
        "tools": [{"name": "look", "input_schema": {"type": "object", "properties": {}}}],
        "tool_choice": {"type": "any"},
    }


def test_a_messages_request_keeps_only_what_count_tokens_takes() -> None:
    """max_tokens, stream, temperature and the like go; model, system, tools, thinking stay."""
    body = {
        "model": "m",
        "max_tokens": 5,
        "stream": True,
        "temperature": 1,
        "stop_sequences": ["x"],
        "system": "s",
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "hi"}],
    }
    request = Request(row_index=0, row_id="r", api="messages", path="/messages", body=body)
    assert count_request(request).body == {
        "messages": [{"role": "user", "content": "hi"}],
        "model": "m",
        "system": "s",
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }


@pytest.mark.parametrize("body", [{}, {"input_tokens": -1}, {"input_tokens": "7"}, []])
def test_a_count_answer_without_a_count_is_an_invalid_response(body: Any) -> None:
    """A 2xx without a whole, non-negative `input_tokens` is retried like any bad answer."""
    with pytest.raises(ResponseFormatError):
        CountReader().parse_response(body)
