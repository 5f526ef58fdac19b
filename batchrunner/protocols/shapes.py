"""The message-shape rulebook: what a request's `messages` may hold, in either convention.

One check for the whole program: every request body is built through `base.start_body`,
which applies it, and the validation pass builds every row's body, so `validate` and `run`
accept exactly the same rows. It accepts every shape the official APIs take (see the
convention notes below) and refuses only what no API would send on. Pure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from batchrunner.errors import SourceError
from batchrunner.records import json_kind

if TYPE_CHECKING:
    from batchrunner.records import Api

_MISSING = object()
# Keys with which an OpenAI assistant turn calls tools; such a turn may leave content out.
_CALLS = ("tool_calls", "function_call")


def check_messages(messages: object, where: str, *, api: Api, label: str = "messages") -> None:
    """Refuse a `messages` value that is not a non-empty array of well-formed turns.

    Every turn is an object with a non-empty string `role` and a `content` that is a string
    or an array of objects (text, image, `tool_use` and `tool_result` blocks, chat content
    parts). Roles are not checked against a list: the APIs add new ones (`developer`).
    Chat (OpenAI) also allows an assistant turn whose content is null, or left out when the
    turn carries `tool_calls` (or the legacy `function_call`): the API's own shape for a
    tool-calling turn. Its `tool` turns are ordinary turns with string content.

    Args:
        label: the field's name in messages, e.g. "params.messages" in a batch line.
    """
    if not isinstance(messages, list):
        raise SourceError(where, f"{label} must be an array, got {json_kind(messages)}")
    if not messages:
        raise SourceError(where, f"{label} is empty")
    for i, message in enumerate(messages):
        turn = f"{label}[{i}]"
        if not isinstance(message, dict):
            raise SourceError(where, f"{turn} must be an object, got {json_kind(message)}")
        role = message.get("role", _MISSING)
        if not isinstance(role, str) or not role:
            raise SourceError(where, _bad_role(turn, role))
        content = message.get("content", _MISSING)
        if isinstance(content, str):
            continue
        if isinstance(content, list):
            _check_blocks(content, f"{turn}.content", where)
        elif not _may_lack_content(message, content, api):
            if content is _MISSING:
                raise SourceError(where, f"{turn} has no content")
            raise SourceError(
                where,
                f"{turn}.content must be a string or an array of objects, got {json_kind(content)}",
            )


def _bad_role(turn: str, role: object) -> str:
    if role is _MISSING:
        return f"{turn} has no role"
    if role == "":
        return f"{turn} has an empty role"
    return f"{turn}.role must be a string, got {json_kind(role)}"


def _check_blocks(blocks: list[object], label: str, where: str) -> None:
    for j, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise SourceError(where, f"{label}[{j}] must be an object, got {json_kind(block)}")


def _may_lack_content(message: dict[str, object], content: object, api: Api) -> bool:
    """Chat only: an assistant turn may have null content, or none when it calls tools."""
    if api != "chat" or message.get("role") != "assistant":
        return False
    return content is None or any(key in message for key in _CALLS)
