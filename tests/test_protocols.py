"""Protocols: rows to requests, response bodies to Completions, error bodies to fields."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from batchrunner.errors import RetryableError, SourceError
from batchrunner.protocols import (
    CHAT,
    MESSAGES,
    PROTOCOLS,
    REQUEST_FIELDS,
    Protocol,
    get_protocol,
    parse_error_body,
)
from batchrunner.records import Completion, Shape
from batchrunner.records import Row as RowRecord
from batchrunner.spec import RequestSpec

DEFAULTS = RequestSpec(model="def-model", max_tokens=100, system="Be brief.", temperature=0.5)
BARE = RequestSpec(model="def-model", max_tokens=100)


def row(body: Any, shape: Shape = "simple", **kw: Any) -> RowRecord:
    return RowRecord(index=3, id="r3", shape=shape, body=body, where="in.jsonl:4", **kw)


def test_registry_and_paths() -> None:
    """Each convention is found by name, with its endpoint path."""
    assert get_protocol("messages") is MESSAGES
    assert get_protocol("chat") is CHAT
    assert {name: p.path for name, p in PROTOCOLS.items()} == {
        "messages": "/messages",
        "chat": "/chat/completions",
    }
    assert all(p.name == name for name, p in PROTOCOLS.items())
    with pytest.raises(KeyError, match="known: messages, chat"):
        get_protocol("responses")  # type: ignore[arg-type]


def test_request_fields_per_convention() -> None:
    """REQUEST_FIELDS holds each convention's body fields, and chat also takes system."""
    messages, chat = REQUEST_FIELDS["messages"], REQUEST_FIELDS["chat"]
    assert {"prompt", "messages", "system", "stop_sequences", "thinking", "top_k"} <= messages
    assert {"prompt", "messages", "system", "stop", "max_completion_tokens", "seed"} <= chat
    assert "stop" not in messages and "stop_sequences" not in chat
    assert not ({"id", "custom_id", "expected", "stream"} & (messages | chat))


# --- build_request: messages -----------------------------------------------------------


def test_messages_simple_prompt_gets_defaults() -> None:
    """A prompt becomes one user message; defaults fill model, max_tokens, system, temperature."""
    request = MESSAGES.build_request(row({"prompt": "Hi"}), DEFAULTS, stream=False)
    assert request.body == {
        "messages": [{"role": "user", "content": "Hi"}],
        "model": "def-model",
        "max_tokens": 100,
        "system": "Be brief.",
        "temperature": 0.5,
    }
    assert (request.row_index, request.row_id, request.api, request.path) == (
        3,
        "r3",
        "messages",
        "/messages",
    )
    assert (request.stream, request.max_tokens) == (False, 100)


def test_messages_row_fields_win_over_defaults() -> None:
    """A row's own model, max_tokens, system and temperature are kept; null means unset."""
    body = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}],
        "model": "mine",
        "max_tokens": 7,
        "system": [{"type": "text", "text": "sys"}],
        "temperature": None,
        "top_k": 3,
    }
    request = MESSAGES.build_request(row(body), DEFAULTS, stream=False)
    assert request.body["model"] == "mine"
    assert request.body["system"] == [{"type": "text", "text": "sys"}]
    assert request.body["temperature"] == 0.5
    assert request.body["top_k"] == 3
    assert request.max_tokens == 7


def test_absent_defaults_add_nothing() -> None:
    """With no default system or temperature, neither key appears."""
    for protocol in (MESSAGES, CHAT):
        request = protocol.build_request(row({"prompt": "Hi"}), BARE, stream=False)
        assert "system" not in request.body and "temperature" not in request.body
        assert request.body["messages"] == [{"role": "user", "content": "Hi"}]


def test_anthropic_batch_params_sent_as_is_with_missing_defaults() -> None:
    """A Message Batches `params` object is kept; only its missing fields get defaults."""
    params = {"model": "p-model", "messages": [{"role": "user", "content": "q"}], "top_p": 0.9}
    request = MESSAGES.build_request(row(params, "anthropic_batch"), DEFAULTS, stream=False)
    assert request.body == {**params, "max_tokens": 100, "system": "Be brief.", "temperature": 0.5}
    own = {**params, "max_tokens": 5, "system": "own", "temperature": 0}
    request = MESSAGES.build_request(row(own, "anthropic_batch"), DEFAULTS, stream=False)
    assert request.body == own


