"""Stream assemblers: SSE events in, the exact non-streamed response body out."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from batchrunner.errors import RetryableError
from batchrunner.protocols import CHAT, MESSAGES, Protocol
from batchrunner.sse import SSEDecoder, SSEEvent

GOLDEN = Path(__file__).parent / "golden"
CASES = [(MESSAGES, "messages_stream"), (CHAT, "chat_stream")]


def events_of(raw: bytes, *, step: int = 0) -> list[SSEEvent]:
    decoder = SSEDecoder()
    chunks = [raw[i : i + step] for i in range(0, len(raw), step)] if step else [raw]
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.flush()


def assemble(protocol: Protocol, events: list[SSEEvent]) -> dict[str, Any]:
    assembler = protocol.new_assembler()
    for event in events:
        assembler.feed(event)
    return assembler.finish()


def golden(name: str) -> tuple[bytes, dict[str, Any]]:
    raw = (GOLDEN / f"{name}.sse").read_bytes()
    expected = json.loads((GOLDEN / f"{name}.expected.json").read_text(encoding="utf-8"))
    return raw, expected


def sse(*chunks: dict[str, Any] | str, named: bool = False) -> list[SSEEvent]:
    """Events from JSON payloads; `named` gives each the event name of its type (messages)."""
    out = []
    for chunk in chunks:
        data = chunk if isinstance(chunk, str) else json.dumps(chunk)
        name = chunk["type"] if named and isinstance(chunk, dict) else None
        out.append(SSEEvent(name, data))
    return out


@pytest.mark.parametrize(("protocol", "name"), CASES)
def test_golden_stream_assembles_to_expected_body(protocol: Protocol, name: str) -> None:
    """A recorded stream assembles to exactly the stored non-streamed body."""
    raw, expected = golden(name)
    assert assemble(protocol, events_of(raw)) == expected


@pytest.mark.parametrize(("protocol", "name"), CASES)
def test_golden_stream_one_byte_at_a_time(protocol: Protocol, name: str) -> None:
    """Feeding the recorded bytes one at a time assembles the same body."""
    raw, expected = golden(name)
    assert assemble(protocol, events_of(raw, step=1)) == expected


@pytest.mark.parametrize(("protocol", "name"), CASES)
def test_assembled_body_parses_like_the_plain_one(protocol: Protocol, name: str) -> None:
    """parse_response reads the assembled body as it reads the non-streamed one."""
    raw, expected = golden(name)
    completion = protocol.parse_response(assemble(protocol, events_of(raw)))
    assert completion == protocol.parse_response(expected)
    assert completion.text.startswith("héllo — 日本")
    assert completion.input_tokens in (42, 31)


@pytest.mark.parametrize(("protocol", "name"), CASES)
def test_truncated_stream_never_yields_a_partial_body(protocol: Protocol, name: str) -> None:
    """A stream cut at any byte either raises RetryableError or was already complete."""
    raw, expected = golden(name)
    complete = 0
    for cut in range(0, len(raw), 3):
        try:
            body = assemble(protocol, events_of(raw[:cut]))
        except RetryableError as exc:
            assert exc.error_type == "invalid_response"
        else:
            assert body == expected
            complete += 1
    # Only cuts after the terminal data line (before its blank line) may succeed.
    assert complete <= 2


@pytest.mark.parametrize(("protocol", "name"), CASES)
def test_every_event_prefix_ends_early(protocol: Protocol, name: str) -> None:
    """finish() without the terminal event raises, naming what was missing."""
    raw, _ = golden(name)
    events = events_of(raw)
    marker = "message_stop" if protocol is MESSAGES else "[DONE]"
    for k in range(len(events)):
        assembler = protocol.new_assembler()
        for event in events[:k]:
            assembler.feed(event)
        assert not assembler.done
        with pytest.raises(RetryableError, match=re.escape(marker)):
            assembler.finish()


@pytest.mark.parametrize(("protocol", "name"), CASES)
def test_finish_is_repeatable_and_later_events_are_ignored(protocol: Protocol, name: str) -> None:
    """After the terminal event more events change nothing, and finish() can be called twice."""
    raw, expected = golden(name)
    events = events_of(raw)
    assembler = protocol.new_assembler()
    for event in [*events, *events[1:4]]:
        assembler.feed(event)
    assert assembler.done
    assert assembler.finish() == expected
    assert assembler.finish() == expected


@pytest.mark.parametrize(("protocol", "name"), CASES)
def test_malformed_json_is_invalid_response(protocol: Protocol, name: str) -> None:
    """A data line that is not JSON makes the response invalid (retryable)."""
    raw, _ = golden(name)
    events = events_of(raw)
    bad = SSEEvent(events[1].event, events[1].data[:-5])
    assembler = protocol.new_assembler()
    assembler.feed(events[0])
    with pytest.raises(RetryableError) as info:
        assembler.feed(bad)
    assert info.value.error_type == "invalid_response"


# --- messages ------------------------------------------------------------------------

START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "m",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 1},
    },
}
STOP = {"type": "message_stop"}


def block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, **fields: Any) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": fields}


def test_messages_error_event_raises_with_server_type() -> None:
    """An error event after the 200 raises RetryableError carrying the error's type."""
    assembler = MESSAGES.new_assembler()
    events = sse(
        START,
        block_start(0, {"type": "text", "text": ""}),
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        named=True,
    )
    assembler.feed(events[0])
    assembler.feed(events[1])
    with pytest.raises(RetryableError) as info:
        assembler.feed(events[2])
    assert (info.value.error_type, info.value.message) == ("overloaded_error", "Overloaded")


