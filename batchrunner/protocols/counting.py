"""Token counting (`POST {base}/messages/count_tokens`): its request body and its answer.

The endpoint takes a Messages body without the generation settings (`max_tokens`,
`stream`, sampling) and answers `{"input_tokens": N}`. A chat-completions request is
converted to that shape first: system and developer messages become `system`, content
parts become blocks, tool calls `tool_use` blocks, tool messages `tool_result` blocks,
function tools Anthropic tools. The count is then the Messages convention's, an
approximation of what a chat endpoint bills. Pure: no IO.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from batchrunner.protocols.base import invalid_response
from batchrunner.protocols.messages import MessagesAssembler
from batchrunner.records import Completion, Request

if TYPE_CHECKING:
    from batchrunner.records import JSONObject

COUNT_PATH = "/messages/count_tokens"
# What count_tokens accepts besides messages (the API reference, section 5).
_COUNTED = ("model", "system", "tools", "tool_choice", "thinking", "cache_control", "output_config")
_TOOL_CHOICE = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}


def count_request(request: Request) -> Request:
    """The count_tokens request for a generation request of either convention."""
    body = _from_chat(request.body) if request.api == "chat" else request.body
    count_body = {"messages": body["messages"]}
    count_body.update((key, body[key]) for key in _COUNTED if body.get(key) is not None)
    return Request(
        row_index=request.row_index,
        row_id=request.row_id,
        api="messages",
        path=COUNT_PATH,
        body=count_body,
    )


class CountReader:
    """Reads a count_tokens answer into a Completion whose `input_tokens` is the count."""

    def parse_response(self, body: JSONObject) -> Completion:
        count = body.get("input_tokens") if isinstance(body, dict) else None
        if type(count) is not int or count < 0:
            raise invalid_response("count_tokens answer has no input_tokens count")
        return Completion(
            response_id=None,
            model=None,
            text="",
            stop_reason=None,
            input_tokens=count,
            output_tokens=None,
        )

    def new_assembler(self) -> MessagesAssembler:
        # Never used: a count is not streamed. The Messages one, were a server to stream.
        return MessagesAssembler()


def _from_chat(body: JSONObject) -> JSONObject:
    """A chat-completions body in the Messages shape, as far as counting needs."""
    system: list[str] = []
    messages: list[JSONObject] = []
    for message in body.get("messages", []):
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.append(_text(content))
        elif role == "assistant":
            blocks = _blocks(content) + [_tool_use(c) for c in message.get("tool_calls") or []]
            if blocks:
                messages.append({"role": "assistant", "content": blocks})
        elif role in ("tool", "function"):
            result = {"type": "tool_result", "tool_use_id": str(message.get("tool_call_id"))}
            messages.append({"role": "user", "content": [{**result, "content": _text(content)}]})
        else:
            messages.append({"role": "user", "content": _blocks(content) or _text(content)})
    out: JSONObject = {"model": body.get("model"), "messages": messages}
    if system:
        out["system"] = "\n\n".join(system)
    tools = [_tool(t) for t in body.get("tools") or [] if isinstance(t, dict)]
    if tools:
        out["tools"] = tools
    choice = body.get("tool_choice")
    if isinstance(choice, str) and choice in _TOOL_CHOICE:
        out["tool_choice"] = _TOOL_CHOICE[choice]
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out["tool_choice"] = {"type": "tool", "name": choice["function"].get("name")}
    return out


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _blocks(content: Any) -> list[JSONObject]:
    """Content parts as Messages blocks: text, and images (a data: URL as base64)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[JSONObject] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and part.get("text"):
            blocks.append({"type": "text", "text": part["text"]})
        elif part.get("type") == "image_url" and isinstance(part.get("image_url"), dict):
            blocks.append({"type": "image", "source": _image_source(part["image_url"])})
    return blocks


def _image_source(image: JSONObject) -> JSONObject:
    url = str(image.get("url", ""))
    head, sep, data = url.partition(";base64,")
    if url.startswith("data:") and sep:
        return {"type": "base64", "media_type": head.removeprefix("data:"), "data": data}
    return {"type": "url", "url": url}


def _tool_use(call: Any) -> JSONObject:
    function = call.get("function") if isinstance(call, dict) else None
    function = function if isinstance(function, dict) else {}
    try:
        arguments = json.loads(function.get("arguments") or "{}")
    except (TypeError, ValueError):
        arguments = {"arguments": function.get("arguments")}
    return {
        "type": "tool_use",
        "id": str(call.get("id") if isinstance(call, dict) else ""),
        "name": str(function.get("name", "")),
        "input": arguments if isinstance(arguments, dict) else {"value": arguments},
    }


def _tool(tool: JSONObject) -> JSONObject:
    nested = tool.get("function")
    function: JSONObject = nested if isinstance(nested, dict) else tool
    out: JSONObject = {"name": function.get("name")}
    if function.get("description") is not None:
        out["description"] = function["description"]
    out["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
    return out
