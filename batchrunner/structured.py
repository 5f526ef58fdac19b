"""Structured outputs: the --json-schema file, the check of every answer, its typed columns.

`load_schema` reads and checks the schema (config calls it: a bad file is exit 2 before
anything is sent). `OutputCheck` checks one answer: the JSON text of the chat reply, or
the input of the Messages answer tool (`protocols.structured` puts the schema in the
request); a success comes back with `parsed` set, a failure raises InvalidOutputError with
the reason. `parsed_columns` names the typed `parsed.<field>` columns. The only importer of
jsonschema, and only when a schema is used: a run without one is spared its ~9 MB and
~60 ms of imports. Nothing here sends, retries or writes: `attempts` re-asks.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from batchrunner.errors import InvalidOutputError
from batchrunner.protocols.base import json_text
from batchrunner.protocols.structured import schema_name
from batchrunner.records import json_kind

if TYPE_CHECKING:
    from pathlib import Path

    from batchrunner.records import Api, Completion, JSONObject

# JSON Schema type -> the Arrow type (as rundir.arrowtypes.parse_type reads it) of its typed column.
SCALAR_COLUMNS = {"string": "string", "integer": "int64", "number": "double", "boolean": "bool"}
_SHOW = 200  # characters of an answer or a value quoted in a message


def load_schema(path: Path) -> tuple[JSONObject | None, list[str]]:
    """The JSON Schema in `path` and the problems found (then the schema is None).

    It must be a valid schema (of the draft its `$schema` names; 2020-12 when it names
    none) whose top level is an object (`"type": "object"`): both conventions need one
    (chat's `json_schema`, a Messages tool's `input_schema`).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [f"JSON Schema file not found: {path}"]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [f"cannot read JSON Schema file {path}: {exc}"]
    try:
        schema = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        return None, [f"{path}: not JSON: {exc}"]
    if not isinstance(schema, dict):
        return None, [f"{path}: a JSON Schema must be an object, got {json_kind(schema)}"]
    from jsonschema import exceptions as schema_errors
    from jsonschema import validators

    try:
        validators.validator_for(schema).check_schema(schema)
    except schema_errors.SchemaError as exc:
        where = exc.json_path if exc.path else "the top level"
        return None, [f"{path}: not a valid JSON Schema at {where}: {_short(exc.message)}"]
    if schema.get("type") != "object":
        return None, [
            f'{path}: the schema\'s top level must be "type": "object" (a chat json_schema '
            "and a messages tool input both are)"
        ]
    return schema, []


def parsed_columns(schema: JSONObject) -> dict[str, str]:
    """`{field: arrow type}` of the typed columns: every top-level property, when each one
    is a scalar (string, integer, number or boolean; or that or null); else none."""
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return {}
    columns = {}
    for name, sub in properties.items():
        column = _scalar_column(sub)
        if column is None:
            return {}
        columns[str(name)] = column
    return columns


def _scalar_column(schema: object) -> str | None:
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if len(kinds) == 1 else None
    if kind is None:  # an enum (or const) of strings is a string too
        values = schema.get("enum", [schema["const"]] if "const" in schema else None)
        if isinstance(values, list) and values and all(isinstance(v, str) for v in values):
            return "string"
    return SCALAR_COLUMNS.get(kind) if isinstance(kind, str) else None


class OutputCheck:
    """Checks answers against one schema, for one convention (built once per run)."""

    def __init__(self, schema: JSONObject, api: Api) -> None:
        self.api = api
        from jsonschema import exceptions, validators

        self.name = schema_name(schema)
        self._validator = validators.validator_for(schema)(schema)
        self._best_match = exceptions.best_match

    def __call__(self, completion: Completion) -> Completion:
        """`completion` with `parsed` set; raises InvalidOutputError naming what is wrong."""
        text = self._answer(completion)
        try:
            value = json.loads(text, parse_constant=_no_constant)
        except ValueError as exc:
            raise InvalidOutputError(f"the answer is not JSON ({exc}): {_short(text)!r}") from None
        error = self._best_match(self._validator.iter_errors(value))
        if error is not None:
            raise InvalidOutputError(
                f"the answer does not match the schema at {error.json_path}: "
                f"{_short(error.message)}"
            )
        return replace(completion, parsed=json_text(value))

    def _answer(self, completion: Completion) -> str:
        """The answer's JSON text: chat's reply text, or the arguments of the answer tool."""
        if self.api == "chat":
            if not completion.text:
                raise InvalidOutputError("the answer is empty (no text)")
            return completion.text
        for call in completion.tool_calls:
            if call.get("name") == self.name and call.get("arguments") is not None:
                return str(call["arguments"])
        said = f"; it says {_short(completion.text)!r}" if completion.text else ""
        raise InvalidOutputError(f"the answer does not call the tool {self.name!r}{said}")


def _no_constant(name: str) -> Any:
    # json.loads takes NaN and Infinity, which are not JSON (and no schema type holds them).
    raise ValueError(f"{name} is not a JSON value")


def _short(text: str) -> str:
    """Text on one line, at most _SHOW characters of it."""
    flat = " ".join(text.split())
    return flat[:_SHOW] + ("…" if len(flat) > _SHOW else "")