def test_messages_error_event_without_details_gets_fallback_type() -> None:
    """An error event with an empty payload still raises, as api_error."""
    with pytest.raises(RetryableError) as info:
        MESSAGES.new_assembler().feed(SSEEvent("error", "{}"))
    assert info.value.error_type == "api_error"


def test_messages_stream_of_unnamed_events_uses_data_type() -> None:
    """Without event: lines the data's type drives assembly; pings are still ignored."""
    events = sse(
        START,
        {"type": "ping"},
        block_start(0, {"type": "text", "text": "a"}),
        delta(0, type="text_delta", text="b"),
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 3},
        },
        {"type": "some_future_event"},
        STOP,
    )
    body = assemble(MESSAGES, events)
    assert body["content"] == [{"type": "text", "text": "ab"}]
    assert body["stop_reason"] == "end_turn"
    assert body["usage"] == {"input_tokens": 5, "output_tokens": 3}


def test_messages_empty_tool_input_is_empty_object() -> None:
    """A tool_use block whose only input fragment is "" gets input {}."""
    events = sse(
        START,
        block_start(0, {"type": "tool_use", "id": "t", "name": "f", "input": {}}),
        delta(0, type="input_json_delta", partial_json=""),
        {"type": "content_block_stop", "index": 0},
        STOP,
        named=True,
    )
    assert assemble(MESSAGES, events)["content"][0]["input"] == {}


def test_messages_tool_block_without_fragments_keeps_start_input() -> None:
    """A tool_use block with no input_json_delta keeps the input of its start shell."""
    shell = {"type": "tool_use", "id": "t", "name": "f", "input": {"k": 1}}
    events = sse(START, block_start(0, shell), STOP, named=True)
    assert assemble(MESSAGES, events)["content"] == [shell]


def test_messages_bad_tool_json_is_invalid_response() -> None:
    """Tool input fragments that do not join into JSON make the response invalid."""
    events = sse(
        START,
        block_start(0, {"type": "tool_use", "id": "t", "name": "f", "input": {}}),
        delta(0, type="input_json_delta", partial_json='{"a": '),
        STOP,
        named=True,
    )
    with pytest.raises(RetryableError, match="tool input"):
        assemble(MESSAGES, events)


def test_messages_usage_merge_keeps_values_a_delta_nulls() -> None:
    """message_delta usage overwrites counts but a null leaves the earlier value."""
    events = sse(
        START,
        {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
            "usage": {"output_tokens": 9, "input_tokens": None, "cache_read_input_tokens": 4},
        },
        STOP,
        named=True,
    )
    body = assemble(MESSAGES, events)
    assert body["usage"] == {"input_tokens": 5, "output_tokens": 9, "cache_read_input_tokens": 4}
    assert START["message"]["usage"] == {"input_tokens": 5, "output_tokens": 1}  # type: ignore[index]


