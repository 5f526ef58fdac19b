"""--json-schema: the schema file, the request shapes, the check of answers, the typed columns.

Pure pieces tested on their own: `structured` (load_schema, parsed_columns, OutputCheck),
`protocols.structured` (what each convention sends), and config (paths, problems,
fingerprint). The end-to-end behaviour against the fake API is test_structured_e2e.py's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchrunner.config import load_job
from batchrunner.errors import ConfigError, InvalidOutputError, SourceError
from batchrunner.protocols import CHAT, MESSAGES
from batchrunner.protocols.structured import (
    DEFAULT_NAME,
    add_answer_tool,
    add_response_format,
    is_strict,
    schema_name,
)
from batchrunner.records import Completion, Row, ToolCall
from batchrunner.spec import RequestSpec
from batchrunner.structured import OutputCheck, load_schema, parsed_columns
from tests.helpers import run_cli, write_jsonl

PERSON: dict[str, Any] = {
    "title": "Person record",
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
        "score": {"type": "number"},
    },
    "required": ["name", "age", "score"],
    "additionalProperties": False,
}


def _completion(text: str = "", *calls: dict[str, str | None]) -> Completion:
    return Completion(
        response_id="r",
        model="m",
        text=text,
        stop_reason="end",
        input_tokens=1,
        output_tokens=1,
        tool_calls=calls,
    )


def _schema_file(tmp_path: Path, value: object, name: str = "schema.json") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value if isinstance(value, str) else json.dumps(value), encoding="utf-8")
    return path


# --- the schema file --------------------------------------------------------------------


def test_load_schema_reads_a_valid_object_schema(tmp_path: Path) -> None:
    """A valid JSON Schema with an object top level loads as is, with no problems."""
    assert load_schema(_schema_file(tmp_path, PERSON)) == (PERSON, [])


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "not JSON"),
        ('{"type": "object", "maxProperties": NaN}', "not JSON: NaN is not a JSON value"),
        ([1, 2], "a JSON Schema must be an object, got an array"),
        ({"type": "object", "properties": {"a": {"type": "text"}}}, "at $.properties.a.type"),
        ({"type": "string"}, 'top level must be "type": "object"'),
        ({"properties": {"a": {}}}, 'top level must be "type": "object"'),
    ],
)
def test_load_schema_names_what_is_wrong(tmp_path: Path, content: object, fragment: str) -> None:
    """Not JSON, not an object, not a valid schema, not an object at the top: each named."""
    schema, problems = load_schema(_schema_file(tmp_path, content))
    assert schema is None and len(problems) == 1
    assert fragment in problems[0] and "schema.json" in problems[0]


def test_load_schema_missing_file(tmp_path: Path) -> None:
    """A schema path that does not exist is a problem naming it."""
    schema, problems = load_schema(tmp_path / "nope.json")
    assert schema is None and problems == [f"JSON Schema file not found: {tmp_path / 'nope.json'}"]


# --- typed columns ----------------------------------------------------------------------


def test_parsed_columns_of_a_flat_object() -> None:
    """Each scalar property gets its Arrow type; `["integer", "null"]` and string enums too."""
    schema = {
        "type": "object",
        "properties": {
            **PERSON["properties"],
            "ok": {"type": "boolean"},
            "n": {"type": ["integer", "null"]},
            "kind": {"enum": ["a", "b"]},
        },
    }
    assert parsed_columns(schema) == {
        "name": "string",
        "age": "int64",
        "score": "double",
        "ok": "bool",
        "n": "int64",
        "kind": "string",
    }


@pytest.mark.parametrize(
    "field",
    [
        {"type": "object", "properties": {}},
        {"type": "array", "items": {"type": "string"}},
        {"type": ["string", "integer"]},
        {"enum": ["a", 1]},
        {},
    ],
)
def test_no_typed_columns_unless_every_field_is_a_scalar(field: dict[str, Any]) -> None:
    """One non-scalar (or untyped) field: only the `parsed` column, no typed ones."""
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "other": field}}
    assert parsed_columns(schema) == {}


# --- what each convention sends ---------------------------------------------------------


def test_schema_name_from_the_title_or_a_default() -> None:
    """The title made safe for both APIs' name patterns, else the default name."""
    assert schema_name(PERSON) == "Person_record"
    assert schema_name({"title": "Ünïcode / title!"}) == "n_code_title"
    assert schema_name({"title": "!!!"}) == schema_name({}) == DEFAULT_NAME
    assert len(schema_name({"title": "x" * 100})) == 64


