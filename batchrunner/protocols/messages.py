"""The Anthropic-style Messages convention (`POST /messages`): requests, responses, streams.

Pure: builds request bodies, reads response bodies and folds SSE events into the Message a
non-streamed call returns. It never sends anything.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from batchrunner.protocols.base import (
    estimate_tokens,
    invalid_response,
    json_text,
    load_event,
    require_str,
    require_tokens,
    set_stream,
    start_body,
    stream_error,
    text_or_none,
    usage_int,
)
from batchrunner.protocols.images import IMAGE_TOKENS, without_images
from batchrunner.protocols.structured import add_answer_tool
from batchrunner.records import Api, Completion, JSONObject, Request, Row, ToolCall

if TYPE_CHECKING:
    from batchrunner.records import Shape
    from batchrunner.spec import RequestSpec
    from batchrunner.sse import SSEEvent

_EVENTS = frozenset(
    {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "error",
    }
)
# delta type -> the block field it appends to
_TEXT_DELTAS = {"text_delta": "text", "thinking_delta": "thinking"}


class MessagesProtocol:
    """Anthropic Messages: `system` is a top-level field; `max_tokens` is required."""

    name: Api = "messages"
    path: str = "/messages"

    def build_body(
        self,
        source: object,
        defaults: RequestSpec,
        *,
        shape: Shape = "simple",
        api: Api | None = None,
        where: str = "",
    ) -> tuple[JSONObject, int]:
        """The body for a row and its max_tokens; job defaults fill model, max_tokens,
        system and temperature where the row has none."""
        body = start_body(source, self.name, shape=shape, row_api=api, where=where)
        # Inline rather than set_default/require_*: the validation pass runs this once per
        # input row, and the calls were a third of its cost.
        get = body.get
        if get("model") is None:
            body["model"] = defaults.model
        if get("max_tokens") is None:
            body["max_tokens"] = defaults.max_tokens
        if defaults.system is not None and get("system") is None:
            body["system"] = defaults.system
        if defaults.temperature is not None and get("temperature") is None:
            body["temperature"] = defaults.temperature
        if defaults.json_schema is not None:
            add_answer_tool(body, defaults.json_schema, where)
        model, max_tokens = body["model"], body["max_tokens"]
        if type(model) is not str or not model:
            require_str(body, "model", where)  # raises, naming what the row holds
        if type(max_tokens) is not int or max_tokens < 1:
            max_tokens = require_tokens(body, "max_tokens", where)
        return body, max_tokens

    def build_request(self, row: Row, defaults: RequestSpec, *, stream: bool) -> Request:
        """The request for `row`: `build_body`, the stream flag and a token estimate."""
        body, max_tokens = self.build_body(
            row.body, defaults, shape=row.shape, api=row.api, where=row.where
        )
        set_stream(body, stream, include_usage=False)
        messages, images = body["messages"], 0
        if row.body.get("images") and row.shape == "simple":
            messages, images = without_images(messages)
        return Request(
            row_index=row.index,
            row_id=row.id,
            api=self.name,
            path=self.path,
            body=body,
            stream=stream,
            est_input_tokens=images * IMAGE_TOKENS
            + estimate_tokens(messages, body.get("system"), body.get("tools")),
            max_tokens=max_tokens,
        )

    def parse_response(self, body: JSONObject) -> Completion:
        """Id, model, all text blocks joined, stop_reason and token counts of a Message."""
        if not isinstance(body, dict):
            raise invalid_response("response body is not a JSON object")
        response_id = body.get("id")
        content = body.get("content")
        if not isinstance(response_id, str):
            raise invalid_response("response has no id")
        if not isinstance(content, list):
            raise invalid_response("response has no content list")
        text = "".join(
            block["text"]
            for block in content
            if isinstance(block, dict)
            and block.get("type") == "text"
            and isinstance(block.get("text"), str)
        )
        model = body.get("model")
        stop_reason = body.get("stop_reason")
        usage = body.get("usage")
        return Completion(
            response_id=response_id,
            model=model if isinstance(model, str) else None,
            text=text,
            stop_reason=stop_reason if isinstance(stop_reason, str) else None,
            input_tokens=usage_int(usage, "input_tokens"),
            output_tokens=usage_int(usage, "output_tokens"),
            tool_calls=tuple(
                _tool_call(block)
                for block in content
                if isinstance(block, dict) and block.get("type") == "tool_use"
            ),
        )

    def new_assembler(self) -> MessagesAssembler:
        return MessagesAssembler()


class _Block:
    """One content block being streamed: its start shell plus appended fragments."""

    __slots__ = ("fields", "json_parts", "parts")

    def __init__(self, fields: JSONObject) -> None:
        self.fields = fields
        self.parts: dict[str, list[str]] = {}
        self.json_parts: list[str] | None = None

    def build(self, index: int) -> JSONObject:
        block = dict(self.fields)
        for key, parts in self.parts.items():
            start = block.get(key)
            block[key] = (start if isinstance(start, str) else "") + "".join(parts)
        if self.json_parts is not None:
            raw = "".join(self.json_parts)
            try:
                block["input"] = json.loads(raw) if raw else {}
            except ValueError as exc:
                raise invalid_response(f"content block {index}: tool input is not JSON") from exc
        return block


class MessagesAssembler:
    """Folds a Messages SSE stream into the Message a non-streamed call returns."""

    def __init__(self) -> None:
        self._message: JSONObject | None = None
        self._blocks: dict[int, _Block] = {}
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, event: SSEEvent) -> None:
        """Apply one event; pings, unknown events and anything after message_stop are ignored."""
        if self._done or (event.event is not None and event.event not in _EVENTS):
            return
        data = load_event(event.data)
        kind = data.get("type", event.event)
        if kind == "error" or event.event == "error":
            raise stream_error(data, "api_error")
        if kind == "message_start":
            message = data.get("message")
            if not isinstance(message, dict):
                raise invalid_response("message_start without a message")
            # Copy the usage dict: message_delta merges into it.
            usage = message.get("usage")
            self._message = {**message, "usage": dict(usage) if isinstance(usage, dict) else {}}
            return
        if kind not in _EVENTS:
            return  # an event type this client does not know yet
        message = self._message
        if message is None:
            raise invalid_response(f"{kind} before message_start")
        if kind == "content_block_start":
            self._start_block(data)
        elif kind == "content_block_delta":
            self._apply_delta(data)
        elif kind == "message_delta":
            delta = data.get("delta")
            if isinstance(delta, dict):
                message.update(delta)
            usage = data.get("usage")
            if isinstance(usage, dict):
                # Cumulative counts; a null means "unchanged", as the SDK reads it.
                message["usage"].update((k, v) for k, v in usage.items() if v is not None)
        elif kind == "message_stop":
            self._done = True
        # content_block_stop: a block's input is parsed in finish(), once it is complete.

    def _start_block(self, data: JSONObject) -> None:
        index = data.get("index")
        block = data.get("content_block")
        if not isinstance(index, int) or not isinstance(block, dict):
            raise invalid_response("content_block_start without an index or a block")
        self._blocks[index] = _Block(dict(block))

    def _apply_delta(self, data: JSONObject) -> None:
        index = data.get("index")
        delta = data.get("delta")
        block = self._blocks.get(index) if isinstance(index, int) else None
        if block is None or not isinstance(delta, dict):
            raise invalid_response(f"content_block_delta for unknown block {index!r}")
        kind = delta.get("type")
        if kind in _TEXT_DELTAS:
            key = _TEXT_DELTAS[kind]
            block.parts.setdefault(key, []).append(_text(delta, key))
        elif kind == "input_json_delta":
            if block.json_parts is None:
                block.json_parts = []
            block.json_parts.append(_text(delta, "partial_json"))
        elif kind == "signature_delta":
            block.fields["signature"] = _text(delta, "signature")
        elif kind == "citations_delta":
            citations = block.fields.get("citations")
            block.fields["citations"] = [
                *(citations if isinstance(citations, list) else []),
                delta.get("citation"),
            ]

    def finish(self) -> JSONObject:
        """The assembled Message; raises ResponseFormatError unless message_stop arrived."""
        if not self._done or self._message is None:
            raise invalid_response("stream ended before message_stop")
        content = [self._blocks[i].build(i) for i in sorted(self._blocks)]
        return {**self._message, "content": content}


def _tool_call(block: JSONObject) -> ToolCall:
    """A `tool_use` block as a tool_calls entry: its input object as JSON text."""
    tool_input = block.get("input")
    return {
        "id": text_or_none(block.get("id")),
        "name": text_or_none(block.get("name")),
        "arguments": None if tool_input is None else json_text(tool_input),
    }


def _text(delta: JSONObject, key: str) -> str:
    value = delta.get(key)
    if not isinstance(value, str):
        raise invalid_response(f"{delta.get('type')} without a string {key}")
    return value


MESSAGES = MessagesProtocol()
