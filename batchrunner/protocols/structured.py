"""--json-schema in a request: each convention's way of asking for JSON that fits a schema.

Chat: `response_format: {"type": "json_schema", "json_schema": {name, schema, strict}}`.
Messages: a forced tool whose input schema is the schema (`tools` + `tool_choice: {"type":
"tool", "name"}`); the answer is that tool call's input. The Messages convention also has a
newer `output_config` field, but the API reference names it without its shape, while
forced tool use is fully specified, streams through `input_json_delta` like any tool call,
and works with every model that takes tools. Pure: checking the answer against the schema
is `batchrunner.structured`'s job.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from batchrunner.errors import SourceError
from batchrunner.records import json_kind

if TYPE_CHECKING:
    from batchrunner.records import JSONObject

DEFAULT_NAME = "structured_output"
# OpenAI's pattern for a json_schema / function name, Anthropic's for a tool name.
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]+")
_TOOL_DESCRIPTION = (
    "Give your answer by calling this tool: its input is the answer, in the shape of its "
    "input schema."
)


def schema_name(schema: JSONObject) -> str:
    """The name the request gives the schema: its `title` made safe, else DEFAULT_NAME."""
    title = schema.get("title")
    if isinstance(title, str):
        name = _UNSAFE.sub("_", title).strip("_")[:64]
        if name:
            return name
    return DEFAULT_NAME


def is_strict(schema: object) -> bool:
    """Whether the schema fits chat's strict mode: every object lists all its properties
    as required and allows no others. Strict is asked for only then; a server refuses a
    strict schema that does not fit, and the client-side check covers the rest anyway."""
    if isinstance(schema, list):
        return all(is_strict(item) for item in schema)
    if not isinstance(schema, dict):
        return True
    properties = schema.get("properties")
    if isinstance(properties, dict) or schema.get("type") == "object":
        props = properties if isinstance(properties, dict) else {}
        if schema.get("additionalProperties") is not False:
            return False
        required = schema.get("required")
        if not isinstance(required, list) or set(required) != set(props):
            return False
    return all(is_strict(value) for value in schema.values())


def add_response_format(body: JSONObject, schema: JSONObject, where: str) -> None:
    """Chat: ask for the schema in `response_format` (a row that sets its own is refused)."""
    if body.get("response_format") is not None:
        raise SourceError(
            where, "the row sets response_format, which --json-schema sets for every row"
        )
    body["response_format"] = {
        "type": "json_schema",
        "json_schema": {"name": schema_name(schema), "schema": schema, "strict": is_strict(schema)},
    }


def add_answer_tool(body: JSONObject, schema: JSONObject, where: str) -> None:
    """Messages: offer the schema as a tool and force its use. A row's own tools stay
    offered; a row that sets tool_choice, or a tool of the same name, is refused."""
    name = schema_name(schema)
    if body.get("tool_choice") is not None:
        raise SourceError(where, "the row sets tool_choice, which --json-schema sets for every row")
    tools = body.get("tools")
    if tools is None:
        tools = []
    elif not isinstance(tools, list):
        raise SourceError(where, f"tools must be an array, got {json_kind(tools)}")
    if any(isinstance(tool, dict) and tool.get("name") == name for tool in tools):
        raise SourceError(where, f"the row offers a tool named {name!r}, the --json-schema tool")
    answer_tool = {"name": name, "description": _TOOL_DESCRIPTION, "input_schema": schema}
    body["tools"] = [*tools, answer_tool]
    body["tool_choice"] = {"type": "tool", "name": name}