def test_messages_stream_flags() -> None:
    """stream=True sets stream only; stream=False strips a row's stream flags."""
    params = {"messages": [{"role": "user", "content": "q"}], "stream": True}
    streamed = MESSAGES.build_request(row(params, "anthropic_batch"), BARE, stream=True)
    assert streamed.body["stream"] is True and "stream_options" not in streamed.body
    assert streamed.stream is True
    plain = MESSAGES.build_request(row(params, "anthropic_batch"), BARE, stream=False)
    assert "stream" not in plain.body


# --- build_request: chat ---------------------------------------------------------------


def test_chat_simple_prompt_with_default_system() -> None:
    """Chat puts the default system prompt in a leading system message."""
    request = CHAT.build_request(row({"prompt": "Hi"}), DEFAULTS, stream=False)
    assert request.body == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
        "model": "def-model",
        "max_tokens": 100,
        "temperature": 0.5,
    }
    assert (request.api, request.path, request.max_tokens) == ("chat", "/chat/completions", 100)


def test_chat_row_system_field_becomes_leading_message() -> None:
    """A simple row's system field becomes the leading system message, not a body field."""
    request = CHAT.build_request(row({"prompt": "Hi", "system": "Own."}), DEFAULTS, stream=False)
    assert request.body["messages"][0] == {"role": "system", "content": "Own."}
    assert len(request.body["messages"]) == 2
    assert "system" not in request.body


@pytest.mark.parametrize("role", ["system", "developer"])
def test_chat_existing_system_message_blocks_default(role: str) -> None:
    """Messages that already open with a system or developer message get no default system."""
    messages = [{"role": role, "content": "Mine."}, {"role": "user", "content": "Hi"}]
    for shape in ("simple", "openai_batch"):
        body: dict[str, Any] = {"messages": messages}
        request = CHAT.build_request(row(body, shape), DEFAULTS, stream=False)
        assert request.body["messages"] == messages


def test_chat_row_system_conflicting_with_leading_message_is_rejected() -> None:
    """A row with both a system field and a leading system message is ambiguous."""
    body = {"system": "A", "messages": [{"role": "system", "content": "B"}]}
    with pytest.raises(SourceError, match="system"):
        CHAT.build_request(row(body), DEFAULTS, stream=False)


def test_openai_batch_body_sent_as_is_with_missing_defaults() -> None:
    """An OpenAI batch body keeps its fields; only what it lacks comes from the job."""
    body = {"model": "b-model", "messages": [{"role": "user", "content": "q"}], "seed": 1}
    request = CHAT.build_request(row(body, "openai_batch", api="chat"), DEFAULTS, stream=False)
    assert request.body == {
        "model": "b-model",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q"}],
        "seed": 1,
        "max_tokens": 100,
        "temperature": 0.5,
    }


def test_chat_max_completion_tokens_suppresses_default() -> None:
    """With max_completion_tokens present no max_tokens is added, and it is the effective cap."""
    body = {"messages": [{"role": "user", "content": "q"}], "max_completion_tokens": 64}
    request = CHAT.build_request(row(body, "openai_batch"), DEFAULTS, stream=False)
    assert "max_tokens" not in request.body
    assert request.max_tokens == 64


def test_chat_stream_flags() -> None:
    """stream=True asks for the usage chunk too, keeping the row's other stream options."""
    body = {
        "messages": [{"role": "user", "content": "q"}],
        "stream": False,
        "stream_options": {"include_obfuscation": False},
    }
    streamed = CHAT.build_request(row(body, "openai_batch"), BARE, stream=True)
    assert streamed.body["stream"] is True
    assert streamed.body["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    plain = CHAT.build_request(row(body, "openai_batch"), BARE, stream=False)
    assert "stream" not in plain.body and "stream_options" not in plain.body


def test_chat_accepts_tool_turns() -> None:
    """An assistant turn with only tool calls (null or no content) and a tool turn are valid."""
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "tool_calls": [call]},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c", "content": "42"},
    ]
    request = CHAT.build_request(row({"messages": messages}), BARE, stream=False)
    assert request.body["messages"] == messages


