"""The OpenAI-style chat completions convention (`POST /chat/completions`).

Pure: builds request bodies, reads response bodies and folds `chat.completion.chunk`
events into the `chat.completion` object a non-streamed call returns. It never sends anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from batchrunner.errors import SourceError
from batchrunner.protocols.base import (
    estimate_tokens,
    invalid_response,
    json_text,
    load_event,
    require_str,
    require_tokens,
    set_default,
    set_stream,
    start_body,
    stream_error,
    text_or_none,
    usage_int,
)
from batchrunner.protocols.images import IMAGE_TOKENS, without_images
from batchrunner.protocols.structured import add_response_format
from batchrunner.records import Api, Completion, JSONObject, Request, Row, ToolCall, json_kind

if TYPE_CHECKING:
    from batchrunner.records import Shape
    from batchrunner.spec import RequestSpec
    from batchrunner.sse import SSEEvent

_SYSTEM_ROLES = frozenset({"system", "developer"})
_CHUNK_FIELDS = ("id", "created", "model", "system_fingerprint", "service_tier")


class ChatProtocol:
    """OpenAI chat completions: the system prompt is a leading message, not a field."""

    name: Api = "chat"
    path: str = "/chat/completions"

    def build_body(
        self,
        source: object,
        defaults: RequestSpec,
        *,
        shape: Shape = "simple",
        api: Api | None = None,
        where: str = "",
    ) -> tuple[JSONObject, int]:
        """The body for a row and its token limit; job defaults fill model, max_tokens,
        system (a leading system message) and temperature where the row has none."""
        body = start_body(source, self.name, shape=shape, row_api=api, where=where)
        messages: list[Any] = body["messages"]
        leading_system = messages[0].get("role") in _SYSTEM_ROLES
        # Only a simple row's `system` is ours to translate; a batch body is sent as is.
        system = body.pop("system", None) if shape == "simple" else None
        if system is not None:
            if leading_system:
                raise SourceError(where, "the row has a system field and a leading system message")
            if not isinstance(system, str | list):
                raise SourceError(where, f"system must be a string, got {json_kind(system)}")
            messages.insert(0, {"role": "system", "content": system})
        elif defaults.system is not None and not leading_system:
            messages.insert(0, {"role": "system", "content": defaults.system})
        set_default(body, "model", defaults.model)
        set_default(body, "temperature", defaults.temperature)
        if defaults.json_schema is not None:
            add_response_format(body, defaults.json_schema, where)
        if body.get("max_completion_tokens") is not None:
            max_tokens = require_tokens(body, "max_completion_tokens", where)
        else:
            set_default(body, "max_tokens", defaults.max_tokens)
            max_tokens = require_tokens(body, "max_tokens", where)
        require_str(body, "model", where)
        return body, max_tokens

    def build_request(self, row: Row, defaults: RequestSpec, *, stream: bool) -> Request:
        """The request for `row`: `build_body`, the stream options and a token estimate."""
        body, max_tokens = self.build_body(
            row.body, defaults, shape=row.shape, api=row.api, where=row.where
        )
        set_stream(body, stream, include_usage=True)
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
            est_input_tokens=images * IMAGE_TOKENS + estimate_tokens(messages, body.get("tools")),
            max_tokens=max_tokens,
        )

    def parse_response(self, body: JSONObject) -> Completion:
        """Id, model, the first choice's text and finish_reason, and token counts."""
        if not isinstance(body, dict):
            raise invalid_response("response body is not a JSON object")
        response_id = body.get("id")
        choices = body.get("choices")
        if not isinstance(response_id, str):
            raise invalid_response("response has no id")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise invalid_response("response has no choices")
        message = choices[0].get("message")
        if not isinstance(message, dict):
            raise invalid_response("response choice has no message")
        model = body.get("model")
        finish_reason = choices[0].get("finish_reason")
        usage = body.get("usage")
        return Completion(
            response_id=response_id,
            model=model if isinstance(model, str) else None,
            text=_message_text(message.get("content")),
            stop_reason=finish_reason if isinstance(finish_reason, str) else None,
            input_tokens=usage_int(usage, "prompt_tokens"),
            output_tokens=usage_int(usage, "completion_tokens"),
            tool_calls=_tool_calls(message.get("tool_calls")),
        )

    def new_assembler(self) -> ChatAssembler:
        return ChatAssembler()


