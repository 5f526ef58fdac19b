"""SSE streams of both conventions, written one event per socket write.

Messages streams follow the Anthropic event order (message_start ... message_stop), chat
streams the OpenAI chunk order (role chunk ... usage chunk, `[DONE]`). The same Answer
gives the same text, usage and stop reason as the plain body. The stream faults
(stream-error, stream-cut) strike after half the deltas. No decisions are made here.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from batchrunner.fakeapi.shapes import (
    FINISH_REASONS,
    STOP_REASONS,
    Convention,
    anthropic_usage,
    chat_usage,
    dumps,
    tool_call_id,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from aiohttp import web

    from batchrunner.fakeapi.answers import Answer

Event = tuple[bytes, bool]  # (bytes to write, whether it is a content delta)

_PING = b'event: ping\ndata: {"type": "ping"}\n\n'
_DONE = b"data: [DONE]\n\n"
_ERRORS: dict[Convention, bytes] = {
    "anthropic": b'event: error\ndata: {"type":"error","error":'
    b'{"type":"overloaded_error","message":"Overloaded"}}\n\n',
    "openai": b'data: {"error":{"message":"The server had an error while processing your '
    b'request. Sorry about that!","type":"server_error","param":null,"code":null}}\n\n',
}
_DELTA_FIELDS = {
    "text": ("text_delta", "text"),
    "thinking": ("thinking_delta", "thinking"),
    "tool_use": ("input_json_delta", "partial_json"),
}


def _text(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _event(name: str, data: object) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + dumps(data) + b"\n\n"


def message_events(
    answer: Answer, *, response_id: str, model: str, input_tokens: int
) -> Iterator[Event]:
    """The Anthropic SSE events of `answer`, in order."""
    message: dict[str, object] = {
        "id": response_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": anthropic_usage(input_tokens, 1),
    }
    yield _event("message_start", {"type": "message_start", "message": message}), False
    for index, block in enumerate(answer.blocks):
        shell: dict[str, object]
        if block.kind == "thinking":
            shell = {"type": "thinking", "thinking": "", "signature": ""}
        elif block.kind == "tool_use":
            tool_id = tool_call_id("anthropic", response_id, index)
            shell = {"type": "tool_use", "id": tool_id, "name": block.name, "input": {}}
        else:
            shell = {"type": "text", "text": ""}
        start = {"type": "content_block_start", "index": index, "content_block": shell}
        yield _event("content_block_start", start), False
        if index == 0:
            yield _PING, False
        delta_type, field = _DELTA_FIELDS[block.kind]
        head = (
            'event: content_block_delta\ndata: {"type":"content_block_delta",'
            f'"index":{index},"delta":{{"type":"{delta_type}","{field}":'
        )
        if block.kind == "tool_use":
            yield (head + '""}}\n\n').encode(), False  # the real service opens with ""
        for piece in block.pieces:
            yield (head + _text(piece) + "}}\n\n").encode(), True
        if block.kind == "thinking":
            signature = {"type": "signature_delta", "signature": block.signature}
            delta = {"type": "content_block_delta", "index": index, "delta": signature}
            yield _event("content_block_delta", delta), False
        yield _event("content_block_stop", {"type": "content_block_stop", "index": index}), False
    usage = anthropic_usage(input_tokens, answer.output_tokens)
    del usage["service_tier"]  # message_delta usage carries counts only
    delta = {
        "type": "message_delta",
        "delta": {
            "stop_reason": STOP_REASONS.get(answer.stop, answer.stop),
            "stop_sequence": answer.stop_sequence,
        },
        "usage": usage,
    }
    yield _event("message_delta", delta), False
    yield _event("message_stop", {"type": "message_stop"}), False


def chat_chunks(
    answer: Answer,
    *,
    response_id: str,
    created: int,
    model: str,
    fingerprint: str,
    input_tokens: int,
    n: int,
    include_usage: bool,
) -> Iterator[Event]:
    """The OpenAI SSE chunks of `answer` for `n` identical choices, then `[DONE]`."""
    head = (
        f'data: {{"id":"{response_id}","object":"chat.completion.chunk","created":{created},'
        f'"model":{_text(model)},"system_fingerprint":"{fingerprint}","choices":[{{"index":'
    )
    usage_tail = ',"usage":null' if include_usage else ""
    open_tail = ',"logprobs":null,"finish_reason":null}]' + usage_tail + "}\n\n"
    finish = FINISH_REASONS[answer.stop]
    close_tail = f',"logprobs":null,"finish_reason":"{finish}"}}]' + usage_tail + "}\n\n"
    for choice in range(n):
        lead = f'{head}{choice},"delta":'
        for data, is_delta in _choice_deltas(answer, response_id):
            yield (lead + data + open_tail).encode(), is_delta
        yield (lead + "{}" + close_tail).encode(), False
    if include_usage:
        final = {
            "id": response_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": fingerprint,
            "choices": [],
            "usage": chat_usage(input_tokens, answer.output_tokens * n),
        }
        yield b"data: " + dumps(final) + b"\n\n", False
    yield _DONE, False


def _choice_deltas(answer: Answer, response_id: str) -> Iterator[tuple[str, bool]]:
    """One choice's `delta` objects as JSON text (with whether each is a content delta).

    As in the plain body (shapes.chat_body), a tool-calling answer carries `content: null`
    and only its tool calls; thinking blocks have no chat form.
    """
    tools = [block for block in answer.blocks if block.kind == "tool_use"]
    content = "null" if tools else '""'
    yield '{"role":"assistant","content":' + content + ',"refusal":null}', False
    ordinal = 0  # a tool call's `index` counts tool calls, not content blocks
    for index, block in enumerate(answer.blocks):
        if block.kind == "text" and not tools:
            for piece in block.pieces:
                yield '{"content":' + _text(piece) + "}", True
        elif block.kind == "tool_use":
            call = {
                "index": ordinal,
                "id": tool_call_id("openai", response_id, index),
                "type": "function",
                "function": {"name": block.name, "arguments": ""},
            }
            yield dumps({"tool_calls": [call]}).decode(), False
            for piece in block.pieces:
                fragment = f'{{"tool_calls":[{{"index":{ordinal},"function":{{"arguments":'
                yield fragment + _text(piece) + "}}]}", True
            ordinal += 1


def count_deltas(answer: Answer, n: int = 1) -> int:
    """How many content deltas a stream of `answer` carries."""
    return n * sum(len(block.pieces) for block in answer.blocks)


async def write_stream(
    request: web.Request,
    response: web.StreamResponse,
    events: Iterator[Event],
    *,
    conv: Convention,
    fault: str | None = None,
    fault_after: int = 1,
) -> bool:
    """Send `events` (one write each); True when the stream ended normally.

    With `fault` "stream-error" an error event follows the `fault_after`-th delta and the
    stream ends; with "stream-cut" the connection closes right there.
    """
    await response.prepare(request)
    deltas = 0
    for data, is_delta in events:
        await response.write(data)
        if not is_delta or fault is None:
            continue
        deltas += 1
        if deltas < fault_after:
            continue
        if fault == "stream-error":
            await response.write(_ERRORS[conv])
            await response.write_eof()
        elif request.transport is not None:
            request.transport.close()
        return False
    await response.write_eof()
    return True