def test_messages_citations_and_stop_sequence() -> None:
    """citations_delta entries collect on their block; stop_sequence comes from the delta."""
    events = sse(
        START,
        block_start(0, {"type": "text", "text": "", "citations": None}),
        delta(0, type="text_delta", text="x"),
        delta(0, type="citations_delta", citation={"cited_text": "c1"}),
        delta(0, type="citations_delta", citation={"cited_text": "c2"}),
        delta(0, type="unknown_delta", foo=1),
        {"type": "message_delta", "delta": {"stop_reason": "stop_sequence", "stop_sequence": "##"}},
        STOP,
        named=True,
    )
    body = assemble(MESSAGES, events)
    assert body["content"][0]["citations"] == [{"cited_text": "c1"}, {"cited_text": "c2"}]
    assert (body["stop_reason"], body["stop_sequence"]) == ("stop_sequence", "##")


@pytest.mark.parametrize(
    "bad",
    [
        [block_start(0, {"type": "text", "text": ""})],  # before message_start
        [START, delta(3, type="text_delta", text="x")],  # unknown block
        [START, block_start(0, {"type": "text", "text": ""}), delta(0, type="text_delta")],
        [START, {"type": "content_block_start", "index": "0", "content_block": {}}],
        [{"type": "message_start", "message": "nope"}],
        ["[1, 2]"],
    ],
)
def test_messages_out_of_shape_events_are_invalid(bad: list[dict[str, Any] | str]) -> None:
    """Events that break the stream's grammar raise invalid_response."""
    assembler = MESSAGES.new_assembler()
    with pytest.raises(RetryableError) as info:
        for event in sse(*bad):
            assembler.feed(event)
    assert info.value.error_type == "invalid_response"


# --- chat ----------------------------------------------------------------------------


def chunk(*choices: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 7,
        "model": "m",
        "choices": list(choices),
        **extra,
    }


def test_chat_without_usage_chunk_has_no_usage() -> None:
    """No usage chunk: the body has no usage key rather than invented numbers."""
    events = sse(
        chunk({"index": 0, "delta": {"role": "assistant", "content": "hi"}}),
        chunk({"index": 0, "delta": {}, "finish_reason": "stop"}),
        "[DONE]",
    )
    body = assemble(CHAT, events)
    assert "usage" not in body
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "hi", "refusal": None}
    assert body["system_fingerprint"] is None
    assert CHAT.parse_response(body).input_tokens is None


def test_chat_error_chunk_raises_with_type_and_code() -> None:
    """A {"error": ...} chunk mid-stream raises RetryableError with the error's type."""
    assembler = CHAT.new_assembler()
    assembler.feed(sse(chunk({"index": 0, "delta": {"content": "a"}}))[0])
    error = {"error": {"message": "boom", "type": "server_error", "code": "internal"}}
    with pytest.raises(RetryableError) as info:
        assembler.feed(sse(error)[0])
    assert (info.value.error_type, info.value.message, info.value.code) == (
        "server_error",
        "boom",
        "internal",
    )


def test_chat_named_error_event_raises() -> None:
    """An `event: error` with an unparseable shape still raises, as server_error."""
    with pytest.raises(RetryableError) as info:
        CHAT.new_assembler().feed(SSEEvent("error", '{"detail": "x"}'))
    assert info.value.error_type == "server_error"


def test_chat_refusal_stream() -> None:
    """A refusal streams into refusal text with null content, as a plain reply has it."""
    events = sse(
        chunk({"index": 0, "delta": {"role": "assistant", "content": None, "refusal": ""}}),
        chunk({"index": 0, "delta": {"refusal": "I can't "}}),
        chunk({"index": 0, "delta": {"refusal": "help."}, "finish_reason": "stop"}),
        "[DONE]",
    )
    message = assemble(CHAT, events)["choices"][0]["message"]
    assert message == {"role": "assistant", "content": None, "refusal": "I can't help."}