def _message_text(content: object) -> str:
    """A reply's text: a string, or the text parts of a content array (some servers send one)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""  # None: the reply is only tool calls


def _tool_calls(calls: object) -> tuple[ToolCall, ...]:
    """A message's `tool_calls` as tool_calls entries: `function` calls (arguments as the
    server sent them, JSON text), and `custom` tool calls (their free-form input)."""
    if not isinstance(calls, list):
        return ()
    out: list[ToolCall] = []
    for call in calls:
        if not isinstance(call, dict):
            continue
        kind = call.get("type") if isinstance(call.get("type"), str) else "function"
        inner = call.get(kind)
        inner = inner if isinstance(inner, dict) else {}
        arguments = inner.get("arguments" if kind == "function" else "input")
        if arguments is not None and not isinstance(arguments, str):
            arguments = json_text(arguments)  # a server that sent an object, not its text
        out.append(
            {
                "id": text_or_none(call.get("id")),
                "name": text_or_none(inner.get("name")),
                "arguments": arguments,
            }
        )
    return tuple(out)


class _ToolCall:
    __slots__ = ("arguments", "id", "name", "type")

    def __init__(self) -> None:
        self.id: str | None = None
        self.type = "function"
        self.name = ""
        self.arguments: list[str] = []

    def apply(self, delta: JSONObject) -> None:
        # id and name come whole in the first fragment; some servers repeat them on every
        # chunk, so the first wins instead of concatenating (the SDK's behaviour doubles them).
        if isinstance(delta.get("id"), str) and self.id is None:
            self.id = delta["id"]
        if isinstance(delta.get("type"), str):
            self.type = delta["type"]
        function = delta.get("function")
        if isinstance(function, dict):
            name = function.get("name")
            if isinstance(name, str) and not self.name:
                self.name = name
            if isinstance(function.get("arguments"), str):
                self.arguments.append(function["arguments"])

    def build(self) -> JSONObject:
        function = {"name": self.name, "arguments": "".join(self.arguments)}
        return {"id": self.id, "type": self.type, "function": function}


class _Choice:
    __slots__ = ("content", "finish_reason", "logprobs", "refusal", "role", "tool_calls")

    def __init__(self) -> None:
        self.role = "assistant"
        self.content: list[str] = []
        self.refusal: list[str] | None = None
        self.tool_calls: dict[int, _ToolCall] = {}
        self.finish_reason: str | None = None
        self.logprobs: dict[str, list[Any]] | None = None

    def apply(self, choice: JSONObject) -> None:
        delta = choice.get("delta")
        if delta is None:
            delta = {}
        if not isinstance(delta, dict):
            raise invalid_response("chunk choice delta is not an object")
        if isinstance(delta.get("role"), str):
            self.role = delta["role"]
        if isinstance(delta.get("content"), str):
            self.content.append(delta["content"])
        if isinstance(delta.get("refusal"), str):
            self.refusal = [*(self.refusal or []), delta["refusal"]]
        tool_calls = delta.get("tool_calls")
        if isinstance(tool_calls, list):
            for call in tool_calls:
                if isinstance(call, dict):
                    self._tool_call(call).apply(call)
        if isinstance(choice.get("finish_reason"), str):
            self.finish_reason = choice["finish_reason"]
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict):
            merged = self.logprobs if self.logprobs is not None else {}
            for key in ("content", "refusal"):
                if isinstance(logprobs.get(key), list):
                    merged.setdefault(key, []).extend(logprobs[key])
            self.logprobs = merged

    def _tool_call(self, call: JSONObject) -> _ToolCall:
        index = call.get("index")
        if not isinstance(index, int):
            # Servers that leave index out send one call at a time: a new id opens a new one.
            if call.get("id") or not self.tool_calls:
                index = len(self.tool_calls)
            else:
                index = max(self.tool_calls)
        return self.tool_calls.setdefault(index, _ToolCall())

    def build(self, index: int) -> JSONObject:
        text = "".join(self.content)
        refusal = None if self.refusal is None else "".join(self.refusal)
        calls = [self.tool_calls[i].build() for i in sorted(self.tool_calls)]
        # As in a non-streamed reply: content is null when the answer is only tool calls
        # or a refusal.
        content = text if text or not (calls or refusal is not None) else None
        message: JSONObject = {"role": self.role, "content": content, "refusal": refusal}
        if calls:
            message["tool_calls"] = calls
        logprobs = None
        if self.logprobs is not None:
            logprobs = {
                "content": self.logprobs.get("content"),
                "refusal": self.logprobs.get("refusal"),
            }
        return {
            "index": index,
            "message": message,
            "logprobs": logprobs,
            "finish_reason": self.finish_reason,
        }


class ChatAssembler:
    """Folds a chat completions SSE stream into the `chat.completion` it stands for."""

    def __init__(self) -> None:
        self._fields: JSONObject = {}
        self._choices: dict[int, _Choice] = {}
        self._usage: JSONObject | None = None
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, event: SSEEvent) -> None:
        """Apply one chunk; `[DONE]` ends the stream, an `{"error": ...}` chunk raises."""
        if self._done or event.event not in (None, "message", "error"):
            return  # the chat convention names no events; a named one is not ours
        if event.data.strip() == "[DONE]":
            self._done = True
            return
        chunk = load_event(event.data)
        if event.event == "error" or chunk.get("error") is not None:
            raise stream_error(chunk, "server_error")
        for key in _CHUNK_FIELDS:
            if chunk.get(key) is not None:
                self._fields[key] = chunk[key]
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        choices = chunk.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if not isinstance(choice, dict):
                    raise invalid_response("chunk choice is not an object")
                index = choice.get("index", 0)
                if not isinstance(index, int):
                    raise invalid_response(f"chunk choice index is {json_kind(index)}")
                self._choices.setdefault(index, _Choice()).apply(choice)

    def finish(self) -> JSONObject:
        """The assembled completion; raises ResponseFormatError unless `[DONE]` arrived."""
        if not self._done:
            raise invalid_response("stream ended before [DONE]")
        if "id" not in self._fields:
            raise invalid_response("stream carried no completion chunk")
        fields = self._fields
        body: JSONObject = {
            "id": fields["id"],
            "object": "chat.completion",
            "created": fields.get("created"),
            "model": fields.get("model"),
            "choices": [self._choices[i].build(i) for i in sorted(self._choices)],
            "system_fingerprint": fields.get("system_fingerprint"),
        }
        if "service_tier" in fields:
            body["service_tier"] = fields["service_tier"]
        if self._usage is not None:  # no usage chunk: leave it out rather than invent numbers
            body["usage"] = self._usage
        return body


CHAT = ChatProtocol()
