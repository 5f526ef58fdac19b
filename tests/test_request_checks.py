"""Rows the client could not send are refused while the request is built, naming the field.

httpx sends `json.dumps(body, allow_nan=False)` in UTF-8, so NaN, Infinity, lone surrogates
and values that are not JSON would crash the send; the protocols refuse them first.
`build_body` (what the validation pass runs) and `build_request` (what a worker runs)
must agree on every row.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import pytest

from batchrunner.errors import SourceError
from batchrunner.protocols import CHAT, MESSAGES, Protocol
from batchrunner.protocols.jsonsafe import check_json
from batchrunner.records import Row, Shape
from batchrunner.spec import RequestSpec

DEFAULTS = RequestSpec(model="def-model", max_tokens=100, system="Be brief.", temperature=0.5)
MSG = [{"role": "user", "content": "hi"}]


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


UNSENDABLE: list[tuple[dict[str, Any], str]] = [
    ({"prompt": "hi", "temperature": math.nan}, "temperature is NaN, which JSON cannot carry"),
    ({"prompt": "hi", "temperature": math.inf}, "temperature is Infinity"),
    ({"prompt": "hi", "top_p": -math.inf}, "top_p is -Infinity"),
    ({"prompt": "hi \ud83d"}, r"prompt holds a lone surrogate \('\\ud83d' at character 4\)"),
    (
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "a\udc00"}]}]},
        r"messages\[0\]\.content\[0\]\.text holds a lone surrogate",
    ),
    (
        {"prompt": "hi", "metadata": {"when": dt.datetime(2025, 1, 1)}},
        "metadata.when is a datetime",
    ),
    ({"prompt": "hi", "metadata": {"\ud800": 1}}, "a key of metadata holds a lone surrogate"),
    ({"prompt": "hi", "stop": ["a", b"x"]}, r"stop\[1\] is a bytes, which is not JSON"),
    ({"prompt": "hi", "metadata": {"deep": _nested(5000)}}, "metadata is nested too deeply"),
    ({"prompt": ""}, "prompt is empty"),
    ({"messages": [{"role": "", "content": "x"}]}, r"messages\[0\] has an empty role"),
    ({"prompt": "x", "model": 5}, "model must be a non-empty string, got a number"),
    ({"prompt": "x", "model": ""}, "model must be a non-empty string, got an empty string"),
    ({"prompt": "x", "max_tokens": "lots"}, "max_tokens must be an integer, got a string"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens must be at least 1, got 0"),
    ({"prompt": "x", "max_tokens": -5}, "max_tokens must be at least 1, got -5"),
]


@pytest.mark.parametrize("protocol", [MESSAGES, CHAT])
@pytest.mark.parametrize(("body", "reason"), UNSENDABLE)
def test_unsendable_rows_are_refused_naming_the_field(
    protocol: Protocol, body: dict[str, Any], reason: str
) -> None:
    """Each unsendable value is a SourceError at the row's place, naming its field."""
    with pytest.raises(SourceError, match=reason) as info:
        protocol.build_request(_row(body), DEFAULTS, stream=False)
    assert info.value.where == "in.jsonl:4"


@pytest.mark.parametrize(
    ("protocol", "shape", "body", "reason"),
    [
        (CHAT, "openai_batch", {"messages": MSG, "temperature": math.nan}, "body.temperature is"),
        (MESSAGES, "anthropic_batch", {"messages": MSG, "top_k": math.inf}, "params.top_k is"),
        (CHAT, "openai_batch", {"messages": MSG, "max_completion_tokens": 0}, "at least 1"),
        (MESSAGES, "anthropic_batch", {"messages": MSG, "max_tokens": None, "x": "\udfff"}, "x"),
    ],
)
def test_batch_bodies_name_the_field_inside_body_or_params(
    protocol: Protocol, shape: Shape, body: dict[str, Any], reason: str
) -> None:
    """In batch lines the field is named below `body` (OpenAI) or `params` (Anthropic)."""
    with pytest.raises(SourceError, match=reason):
        protocol.build_request(_row(body, shape), DEFAULTS, stream=False)


@pytest.mark.parametrize("protocol", [MESSAGES, CHAT])
def test_what_json_can_carry_passes(protocol: Protocol) -> None:
    """Non-ASCII text, emoji, the word NaN, big integers and nulls in a batch body are fine."""
    body = {
        "prompt": "héllo ✓ 😀 NaN Infinity",
        "metadata": {"n": 10**30, "list": [1.5, -0.0, None, True]},
    }
    request = protocol.build_request(_row(body), DEFAULTS, stream=True)
    encoded = json.dumps(request.body, ensure_ascii=False, allow_nan=False).encode("utf-8")
    assert "😀".encode() in encoded
    batch = _row({"messages": MSG, "max_tokens": None}, "anthropic_batch")
    assert MESSAGES.build_request(batch, DEFAULTS, stream=False).max_tokens == 100


VALID: list[tuple[Shape, dict[str, Any]]] = [
    ("simple", {"prompt": "hi", "temperature": None, "stop": ["x"]}),
    ("simple", {"messages": MSG, "system": "S", "max_tokens": 7}),
    ("simple", {"prompt": "hi", "model": "m", "max_completion_tokens": 9}),
    ("openai_batch", {"messages": MSG, "model": "m"}),
    ("anthropic_batch", {"messages": MSG, "max_tokens": 5, "system": "S"}),
]


@pytest.mark.parametrize("protocol", [MESSAGES, CHAT])
@pytest.mark.parametrize(("shape", "body"), VALID + [("simple", body) for body, _ in UNSENDABLE])
def test_build_body_and_build_request_agree(
    protocol: Protocol, shape: Shape, body: dict[str, Any]
) -> None:
    """The validation pass's build_body refuses exactly what build_request refuses, with the
    same message, and otherwise builds the same body (stream flags apart)."""
    try:
        request = protocol.build_request(_row(body, shape), DEFAULTS, stream=False)
    except SourceError as exc:
        with pytest.raises(SourceError) as again:
            protocol.build_body(body, DEFAULTS, shape=shape, where="in.jsonl:4")
        assert (again.value.where, again.value.reason) == (exc.where, exc.reason)
        return
    built, max_tokens = protocol.build_body(body, DEFAULTS, shape=shape, where="in.jsonl:4")
    assert (built, max_tokens) == (request.body, request.max_tokens)


def test_check_json_names_the_path_of_the_first_problem() -> None:
    """A nested problem is named by its path; a fine value passes without a word."""
    check_json({"a": [1, "x", {"b": 2.5}]}, "tools", "f:1")
    with pytest.raises(SourceError, match=r"tools\[1\]\.input\.b\[0\] is NaN") as info:
        check_json([{}, {"input": {"b": [math.nan]}}], "tools", "f:1")
    assert info.value.where == "f:1"


def _row(body: Any, shape: Shape = "simple") -> Row:
    return Row(index=3, id="r3", shape=shape, body=body, where="in.jsonl:4")
