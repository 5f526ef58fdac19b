"""`Ask`: what a valid generation request asks for, in convention-neutral terms.

Each convention's validator (messages_validation, chat_validation) builds one; generation
answers it. A plain value: no parsing, no IO.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchrunner.fakeapi.answers import ToolSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class Ask:
    """What a valid generation request asks for, in convention-neutral terms."""

    model: str
    prompt: str
    input_tokens: int
    max_tokens: int | None = None
    stream: bool = False
    include_usage: bool = False
    thinking: bool = False
    tools: tuple[ToolSpec, ...] = ()
    tool_mode: str = "auto"
    stop_sequences: tuple[str, ...] = ()
    n: int = 1
    json_schema: dict[str, Any] | None = None  # chat's response_format json_schema