def test_is_strict_only_for_closed_schemas_with_every_property_required() -> None:
    """Strict mode is asked for only when every object is closed and requires all fields."""
    assert is_strict(PERSON)
    assert not is_strict({**PERSON, "required": ["name"]})
    assert not is_strict({k: v for k, v in PERSON.items() if k != "additionalProperties"})
    nested = {**PERSON, "properties": {**PERSON["properties"], "pet": {"type": "object"}}}
    assert not is_strict({**nested, "required": [*PERSON["required"], "pet"]})


def test_chat_body_carries_the_schema_as_response_format() -> None:
    """Chat: response_format json_schema with name, schema and strict."""
    body, _ = CHAT.build_body({"prompt": "hi"}, RequestSpec(json_schema=PERSON))
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Person_record", "schema": PERSON, "strict": True},
    }


def test_messages_body_forces_the_answer_tool() -> None:
    """Messages: the schema is a tool's input schema, and tool_choice forces that tool;
    a row's own tools stay offered, before it."""
    own = {"name": "lookup", "input_schema": {"type": "object"}}
    body, _ = MESSAGES.build_body({"prompt": "hi", "tools": [own]}, RequestSpec(json_schema=PERSON))
    assert body["tools"][0] == own
    tool = body["tools"][1]
    assert tool["name"] == "Person_record" and tool["input_schema"] == PERSON
    assert body["tool_choice"] == {"type": "tool", "name": "Person_record"}


def test_the_row_is_not_changed_by_the_schema() -> None:
    """Building a body adds the schema to a new body, never to the row's own objects."""
    tools = [{"name": "lookup", "input_schema": {"type": "object"}}]
    row = Row(index=0, id="a", body={"prompt": "hi", "tools": tools})
    MESSAGES.build_request(row, RequestSpec(json_schema=PERSON), stream=False)
    assert row.body["tools"] == tools and len(tools) == 1


@pytest.mark.parametrize(
    ("add", "body", "fragment"),
    [
        (add_response_format, {"response_format": {"type": "text"}}, "sets response_format"),
        (add_answer_tool, {"tool_choice": {"type": "auto"}}, "sets tool_choice"),
        (add_answer_tool, {"tools": {"name": "x"}}, "tools must be an array, got an object"),
        (add_answer_tool, {"tools": [{"name": "Person_record"}]}, "offers a tool named"),
    ],
)
def test_rows_that_clash_with_the_schema_are_refused(add: Any, body: Any, fragment: str) -> None:
    """A row that sets what --json-schema sets is a SourceError naming the field."""
    with pytest.raises(SourceError, match=fragment):
        add(body, PERSON, "in.jsonl:3")


def test_validate_names_the_line_of_a_clashing_row(tmp_path: Path) -> None:
    """`validate --json-schema` stops at a row with its own response_format (exit 2)."""
    rows: list[dict[str, Any]] = [
        {"id": "a", "prompt": "x"},
        {"id": "b", "prompt": "y", "response_format": {}},
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    schema = _schema_file(tmp_path, PERSON)
    res = run_cli(["validate", str(src), "--api", "chat", "--json-schema", str(schema)])
    assert res.exit_code == 2
    assert "in.jsonl:2" in res.stderr and "response_format" in res.stderr
    assert run_cli(["validate", str(src), "--json-schema", str(schema)]).exit_code == 0


# --- checking answers -------------------------------------------------------------------


def test_chat_answer_that_fits_is_parsed_compactly() -> None:
    """The reply text is parsed, checked, and kept as compact JSON in `parsed`."""
    check = OutputCheck(PERSON, "chat")
    done = check(_completion('{ "name": "Ann", "age": 3, "score": 1.5 }'))
    assert done.parsed == '{"name":"Ann","age":3,"score":1.5}'


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("Sure! Here you go.", "the answer is not JSON (Expecting value"),
        ('{"name": "Ann", "age": 3', "the answer is not JSON"),
        ('{"name": "Ann", "age": NaN, "score": 1}', "NaN is not a JSON value"),
        ('{"name": "Ann", "age": "3", "score": 1}', "at $.age: '3' is not of type 'integer'"),
        ('{"name": "Ann", "age": 3}', "at $: 'score' is a required property"),
        ('{"name": "Ann", "age": -1, "score": 1}', "at $.age: -1 is less than the minimum"),
        ("", "the answer is empty"),
    ],
)
def test_chat_answers_that_do_not_fit(text: str, fragment: str) -> None:
    """Not JSON, NaN, a wrong type, a missing field, out of bounds, empty: each said."""
    with pytest.raises(InvalidOutputError) as caught:
        OutputCheck(PERSON, "chat")(_completion(text))
    assert caught.value.error_type == "invalid_output"
    assert fragment in caught.value.message


