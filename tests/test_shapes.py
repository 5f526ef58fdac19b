"""The message-shape rulebook: every shape the two APIs accept passes, the same way everywhere.

Each case goes through the rulebook itself, the validation pass over a real file and the
protocol's request building, and all three must give the same verdict in the same words.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from batchrunner.errors import SourceError
from batchrunner.inputs import validate
from batchrunner.protocols import PROTOCOLS
from batchrunner.protocols.shapes import check_messages
from batchrunner.records import Row, json_kind
from batchrunner.spec import RequestSpec, SourceOptions

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from batchrunner.records import Api

USER = {"role": "user", "content": "What is the weather in Paris?"}
CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}
TOOL_RESULT = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C"}
IMAGE_URL = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}

ACCEPTED: list[tuple[str, Api, list[Any]]] = [
    (
        "chat tool call, content null, then a tool turn",
        "chat",
        [
            USER,
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
        ],
    ),
    (
        "chat tool call without content",
        "chat",
        [
            USER,
            {"role": "assistant", "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "x"}]},
        ],
    ),
    (
        "chat legacy function_call",
        "chat",
        [USER, {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}],
    ),
    ("chat assistant with null content", "chat", [USER, {"role": "assistant", "content": None}]),
    (
        "chat developer turn and content parts",
        "chat",
        [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "hi"}, IMAGE_URL]},
        ],
    ),
    (
        "messages tool_use then tool_result",
        "messages",
        [
            USER,
            {"role": "assistant", "content": [{"type": "text", "text": "Checking."}, TOOL_USE]},
            {"role": "user", "content": [TOOL_RESULT]},
        ],
    ),
    ("messages string content", "messages", [USER, {"role": "assistant", "content": "Sun."}]),
]

REFUSED: list[tuple[str, Api, Any, str]] = [
    (
        "messages: null content even with tool_calls",
        "messages",
        [USER, {"role": "assistant", "content": None, "tool_calls": [CALL]}],
        "messages[1].content must be a string or an array of objects, got null",
    ),
    (
        "chat: a user turn with null content",
        "chat",
        [{"role": "user", "content": None}],
        "messages[0].content must be a string or an array of objects, got null",
    ),
    (
        "chat: a tool turn with null content",
        "chat",
        [USER, {"role": "tool", "tool_call_id": "c", "content": None}],
        "messages[1].content must be a string or an array of objects, got null",
    ),
    (
        "chat: an assistant turn with neither content nor tool calls",
        "chat",
        [USER, {"role": "assistant"}],
        "messages[1] has no content",
    ),
    (
        "a content block that is no object",
        "messages",
        [{"role": "user", "content": ["hi"]}],
        ("messages[0].content[0] must be an object, got a string"),
    ),
    (
        "a numeric role",
        "chat",
        [{"role": 5, "content": "x"}],
        ("messages[0].role must be a string, got a number"),
    ),
    ("an empty role", "messages", [{"role": "", "content": "x"}], "messages[0] has an empty role"),
    ("no role", "chat", [{"content": "x"}], "messages[0] has no role"),
    ("a turn that is no object", "chat", ["hi"], "messages[0] must be an object, got a string"),
    ("an empty list", "messages", [], "messages is empty"),
    ("not a list", "chat", {"role": "user"}, "messages must be an array, got an object"),
]


def _verdicts(tmp_path: Path, api: Api, messages: Any) -> list[str]:
    """The rulebook's, validation's and the protocol's verdicts ("ok" or the reason)."""
    verdicts = []
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"id": "r1", "messages": messages}) + "\n", encoding="utf-8")
    row = Row(index=0, id="r1", shape="simple", body={"messages": messages}, where=f"{path}:1")
    checks: list[Callable[[], object]] = [
        lambda: check_messages(messages, f"{path}:1", api=api),
        lambda: validate(path, SourceOptions(api=api)),
        lambda: PROTOCOLS[api].build_request(row, RequestSpec(), stream=False),
    ]
    for check in checks:
        try:
            check()
        except SourceError as exc:
            assert exc.where == f"{path}:1"
            verdicts.append(exc.reason)
        else:
            verdicts.append("ok")
    return verdicts


@pytest.mark.parametrize(
    ("api", "messages"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED]
)
def test_every_official_shape_is_accepted_everywhere(
    tmp_path: Path, api: Api, messages: list[Any]
) -> None:
    """Shapes the official APIs take pass the rulebook, the validation pass and the build."""
    assert _verdicts(tmp_path, api, messages) == ["ok"] * 3


@pytest.mark.parametrize(
    ("api", "messages", "reason"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_refusals_are_the_same_everywhere(
    tmp_path: Path, api: Api, messages: Any, reason: str
) -> None:
    """A shape no API takes is refused by all three, in the same words."""
    assert _verdicts(tmp_path, api, messages) == [reason] * 3


def test_the_other_convention_refuses_what_one_accepts() -> None:
    """A tool-calling chat turn (content null) is refused under the messages convention."""
    messages = ACCEPTED[0][2]
    check_messages(messages, "here", api="chat")
    with pytest.raises(SourceError, match=r"messages\[1\]\.content must be"):
        check_messages(messages, "here", api="messages")


@pytest.mark.parametrize(
    ("api", "shape", "label"),
    [("chat", "openai_batch", "body.messages"), ("messages", "anthropic_batch", "params.messages")],
)
def test_batch_lines_name_the_field_inside_body_or_params(api: Api, shape: Any, label: str) -> None:
    """In a batch line the rulebook names `body.messages[i]` or `params.messages[i]`."""
    row = Row(index=0, id="c1", shape=shape, body={"messages": [{"role": "user"}]}, where="b:1")
    with pytest.raises(SourceError, match=rf"^b:1: {label}\[0\] has no content$"):
        PROTOCOLS[api].build_request(row, RequestSpec(), stream=False)
    without = Row(index=0, id="c1", shape=shape, body={"model": "m"}, where="b:1")
    with pytest.raises(SourceError, match=rf"{label} is missing"):
        PROTOCOLS[api].build_request(without, RequestSpec(), stream=False)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (None, "null"),
        (True, "a boolean"),
        (3, "a number"),
        (2.5, "a number"),
        ("x", "a string"),
        ([1], "an array"),
        ({}, "an object"),
        (b"x", "bytes"),
    ],
)
def test_json_kind_names_values_as_json_does(value: object, kind: str) -> None:
    """One helper names a value's JSON type in every message ("got a number")."""
    assert json_kind(value) == kind
