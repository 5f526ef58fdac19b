"""Validation of `POST /v1/messages` and `/v1/messages/count_tokens` bodies (Anthropic).

Turns a JSON body into an `Ask` or raises ApiError (400 / 404) with messages worded like
the real service, so a job that the real API would reject is rejected here too. Pure: no
IO, no state, no timing. chat_validation holds the OpenAI convention's rules.
"""

from __future__ import annotations

from typing import Any, TypeGuard

from batchrunner.fakeapi.answers import ToolSpec, input_tokens, prompt_text
from batchrunner.fakeapi.ask import Ask
from batchrunner.fakeapi.images import messages_image_problem
from batchrunner.fakeapi.shapes import ApiError

_ANTHROPIC_ROLES = ("user", "assistant")


def _bad(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_anthropic_content(content: Any, where: str) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _bad(f"{where}: Input should be a valid list")
    for j, block in enumerate(content):
        if not isinstance(block, dict):
            raise _bad(f"{where}.{j}: Input should be a valid dictionary")
        kind = block.get("type")
        if not isinstance(kind, str):
            raise _bad(f"{where}.{j}.type: Field required")
        if kind == "text" and not isinstance(block.get("text"), str):
            raise _bad(f"{where}.{j}.text: Field required")
        if kind == "image" and (problem := messages_image_problem(block)) is not None:
            raise _bad(f"{where}.{j}.image.{problem}")


def _check_anthropic_messages(messages: Any) -> None:
    if messages is None:
        raise _bad("messages: Field required")
    if not isinstance(messages, list):
        raise _bad("messages: Input should be a valid list")
    if not messages:
        raise _bad("messages: at least one message is required")
    last = len(messages) - 1
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _bad(f"messages.{i}: Input should be a valid dictionary")
        if message.get("role") not in _ANTHROPIC_ROLES:
            raise _bad(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if "content" not in message:
            raise _bad(f"messages.{i}.content: Field required")
        content = message["content"]
        _check_anthropic_content(content, f"messages.{i}.content")
        if content in ("", []) and not (i == last and message["role"] == "assistant"):
            raise _bad(
                f"messages.{i}: all messages must have non-empty content except for "
                "the optional final assistant message"
            )


def _check_range(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if not _is_number(value):
        raise _bad(f"{name}: Input should be a valid number")
    if value < low:
        raise _bad(f"{name}: Input should be greater than or equal to {low:g}")
    if value > high:
        raise _bad(f"{name}: Input should be less than or equal to {high:g}")


def _anthropic_tools(body: dict[str, Any]) -> tuple[tuple[ToolSpec, ...], str]:
    tools = body.get("tools")
    if tools is None:
        return (), "auto"
    if not isinstance(tools, list):
        raise _bad("tools: Input should be a valid list")
    specs = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _bad(f"tools.{i}.name: Field required")
        schema = tool.get("input_schema")
        if isinstance(schema, dict):
            specs.append(ToolSpec(tool["name"], schema))
    choice = body.get("tool_choice")
    mode = "auto"
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "tool":
            mode = str(choice.get("name"))
        elif kind in ("any", "none"):
            mode = str(kind)
    return tuple(specs), mode


def _thinking(body: dict[str, Any], max_tokens: int | None) -> bool:
    thinking = body.get("thinking")
    if thinking is None:
        return False
    if not isinstance(thinking, dict) or thinking.get("type") not in (
        "enabled",
        "disabled",
        "adaptive",
    ):
        raise _bad("thinking: Input tag does not match 'enabled', 'disabled' or 'adaptive'")
    if thinking["type"] == "disabled":
        return False
    if thinking["type"] == "enabled":
        budget = thinking.get("budget_tokens")
        if not _is_int(budget):
            raise _bad("thinking.enabled.budget_tokens: Field required")
        if budget < 1024:
            raise _bad(
                "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
            )
        if max_tokens is not None and budget >= max_tokens:
            raise _bad("`max_tokens` must be greater than `thinking.budget_tokens`")
    if body.get("temperature") not in (None, 1, 1.0):
        raise _bad("`temperature` may only be set to 1 when thinking is enabled")
    return True


def _check_model(body: dict[str, Any], models: tuple[str, ...]) -> str:
    model = body.get("model")
    if model is None:
        raise _bad("model: Field required")
    if not isinstance(model, str):
        raise _bad("model: Input should be a valid string")
    if model not in models:
        raise ApiError(404, "not_found_error", f"model: {model}")
    return model


def _check_system(body: dict[str, Any]) -> None:
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        _check_anthropic_content(system, "system")


def parse_messages(body: dict[str, Any], models: tuple[str, ...]) -> Ask:
    """Validate a `POST /v1/messages` body (Anthropic rules and wording)."""
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise _bad("max_tokens: Field required")
    if not _is_int(max_tokens):
        raise _bad("max_tokens: Input should be a valid integer")
    if max_tokens < 1:
        raise _bad("max_tokens: Input should be greater than or equal to 1")
    _check_anthropic_messages(body.get("messages"))
    _check_system(body)
    _check_range(body, "temperature", 0, 1)
    _check_range(body, "top_p", 0, 1)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream: Input should be a valid boolean")
    stops = body.get("stop_sequences") or []
    if not isinstance(stops, list) or not all(isinstance(stop, str) for stop in stops):
        raise _bad("stop_sequences: Input should be a valid list")
    tools, mode = _anthropic_tools(body)
    thinking = _thinking(body, max_tokens)
    model = _check_model(body, models)
    return Ask(
        model=model,
        prompt=prompt_text(body["messages"]),
        input_tokens=input_tokens(body),
        max_tokens=max_tokens,
        stream=stream,
        thinking=thinking,
        tools=tools,
        tool_mode=mode,
        stop_sequences=tuple(stops),
    )


def parse_count_tokens(body: dict[str, Any], models: tuple[str, ...]) -> int:
    """Validate a `POST /v1/messages/count_tokens` body; returns its input tokens."""
    _check_anthropic_messages(body.get("messages"))
    _check_system(body)
    _check_model(body, models)
    return input_tokens(body)