# --- both conventions ------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [MESSAGES, CHAT])
@pytest.mark.parametrize("shape", ["simple", "openai_batch", "anthropic_batch"])
def test_inputs_are_never_mutated(protocol: Protocol, shape: Shape) -> None:
    """Building a request leaves the row's dicts and lists exactly as they were."""
    body = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]}],
        "stream": True,
        "stream_options": {"include_usage": False},
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
    }
    if shape == "simple":
        body["system"] = "S"
    source = row(body, shape)
    before = copy.deepcopy(source.body)
    for stream in (True, False):
        request = protocol.build_request(source, DEFAULTS, stream=stream)
        assert request.body is not source.body
        assert request.body["messages"] is not source.body["messages"]
    assert source.body == before


@pytest.mark.parametrize("protocol", [MESSAGES, CHAT])
def test_input_token_estimate_tracks_size(protocol: Protocol) -> None:
    """The input estimate is about a quarter of the characters of messages, system and tools."""
    small = protocol.build_request(row({"prompt": "x"}), BARE, stream=False)
    big = protocol.build_request(row({"prompt": "x" * 4000}), BARE, stream=False)
    assert 1 <= small.est_input_tokens < 20
    assert 1000 <= big.est_input_tokens < 1030
    tools = [{"name": "f", "description": "d" * 400}]
    with_tools = protocol.build_request(row({"prompt": "x", "tools": tools}), BARE, stream=False)
    assert with_tools.est_input_tokens >= small.est_input_tokens + 100


@pytest.mark.parametrize("protocol", [MESSAGES, CHAT])
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"temperature": 1}, "neither prompt nor messages"),
        ({"prompt": 12}, "prompt must be a string, got a number"),
        ({"prompt": ""}, "prompt is empty"),
        ({"prompt": "a", "messages": []}, "both messages and prompt"),
        ({"messages": "hi"}, "messages must be an array, got a string"),
        ({"messages": []}, "messages is empty"),
        ({"messages": ["hi"]}, r"messages\[0\] must be an object"),
        ({"messages": [{"content": "hi"}]}, r"messages\[0\] has no role"),
        ({"messages": [{"role": "user"}]}, r"messages\[0\] has no content"),
        ({"messages": [{"role": "user", "content": 5}]}, r"messages\[0\].content must be"),
        ({"prompt": "a", "max_tokens": "10"}, "max_tokens must be an integer, got a string"),
        ({"prompt": "a", "max_tokens": True}, "max_tokens must be an integer, got a boolean"),
        ({"prompt": "a", "model": 3}, "model must be a non-empty string"),
    ],
)
def test_rows_that_cannot_become_requests(
    protocol: Protocol, body: dict[str, Any], reason: str
) -> None:
    """A malformed row raises SourceError with its location and the reason."""
    with pytest.raises(SourceError, match=reason) as info:
        protocol.build_request(row(body), DEFAULTS, stream=False)
    assert info.value.where == "in.jsonl:4"


@pytest.mark.parametrize(
    ("protocol", "shape", "body", "reason"),
    [
        (MESSAGES, "anthropic_batch", {"model": "m"}, "params.messages is missing"),
        (MESSAGES, "anthropic_batch", ["x"], "must be an object, got an array"),
        (CHAT, "openai_batch", {"messages": [{"role": "user", "content": 1.5}]}, "content"),
        (CHAT, "simple", {"prompt": "a", "system": 5}, "system must be a string"),
        (MESSAGES, "simple", {"messages": [{"role": "user", "content": None}]}, "content"),
    ],
)
def test_more_malformed_rows(protocol: Protocol, shape: Shape, body: Any, reason: str) -> None:
    """Batch bodies without messages and values of the wrong type are rejected."""
    with pytest.raises(SourceError, match=reason):
        protocol.build_request(row(body, shape), DEFAULTS, stream=False)


def test_row_for_the_other_convention_is_rejected() -> None:
    """An OpenAI batch line (api chat) cannot be sent with the messages protocol."""
    source = row({"messages": [{"role": "user", "content": "q"}]}, "openai_batch", api="chat")
    with pytest.raises(SourceError, match="chat request but the job uses --api messages"):
        MESSAGES.build_request(source, DEFAULTS, stream=False)


# --- parse_response --------------------------------------------------------------------