def test_messages_answer_is_the_answer_tools_input() -> None:
    """Messages: the arguments of the call of the answer tool are the answer."""
    check = OutputCheck(PERSON, "messages")
    other: ToolCall = {"id": "t1", "name": "lookup", "arguments": '{"q": 1}'}
    call: ToolCall = {
        "id": "t2",
        "name": "Person_record",
        "arguments": '{"name":"A","age":1,"score":2}',
    }
    assert check(_completion("Calling.", other, call)).parsed == call["arguments"]


def test_messages_answer_without_the_tool_call_quotes_its_text() -> None:
    """No call of the answer tool: invalid_output, quoting what the model said instead."""
    with pytest.raises(InvalidOutputError) as caught:
        OutputCheck(PERSON, "messages")(_completion("I would rather chat. " * 30))
    message = caught.value.message
    assert message.startswith("the answer does not call the tool 'Person_record'; it says")
    assert message.endswith("…'") and len(message) < 300


# --- config -----------------------------------------------------------------------------


def test_json_schema_flag_and_job_file_paths(tmp_path: Path) -> None:
    """--json-schema is read relative to the working directory, `[request] json_schema`
    relative to the job file; --output-retries and `[request] output_retries` are kept."""
    _schema_file(tmp_path, PERSON, "jobs/person.json")
    job = tmp_path / "jobs" / "job.toml"
    job.write_text('[request]\njson_schema = "person.json"\noutput_retries = 5\n')
    spec = load_job(job, input_path=Path("in.jsonl"), output=Path("out"), overrides={})
    assert spec.request.json_schema == PERSON and spec.request.output_retries == 5
    other = _schema_file(tmp_path, {"type": "object"}, "other.json")
    flags = {"json_schema": other, "output_retries": 0}
    spec = load_job(job, input_path=Path("in.jsonl"), output=Path("out"), overrides=flags)
    assert spec.request.json_schema == {"type": "object"} and spec.request.output_retries == 0


def test_json_schema_problems_are_listed_with_the_others(tmp_path: Path) -> None:
    """A bad schema is a ConfigError (exit 2) listed with every other problem."""
    job = tmp_path / "job.toml"
    job.write_text('[request]\njson_schema = "missing.json"\noutput_retries = -1\nmax_tokens = 0\n')
    with pytest.raises(ConfigError) as caught:
        load_job(job, input_path=Path("in.jsonl"), output=Path("out"), overrides={})
    message = str(caught.value)
    assert "JSON Schema file not found" in message and "missing.json" in message
    assert "output_retries must be a whole number >= 0" in message
    assert "max_tokens must be a whole number >= 1" in message
    job.write_text("[request]\njson_schema = 3\n")
    with pytest.raises(ConfigError, match="json_schema must be the path"):
        load_job(job, input_path=Path("in.jsonl"), output=Path("out"), overrides={})


def test_the_schema_is_in_the_fingerprint_and_nothing_else_new_is(tmp_path: Path) -> None:
    """The schema's content shapes what is asked; the retries do not. Without a schema the
    settings are what they were before --json-schema existed (old run dirs resume)."""

    def settings(**flags: Any) -> dict[str, Any]:
        spec = load_job(None, input_path=Path("in.jsonl"), output=Path("out"), overrides=flags)
        return spec.request_settings()

    plain = settings(output_retries=7)
    assert set(plain["request"]) == {
        "model",
        "max_tokens",
        "system",
        "temperature",
        "template",
        "id_column",
        "prompt_column",
    }
    path = _schema_file(tmp_path, PERSON)
    assert settings(json_schema=path)["request"]["json_schema"] == PERSON
    assert settings(json_schema=path) == settings(json_schema=path, output_retries=0)