def test_chat_tool_only_reply_has_null_content() -> None:
    """A reply that only calls tools has content None, even after an empty content delta."""
    events = sse(
        chunk({"index": 0, "delta": {"role": "assistant", "content": ""}}),
        chunk(
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a":'},
                        }
                    ]
                },
            }
        ),
        # Some servers repeat id and name on every fragment: they must not double.
        chunk(
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": " 1}"}}
                    ]
                },
            }
        ),
        chunk({"index": 0, "delta": {}, "finish_reason": "tool_calls"}),
        "[DONE]",
    )
    body = assemble(CHAT, events)
    message = body["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    ]
    assert CHAT.parse_response(body).text == ""


def test_chat_tool_calls_without_index() -> None:
    """Tool call fragments without an index attach to the call the last id opened."""
    events = sse(
        chunk({"index": 0, "delta": {"tool_calls": [{"id": "a", "function": {"name": "f"}}]}}),
        chunk({"index": 0, "delta": {"tool_calls": [{"function": {"arguments": "{}"}}]}}),
        chunk({"index": 0, "delta": {"tool_calls": [{"id": "b", "function": {"name": "g"}}]}}),
        "[DONE]",
    )
    calls = assemble(CHAT, events)["choices"][0]["message"]["tool_calls"]
    assert [(c["id"], c["function"]["arguments"]) for c in calls] == [("a", "{}"), ("b", "")]


def test_chat_several_choices_and_logprobs() -> None:
    """Choices interleaved by index assemble separately, logprobs included."""
    token = {"token": "x", "logprob": -0.1, "bytes": [120], "top_logprobs": []}
    events = sse(
        chunk({"index": 1, "delta": {"role": "assistant", "content": "B"}, "logprobs": None}),
        chunk(
            {
                "index": 0,
                "delta": {"role": "assistant", "content": "A"},
                "logprobs": {"content": [token], "refusal": None},
            }
        ),
        chunk({"index": 0, "delta": {"content": "a"}, "logprobs": {"content": [token]}}),
        chunk({"index": 1, "delta": {}, "finish_reason": "length"}),
        chunk({"index": 0, "delta": {}, "finish_reason": "stop"}, service_tier="default"),
        chunk(usage={"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}),
        "[DONE]",
    )
    body = assemble(CHAT, events)
    assert [c["message"]["content"] for c in body["choices"]] == ["Aa", "B"]
    assert [c["finish_reason"] for c in body["choices"]] == ["stop", "length"]
    assert body["choices"][0]["logprobs"] == {"content": [token, token], "refusal": None}
    assert body["choices"][1]["logprobs"] is None
    assert body["service_tier"] == "default"
    assert body["usage"]["total_tokens"] == 4


def test_chat_ignores_named_foreign_events() -> None:
    """Events with a name the chat convention never sends (e.g. ping) are skipped unread."""
    events = [
        SSEEvent("ping", "not json"),
        *sse(chunk({"index": 0, "delta": {"content": "x"}})),
        SSEEvent(None, "[DONE]"),
    ]
    assert assemble(CHAT, events)["choices"][0]["message"]["content"] == "x"


@pytest.mark.parametrize(
    "bad",
    [
        chunk("nope"),  # type: ignore[arg-type]
        chunk({"index": "0", "delta": {}}),
        chunk({"index": 0, "delta": "text"}),
        "42",
    ],
)
def test_chat_out_of_shape_chunks_are_invalid(bad: dict[str, Any] | str) -> None:
    """Chunks that break the chunk shape raise invalid_response."""
    with pytest.raises(RetryableError) as info:
        CHAT.new_assembler().feed(sse(bad)[0])
    assert info.value.error_type == "invalid_response"


def test_chat_done_without_any_chunk_is_invalid() -> None:
    """A stream of only [DONE] carries no completion: invalid_response."""
    assembler = CHAT.new_assembler()
    assembler.feed(SSEEvent(None, "[DONE]"))
    with pytest.raises(RetryableError, match="no completion chunk"):
        assembler.finish()
