"""The fake API's structured answers: JSON that fits a schema, the invalid_output fault,
"[prose]" prompts, and tool calls asked for by a schema (a forced tool)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from batchrunner.fakeapi.answers import ToolSpec, compose
from tests.fakeserver import serve_in_thread
from tests.helpers import ANTHROPIC, OPENAI, ask, chat, sse_data

if TYPE_CHECKING:
    from tests.fakeserver import ThreadServer

NESTED: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 500},
        "count": {"type": "integer", "minimum": 1000, "maximum": 1010},
        "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "below": {"type": "integer", "maximum": -5},
        "maybe": {"type": ["string", "null"]},
        "kind": {"const": "person"},
        "either": {"anyOf": [{"type": "boolean"}, {"type": "string"}]},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 1},
        "owner": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "ok": {"type": "boolean"}},
            "required": ["name", "ok"],
            "additionalProperties": False,
        },
    },
    "required": ["title", "count", "ratio", "below", "maybe", "kind", "either", "tags", "owner"],
    "additionalProperties": False,
}
VALID = Draft202012Validator(NESTED)
FORMAT = {"type": "json_schema", "json_schema": {"name": "nested", "schema": NESTED}}
FORCED = {
    "tools": [{"name": "nested", "input_schema": NESTED}],
    "tool_choice": {"type": "tool", "name": "nested"},
}


def _text(answer: Any) -> str:
    return "".join(block.text for block in answer.blocks if block.kind == "text")


def test_json_answers_fit_their_schema_and_embed_the_prompt() -> None:
    """Nested objects, arrays, bounds, const, anyOf, nullable types: every answer fits."""
    for i in range(50):
        prompt = f"record {i}"
        value = json.loads(_text(compose(prompt, json_schema=NESTED)))
        assert VALID.is_valid(value), list(VALID.iter_errors(value))
        assert value["title"] == prompt
        tool_answer = compose(prompt, tool=ToolSpec("nested", NESTED))
        (call,) = [b for b in tool_answer.blocks if b.kind == "tool_use"]
        assert VALID.is_valid(call.tool_input) and json.loads(call.text) == call.tool_input


def test_invalid_output_spoils_json_in_three_ways_and_never_fits() -> None:
    """The fault answers prose, JSON cut in half, or JSON with a wrong-typed field."""
    kinds = set()
    for i in range(60):
        text = _text(compose(f"record {i}", json_schema=NESTED, invalid=True))
        try:
            value = json.loads(text)
        except ValueError:
            kinds.add("prose" if text.startswith("Answer to") else "cut")
            continue
        assert not VALID.is_valid(value)
        kinds.add("mismatch")
    assert kinds == {"prose", "cut", "mismatch"}


def test_invalid_output_spoils_a_tool_call_too() -> None:
    """A spoiled tool answer has no tool call (prose) or an input that does not fit."""
    outcomes = set()
    for i in range(30):
        answer = compose(f"record {i}", tool=ToolSpec("nested", NESTED), invalid=True)
        calls = [b for b in answer.blocks if b.kind == "tool_use"]
        if not calls:
            outcomes.add("prose")
        else:
            assert not VALID.is_valid(calls[0].tool_input)
            outcomes.add("mismatch")
    assert outcomes == {"prose", "mismatch"}


def test_prose_prompts_ignore_the_schema_and_the_tool() -> None:
    """A "[prose]" prompt answers text, whatever the request asks for."""
    for answer in (
        compose("x [prose]", json_schema=NESTED),
        compose("x [prose]", tool=ToolSpec("nested", NESTED)),
    ):
        assert [b.kind for b in answer.blocks] == ["text"]
        assert _text(answer).startswith("Answer to x [prose]:") and answer.stop == "end"


@pytest.mark.parametrize("stream", [False, True])
def test_chat_response_format_gets_json_content(server: ThreadServer, stream: bool) -> None:
    """Chat with a json_schema response_format: the reply's content is JSON that fits,
    the same plain and streamed."""
    body = chat("record 7", response_format=FORMAT, stream=stream)
    with httpx.Client(timeout=10) as http:
        response = http.post(server.base_url + "/chat/completions", json=body, headers=OPENAI)
    assert response.status_code == 200
    if stream:
        chunks = [c for c in sse_data(response.text) if isinstance(c, dict)]
        content = "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
        )
    else:
        content = response.json()["choices"][0]["message"]["content"]
    assert json.loads(content) == json.loads(_text(compose("record 7", json_schema=NESTED)))


def test_messages_forced_tool_gets_a_fitting_tool_call(server: ThreadServer) -> None:
    """Messages forcing a tool: a tool_use block whose input fits the tool's schema."""
    with httpx.Client(timeout=10) as http:
        response = http.post(
            server.base_url + "/messages", json=ask("record 3", **FORCED), headers=ANTHROPIC
        )
    assert response.status_code == 200
    body = response.json()
    (use,) = [b for b in body["content"] if b["type"] == "tool_use"]
    assert use["name"] == "nested" and VALID.is_valid(use["input"])
    assert body["stop_reason"] == "tool_use"


def test_the_invalid_output_fault_on_the_wire() -> None:
    """`--faults invalid_output`: a 200 whose JSON does not fit, counted as a fault; the
    next ask of the same content fits."""
    options = {"fault_rate": 1.0, "faults": ("invalid_output",), "fault_max_per_prompt": 1}
    with serve_in_thread(**options) as running, httpx.Client(timeout=10) as http:
        url = running.base_url + "/chat/completions"
        first, second = (
            http.post(url, json=chat("record 5", response_format=FORMAT), headers=OPENAI)
            for _ in range(2)
        )
        assert first.status_code == second.status_code == 200
        bad = first.json()["choices"][0]["message"]["content"]
        good = json.loads(second.json()["choices"][0]["message"]["content"])
        assert VALID.is_valid(good)
        try:
            spoiled = json.loads(bad)
        except ValueError:
            spoiled = None  # prose, or JSON cut short
        assert spoiled is None or not VALID.is_valid(spoiled)
        assert running.state.stats()["fault_counts"] == {"invalid_output": 1}
