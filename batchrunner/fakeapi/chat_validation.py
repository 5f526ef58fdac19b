"""Validation of `POST /v1/chat/completions` bodies, with OpenAI's error wording and codes.

Turns a JSON body into an `Ask` or raises ApiError (400 / 404). Pure: no IO, no state.
"""

from __future__ import annotations

import re
from typing import Any

from batchrunner.fakeapi.answers import ToolSpec, input_tokens, prompt_text
from batchrunner.fakeapi.ask import Ask
from batchrunner.fakeapi.images import chat_image_problem
from batchrunner.fakeapi.shapes import ApiError

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_ROLE_LIST = "'system', 'assistant', 'user', 'function', 'tool', and 'developer'"
_FORMATS = ("text", "json_object", "json_schema")
_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def _bad(message: str, param: str | None, code: str | None) -> ApiError:
    return ApiError(400, "invalid_request_error", message, param=param, code=code)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _missing(param: str) -> ApiError:
    return _bad(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def _wrong_type(param: str, expected: str, value: Any) -> ApiError:
    return _bad(
        f"Invalid type for '{param}': expected {expected}, but got {_json_type(value)} instead.",
        param,
        "invalid_type",
    )


def _check_message(i: int, message: Any) -> None:
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        raise _wrong_type(where, "an object", message)
    role = message.get("role")
    if role is None:
        raise _missing(f"{where}.role")
    if role not in _ROLES:
        raise _bad(
            f"Invalid value: '{role}'. Supported values are: {_ROLE_LIST}.",
            f"{where}.role",
            "invalid_value",
        )
    content = message.get("content")
    if content is None:
        if role == "assistant" and message.get("tool_calls"):
            return
        if "content" not in message or role != "assistant":
            raise _missing(f"{where}.content")
    elif not isinstance(content, str | list):
        raise _wrong_type(f"{where}.content", "one of a string or array of objects", content)
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise _missing(f"{where}.tool_call_id")
    for j, part in enumerate(content if isinstance(content, list) else []):
        is_image = isinstance(part, dict) and part.get("type") == "image_url"
        if is_image and (problem := chat_image_problem(part)) is not None:
            param, _, reason = problem.partition(": ")
            raise _bad(reason, f"{where}.content[{j}].{param}", "invalid_value")


def _check_number(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _wrong_type(name, "a decimal", value)
    if value > high:
        raise _bad(
            f"Invalid '{name}': decimal above maximum value. "
            f"Expected a value <= {high:g}, but got {value} instead.",
            name,
            "decimal_above_max_value",
        )
    if value < low:
        raise _bad(
            f"Invalid '{name}': decimal below minimum value. "
            f"Expected a value >= {low:g}, but got {value} instead.",
            name,
            "decimal_below_min_value",
        )


def _check_int(body: dict[str, Any], name: str, low: int, high: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _wrong_type(name, "an integer", value)
    if value < low:
        raise _bad(
            f"Invalid '{name}': integer below minimum value. "
            f"Expected a value >= {low}, but got {value} instead.",
            name,
            "integer_below_min_value",
        )
    if high is not None and value > high:
        raise _bad(
            f"Invalid '{name}': integer above maximum value. "
            f"Expected a value <= {high}, but got {value} instead.",
            name,
            "integer_above_max_value",
        )
    return value


def _tools(body: dict[str, Any]) -> tuple[tuple[ToolSpec, ...], str]:
    tools = body.get("tools")
    if tools is None:
        return (), "auto"
    if not isinstance(tools, list):
        raise _wrong_type("tools", "an array", tools)
    specs = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            if isinstance(tool, dict) and tool.get("type") not in (None, "function"):
                continue  # custom tools: accepted, never called by this server
            raise _missing(f"tools[{i}].function.name")
        parameters = function.get("parameters")
        specs.append(ToolSpec(function["name"], parameters if isinstance(parameters, dict) else {}))
    choice = body.get("tool_choice")
    mode = "auto"
    if choice in ("none", "required"):
        mode = "none" if choice == "none" else "any"
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        mode = str(choice["function"].get("name"))
    return tuple(specs), mode


def _response_format(body: dict[str, Any]) -> dict[str, Any] | None:
    """The schema of a `json_schema` response_format ({} when it gives none), else None."""
    fmt = body.get("response_format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise _wrong_type("response_format", "an object", fmt)
    kind = fmt.get("type")
    if kind not in _FORMATS:
        raise _bad(
            f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object', and "
            "'json_schema'.",
            "response_format.type",
            "invalid_value",
        )
    if kind != "json_schema":
        return None
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict):
        raise _missing("response_format.json_schema")
    name = spec.get("name")
    if name is None:
        raise _missing("response_format.json_schema.name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise _bad(
            f"Invalid 'response_format.json_schema.name': string does not match pattern. "
            f"Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$', got {name!r}.",
            "response_format.json_schema.name",
            "invalid_value",
        )
    schema = spec.get("schema")
    return schema if isinstance(schema, dict) else {}


def _stops(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list) and all(isinstance(item, str) for item in stop) and len(stop) <= 4:
        return tuple(stop)
    raise _wrong_type("stop", "one of a string or array of up to 4 strings", stop)


def parse_chat(body: dict[str, Any], models: tuple[str, ...]) -> Ask:
    """Validate a `POST /v1/chat/completions` body (OpenAI rules and wording)."""
    model = body.get("model")
    if model is None:
        raise _bad("you must provide a model parameter", None, None)
    if not isinstance(model, str):
        raise _wrong_type("model", "a string", model)
    messages = body.get("messages")
    if messages is None:
        raise _missing("messages")
    if not isinstance(messages, list):
        raise _wrong_type("messages", "an array", messages)
    if not messages:
        raise _bad(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            "messages",
            "empty_array",
        )
    for i, message in enumerate(messages):
        _check_message(i, message)
    _check_number(body, "temperature", 0, 2)
    _check_number(body, "top_p", 0, 1)
    max_tokens = _check_int(body, "max_completion_tokens", 1)
    legacy_max = _check_int(body, "max_tokens", 1)
    n = _check_int(body, "n", 1, 128) or 1
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise _wrong_type("stream", "a boolean", stream)
    options = body.get("stream_options")
    if options is not None and not stream:
        raise _bad(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
            None,
        )
    stops = _stops(body)
    tools, mode = _tools(body)
    json_schema = _response_format(body)
    if model not in models:
        raise ApiError(
            404,
            "invalid_request_error",
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
        )
    return Ask(
        model=model,
        prompt=prompt_text(messages),
        input_tokens=input_tokens(body),
        max_tokens=max_tokens if max_tokens is not None else legacy_max,
        stream=stream,
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        tools=tools,
        tool_mode=mode,
        stop_sequences=stops,
        n=n,
        json_schema=json_schema,
    )
