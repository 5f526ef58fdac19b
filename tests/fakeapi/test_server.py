"""The fake API over raw HTTP: answers, shapes and headers, models, streams, counters."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest

from batchrunner.fakeapi import answer_for, prompt_text
from batchrunner.fakeapi.answers import answer_pieces
from tests.fakeserver import serve_in_thread
from tests.helpers import ANTHROPIC, OPENAI, ask, chat, sse_data

if TYPE_CHECKING:
    from collections.abc import Callable


# -- answers ---------------------------------------------------------------------------


def test_answer_for_embeds_prompt_and_is_deterministic() -> None:
    """Each prompt gets its own stable answer of 3..40 words; [long] gets ~150 words."""
    texts = {answer_for(f"question {i}")[0] for i in range(50)}
    assert len(texts) == 50
    for i in range(50):
        text, kind = answer_for(f"question {i}")
        assert text.startswith(f"Answer to question {i}: ")
        assert 3 <= len(text.split(": ", 1)[1].split()) <= 40
        assert kind == "end"
        assert answer_for(f"question {i}") == (text, kind)
    long_text, _ = answer_for("essay [long]")
    assert 140 <= len(long_text.split(": ", 1)[1].split()) <= 160
    assert len(long_text) > 500


def test_answer_for_truncates_at_max_tokens() -> None:
    """max_tokens counts the `Answer to ...:` piece plus one token per word."""
    pieces, kind = answer_pieces("essay [long]", max_tokens=5)
    assert kind == "max" and len(pieces) == 5
    assert answer_for("essay [long]", max_tokens=5) == ("".join(pieces), "max")
    assert answer_for("hi", max_tokens=1000)[1] == "end"


def test_prompt_text_takes_last_user_message() -> None:
    """prompt_text reads the last user turn: a string, or its text blocks joined."""
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "reply"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "a"},
                {"type": "image", "source": {}},
                {"type": "text", "text": "b"},
            ],
        },
    ]
    assert prompt_text(messages) == "ab"
    assert prompt_text([{"role": "assistant", "content": "x"}]) == ""
    assert prompt_text("not a list") == ""


# -- plain answers and headers ---------------------------------------------------------


def test_messages_plain_shape_and_headers(client: httpx.Client) -> None:
    """A messages answer has the Anthropic shape, request-id and both rate-limit families."""
    response = client.post("/messages", json=ask("Hello", system="Be nice."), headers=ANTHROPIC)
    assert response.status_code == 200
    body = response.json()
    assert re.fullmatch(r"msg_[0-9A-Za-z]{24}", body["id"])
    assert body["type"] == "message" and body["role"] == "assistant"
    assert body["model"] == "caicaini/auto"
    assert body["content"] == [{"type": "text", "text": answer_for("Hello")[0]}]
    assert body["stop_reason"] == "end_turn" and body["stop_sequence"] is None
    assert body["usage"] == {
        "input_tokens": 4,  # ceil((5 + 8) / 4)
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": len(answer_pieces("Hello")[0]),
        "service_tier": "standard",
    }
    headers = response.headers
    assert re.fullmatch(r"req_[0-9A-Za-z]{24}", headers["request-id"])
    assert "x-request-id" not in headers
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", headers["anthropic-ratelimit-requests-reset"]
    )
    assert int(headers["anthropic-ratelimit-tokens-limit"]) >= 1_000_000
    assert int(headers["x-ratelimit-limit-requests"]) >= 1000
    assert re.fullmatch(r"[0-9.hms]+", headers["x-ratelimit-reset-tokens"])


def test_chat_plain_shape_and_headers(client: httpx.Client) -> None:
    """A chat answer has the OpenAI shape, x-request-id and both rate-limit families."""
    response = client.post("/chat/completions", json=chat("Hello", n=2), headers=OPENAI)
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert isinstance(body["created"], int) and body["system_fingerprint"].startswith("fp_")
    assert [choice["index"] for choice in body["choices"]] == [0, 1]
    message = body["choices"][0]["message"]
    assert message == {
        "role": "assistant",
        "content": answer_for("Hello")[0],
        "refusal": None,
        "annotations": [],
    }
    usage = body["usage"]
    assert usage["completion_tokens"] == 2 * len(answer_pieces("Hello")[0])
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0
    assert re.fullmatch(r"req_[0-9a-f]{32}", response.headers["x-request-id"])
    assert "request-id" not in response.headers
    assert "anthropic-ratelimit-requests-limit" in response.headers
    assert "x-ratelimit-remaining-tokens" in response.headers


def test_stop_sequences_cut_the_answer(client: httpx.Client) -> None:
    """A stop sequence inside the answer ends it there, named in stop_sequence."""
    full = answer_for("stop here")[0]
    stop = full.split()[4]
    body = client.post(
        "/messages",
        json=ask("stop here", stop_sequences=[stop]),
        headers=ANTHROPIC,
    ).json()
    assert body["stop_reason"] == "stop_sequence" and body["stop_sequence"] == stop
    assert body["content"][0]["text"] == full[: full.index(stop)]
    reply = client.post("/chat/completions", json=chat("stop here", stop=stop), headers=OPENAI)
    assert reply.json()["choices"][0]["message"]["content"] == full[: full.index(stop)]
    assert reply.json()["choices"][0]["finish_reason"] == "stop"


# -- models and count_tokens ------------------------------------------------------------


def test_models_list_shape_depends_on_anthropic_version(client: httpx.Client) -> None:
    """GET /models is Anthropic's page with anthropic-version, OpenAI's list without."""
    page = client.get("/models", params={"limit": 2}, headers=ANTHROPIC).json()
    assert [model["id"] for model in page["data"]] == ["caicaini/auto", "caicaini/small"]
    assert page["has_more"] is True
    assert (page["first_id"], page["last_id"]) == ("caicaini/auto", "caicaini/small")
    rest = client.get("/models", params={"after_id": page["last_id"]}, headers=ANTHROPIC).json()
    assert [model["id"] for model in rest["data"]] == ["caicaini/large"]
    assert rest["has_more"] is False
    listing = client.get("/models", headers=OPENAI).json()
    assert listing["object"] == "list"
    assert listing["data"][0] == {
        "id": "caicaini/auto",
        "object": "model",
        "created": 1735689600,
        "owned_by": "caicaini",
    }
    one = client.get("/models/caicaini%2Fsmall", headers=ANTHROPIC).json()
    assert one["type"] == "model" and one["id"] == "caicaini/small"
    assert client.get("/models", params={"limit": 0}, headers=ANTHROPIC).status_code == 400


def test_count_tokens(client: httpx.Client) -> None:
    """count_tokens returns ceil(chars / 4) over messages and system; unknown model 404."""
    body = {
        "model": "caicaini/auto",
        "system": [{"type": "text", "text": "abcd"}],
        "messages": [
            {"role": "user", "content": "x" * 10},
            {"role": "assistant", "content": [{"type": "text", "text": "y" * 3}]},
        ],
    }
    response = client.post("/messages/count_tokens", json=body, headers=ANTHROPIC)
    assert response.json() == {"input_tokens": 5}
    assert response.headers["request-id"].startswith("req_")
    missing = client.post("/messages/count_tokens", json={**body, "model": "x"}, headers=ANTHROPIC)
    assert missing.status_code == 404


# -- streams ----------------------------------------------------------------------------


def test_messages_stream_event_order_matches_plain(client: httpx.Client) -> None:
    """The SSE events come in Anthropic order and rebuild the plain answer exactly."""
    plain = client.post("/messages", json=ask("Stream it"), headers=ANTHROPIC).json()
    response = client.post("/messages", json=ask("Stream it", stream=True), headers=ANTHROPIC)
    assert response.headers["content-type"].startswith("text/event-stream")
    names = [line[7:] for line in response.text.splitlines() if line.startswith("event: ")]
    events = sse_data(response.text)
    assert [event["type"] for event in events] == names
    deltas = len(answer_pieces("Stream it")[0])
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    text = "".join(
        event["delta"]["text"] for event in events if event["type"] == "content_block_delta"
    )
    assert text == plain["content"][0]["text"]
    assert events[0]["message"]["id"] == plain["id"]
    assert events[0]["message"]["stop_reason"] is None
    assert events[-2]["delta"]["stop_reason"] == plain["stop_reason"]
    assert events[-2]["usage"]["output_tokens"] == plain["usage"]["output_tokens"]


def test_chat_stream_chunk_order_matches_plain(client: httpx.Client) -> None:
    """Chat chunks: role, contents, finish, usage chunk (choices []), then [DONE]."""
    plain = client.post("/chat/completions", json=chat("Stream it"), headers=OPENAI).json()
    body = chat("Stream it", stream=True, stream_options={"include_usage": True})
    chunks = sse_data(client.post("/chat/completions", json=body, headers=OPENAI).text)
    assert chunks[-1] == "[DONE]"
    usage_chunk, finish_chunk = chunks[-2], chunks[-3]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == plain["usage"]
    assert finish_chunk["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    text = "".join(chunk["choices"][0]["delta"]["content"] for chunk in chunks[1:-3])
    assert text == plain["choices"][0]["message"]["content"]
    assert all(chunk["usage"] is None for chunk in chunks[:-2])
    assert {chunk["id"] for chunk in chunks[:-1]} == {plain["id"]}
    bare = sse_data(
        client.post("/chat/completions", json=chat("x", stream=True), headers=OPENAI).text
    )
    assert "usage" not in bare[0] and bare[-2]["choices"][0]["finish_reason"] == "stop"


# -- counters and the request log --------------------------------------------------------


def test_stats_log_and_reset() -> None:
    """Counters and the log record every generation request; reset clears them."""
    with serve_in_thread() as server, httpx.Client(base_url=server.base_url) as http:
        http.post("/messages", json=ask("one"), headers=ANTHROPIC)
        http.post("/chat/completions", json=chat("two", temperature=9), headers=OPENAI)
        http.get("/models", headers=OPENAI)
        stats = http.get(server.root + "/_fake/stats").json()
        assert stats["requests_total"] == 3
        assert stats["status_counts"] == {"200": 2, "400": 1}
        assert stats["answers_total"] == 1
        assert stats["in_flight"] == 0 and stats["max_in_flight"] == 1
        log = http.get(server.root + "/_fake/log").json()
        assert [(entry["path"], entry["prompt"], entry["status"]) for entry in log] == [
            ("/v1/messages", "one", 200),
            ("/v1/chat/completions", "two", 400),
        ]
        assert log[0]["response_id"].startswith("msg_") and log[1]["response_id"] is None
        assert log[0]["fault"] is None and log[0]["retry_after"] is None
        assert isinstance(log[0]["t"], float)
        assert http.post(server.root + "/_fake/reset").json() == {"ok": True}
        assert server.state.stats()["requests_total"] == 0
        assert http.get(server.root + "/_fake/log").json() == []


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll a condition that another thread (the server's) makes true; fail after 10 s."""
    with anyio.fail_after(10):
        while not predicate():  # noqa: ASYNC110 - the server thread cannot set an anyio.Event
            await anyio.sleep(0.01)


@pytest.mark.anyio
async def test_in_flight_counts_concurrent_requests() -> None:
    """Hanging requests are all counted in flight; hanging up on them brings it back to 0."""
    with serve_in_thread(fault_rate=1.0, faults=("hang",)) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:

            async def post(prompt: str) -> None:
                await http.post("/messages", json=ask(prompt), headers=ANTHROPIC)

            async with anyio.create_task_group() as group:
                for i in range(12):
                    group.start_soon(post, f"hang {i}")
                await wait_until(lambda: server.state.in_flight == 12)
                group.cancel_scope.cancel()
        await wait_until(lambda: server.state.in_flight == 0)
        assert server.state.max_in_flight == 12
        assert [entry["fault"] for entry in server.state.log_list()] == ["hang"] * 12