def test_messages_parse_joins_text_blocks() -> None:
    """Text from several text blocks joins; thinking and tool_use blocks add no text, and
    the tool_use block becomes a tool call with its input as JSON text."""
    body = {
        "id": "msg_1",
        "type": "message",
        "model": "m",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Hello, "},
            {"type": "tool_use", "id": "t", "name": "f", "input": {}},
            {"type": "text", "text": "world"},
        ],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 12, "output_tokens": 6, "cache_read_input_tokens": 3},
    }
    assert MESSAGES.parse_response(body) == Completion(
        response_id="msg_1",
        model="m",
        text="Hello, world",
        stop_reason="end_turn",
        input_tokens=12,
        output_tokens=6,
        tool_calls=({"id": "t", "name": "f", "arguments": "{}"},),
    )


def test_chat_parse_text_and_usage() -> None:
    """Chat reads the first choice's content and finish_reason, and prompt/completion tokens."""
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 13, "completion_tokens": 5, "total_tokens": 18},
    }
    assert CHAT.parse_response(body) == Completion(
        response_id="chatcmpl-1",
        model="m",
        text="4",
        stop_reason="stop",
        input_tokens=13,
        output_tokens=5,
    )


def test_chat_parse_tool_only_and_part_lists() -> None:
    """A tool-only reply has empty text; a content part list yields its text parts."""
    tool_only = {
        "id": "c",
        "choices": [
            {"message": {"content": None, "tool_calls": []}, "finish_reason": "tool_calls"}
        ],
    }
    completion = CHAT.parse_response(tool_only)
    assert (completion.text, completion.stop_reason, completion.input_tokens) == (
        "",
        "tool_calls",
        None,
    )
    parts = {"id": "c", "choices": [{"message": {"content": [{"type": "text", "text": "a"}]}}]}
    assert CHAT.parse_response(parts).text == "a"


@pytest.mark.parametrize(
    ("protocol", "body"),
    [
        (MESSAGES, ["not", "an", "object"]),
        (MESSAGES, {"content": []}),
        (MESSAGES, {"id": "m", "content": "text"}),
        (MESSAGES, {"type": "error", "error": {"type": "api_error", "message": "x"}}),
        (CHAT, "text"),
        (CHAT, {"choices": []}),
        (CHAT, {"id": "c", "choices": []}),
        (CHAT, {"id": "c", "choices": ["x"]}),
        (CHAT, {"id": "c", "choices": [{"message": None}]}),
    ],
)
def test_malformed_bodies_are_retryable(protocol: Protocol, body: Any) -> None:
    """A 2xx body that does not fit the convention raises RetryableError(invalid_response)."""
    with pytest.raises(RetryableError) as info:
        protocol.parse_response(body)
    assert info.value.error_type == "invalid_response"


# --- parse_error_body ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
            ("rate_limit_error", "slow down", None),
        ),
        (
            {
                "type": "error",
                "error": {
                    "type": "rate_limit_error",
                    "message": "spend",
                    "details": {"error_code": "enforced_spend_limit_reached"},
                },
            },
            ("rate_limit_error", "spend", "enforced_spend_limit_reached"),
        ),
        (
            {"type": "error", "error": {"type": "api_error", "message": "m", "details": None}},
            ("api_error", "m", None),
        ),
        (
            {
                "error": {
                    "message": "quota",
                    "type": "insufficient_quota",
                    "code": "insufficient_quota",
                }
            },
            ("insufficient_quota", "quota", "insufficient_quota"),
        ),
        (
            {"error": {"message": "m", "type": "server_error", "code": None}},
            ("server_error", "m", None),
        ),
        ({"error": {"message": "m", "code": 503}}, (None, "m", "503")),
        ({"error": "upstream timed out"}, (None, "upstream timed out", None)),
        ({"error": {"type": True, "message": 5}}, (None, None, None)),
        ({"detail": "x"}, (None, None, None)),
        ("<html>502 Bad Gateway</html>", (None, None, None)),
        (None, (None, None, None)),
        ([1, 2], (None, None, None)),
    ],
)
def test_parse_error_body(body: object, expected: tuple[str | None, ...]) -> None:
    """Both conventions' error shapes give (type, message, code); anything else gives Nones."""
    assert parse_error_body(body) == expected
