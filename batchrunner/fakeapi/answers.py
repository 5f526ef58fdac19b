"""Deterministic answers: what the fake model says, token counts, tool inputs, thinking.

Every answer embeds its prompt (so tests can tell rows apart) and depends only on the
request content, never on the seed, time or arrival order. Pure functions; no IO, no HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from batchrunner.fakeapi.judge import verdict_pieces

if TYPE_CHECKING:
    from collections.abc import Sequence

BlockKind = Literal["text", "thinking", "tool_use"]
StopKind = Literal["end", "max", "tool", "stop_sequence"]

_WORDS = tuple(
    """
    amber anchor apple arch aspen atlas autumn badge bamboo basin beacon birch bishop bloom
    bonfire breeze bridge brook cabin cactus candle canyon carbon cedar cellar chalk cherry
    cider cinder citrus clover cobalt comet copper coral cotton crater crystal daisy delta
    desert dune eagle echo ember falcon fern fiddle fjord flint forest fossil galaxy garnet
    glacier granite harbor hazel heron hollow horizon indigo island ivory jasper juniper
    kettle lagoon lantern lava lemon linen lotus magnet maple marble meadow meteor mint
    mirror moss nectar nickel oak oasis ocean olive onyx orbit orchid otter paper pebble
    pepper pine planet plum prairie quartz quill radar raven reef ridge river saffron sage
    salt sandal satin shadow shell silver slate spruce stone summit sunset thistle thunder
    tide timber topaz tulip tundra valley velvet violet walnut willow winter zephyr zinc
    """.split()  # noqa: SIM905 - 130 words read better as prose than as a list literal
)


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A client tool the request offers: its name and JSON schema for the input."""

    name: str
    schema: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Block:
    """One content block; each piece is one output token and one stream delta."""

    kind: BlockKind
    pieces: tuple[str, ...]
    name: str = ""
    signature: str = ""
    tool_input: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The block's pieces joined: its text, thinking, or tool-input JSON."""
        return "".join(self.pieces)


@dataclass(frozen=True, slots=True)
class Answer:
    """A complete answer: content blocks and why it stopped."""

    blocks: tuple[Block, ...]
    stop: StopKind
    stop_sequence: str | None = None

    @property
    def output_tokens(self) -> int:
        """Pieces emitted; at least 1, as the real services never report 0."""
        return max(1, sum(len(block.pieces) for block in self.blocks))

    @property
    def text(self) -> str:
        """All text blocks joined (thinking and tool input excluded)."""
        return "".join(block.text for block in self.blocks if block.kind == "text")


def _digest(*parts: str) -> int:
    data = "\x1f".join(parts).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            block["text"]
            for block in content
            if isinstance(block, dict)
            and block.get("type") == "text"
            and isinstance(block.get("text"), str)
        )
    return ""


def prompt_text(messages: Any) -> str:
    """Text of the last user message: string content, or its text blocks joined with ""."""
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


def _chars(value: Any) -> int:
    """Characters of text anywhere in a content value (strings, text, nested content)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_chars(item) for item in value)
    if isinstance(value, dict):
        total = 0
        for key in ("text", "content", "arguments"):
            total += _chars(value.get(key))
        function = value.get("function")
        if isinstance(function, dict):
            total += _chars(function)
        tool_calls = value.get("tool_calls")
        if isinstance(tool_calls, list):
            total += _chars(tool_calls)
        return total
    return 0


def input_tokens(body: dict[str, Any]) -> int:
    """ceil(characters of all message and system text / 4), at least 1."""
    chars = _chars(body.get("system")) + _chars(body.get("messages"))
    return max(1, math.ceil(chars / 4))


def _answer_pieces(prompt: str) -> tuple[str, ...]:
    verdict = verdict_pieces(prompt)
    if verdict is not None:  # a judge prompt: graded by the rule tests predict (judge.py)
        return verdict
    rng = random.Random(_digest("answer", prompt))
    count = rng.randint(140, 160) if "[long]" in prompt else rng.randint(3, 40)
    words = rng.choices(_WORDS, k=count)
    words[-1] += "."
    return (f"Answer to {prompt}:", *(" " + word for word in words))


def answer_pieces(prompt: str, *, max_tokens: int | None = None) -> tuple[list[str], str]:
    """The answer as token pieces (the first is `Answer to <prompt>:`) and "end"/"max"."""
    pieces = _answer_pieces(prompt)
    if max_tokens is not None and len(pieces) > max_tokens:
        return list(pieces[:max_tokens]), "max"
    return list(pieces), "end"


def answer_for(prompt: str, *, max_tokens: int | None = None) -> tuple[str, str]:
    """The plain-text answer to `prompt` and its stop kind: "end", or "max" when cut short."""
    pieces, kind = answer_pieces(prompt, max_tokens=max_tokens)
    return "".join(pieces), kind


def _thinking_block(prompt: str) -> Block:
    rng = random.Random(_digest("thinking", prompt))
    words = rng.choices(_WORDS, k=rng.randint(5, 15))
    pieces = ("Let me think about this.", *(" " + word for word in words))
    digest = hashlib.blake2b("".join(pieces).encode(), digest_size=48).digest()
    return Block("thinking", pieces, signature=base64.b64encode(digest).decode())


def _value_for(schema: Any, *, prompt: str, key: str, first_string: bool) -> Any:
    """A value that fits `schema`: enum, const, the first of anyOf/oneOf, numbers within
    their bounds, objects and arrays built from their properties and items."""
    schema = schema if isinstance(schema, dict) else {}
    pick = _digest("tool", prompt, key)
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[pick % len(enum)]
    if "const" in schema:
        return schema["const"]
    for combinator in ("anyOf", "oneOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            return _value_for(options[0], prompt=prompt, key=key, first_string=first_string)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind in ("integer", "number"):
        return _bounded(schema, pick, whole=kind == "integer")
    if kind == "boolean":
        return bool(pick % 2)
    if kind == "array":
        items = schema.get("items")
        if isinstance(items, dict):
            return [
                _value_for(items, prompt=prompt, key=f"{key}[{i}]", first_string=False)
                for i in (0, 1)
            ]
        return [_WORDS[pick % len(_WORDS)], _WORDS[(pick >> 8) % len(_WORDS)]]
    if kind == "object":
        return _object_for(schema, prompt=prompt, key=key) if "properties" in schema else {}
    if kind == "null":
        return None
    return prompt if first_string else f"{_WORDS[pick % len(_WORDS)]} café"


def _bounded(schema: dict[str, Any], pick: int, *, whole: bool) -> int | float:
    """A number from `pick` within the schema's minimum/maximum (exclusive ones too)."""
    low, high = schema.get("minimum"), schema.get("maximum")
    if isinstance(schema.get("exclusiveMinimum"), int | float):
        low = schema["exclusiveMinimum"] + (1 if whole else 0.01)
    if isinstance(schema.get("exclusiveMaximum"), int | float):
        high = schema["exclusiveMaximum"] - (1 if whole else 0.01)
    value: int | float = pick % 100 if whole else (pick % 10000) / 100
    if isinstance(low, int | float) and isinstance(high, int | float):
        span = high - low
        value = low + (pick % (int(span) + 1) if whole else (pick % 10000) / 10000 * span)
    elif isinstance(low, int | float):
        value = low + value
    elif isinstance(high, int | float):
        value = high - value
    return math.ceil(value) if whole else value


def _object_for(schema: dict[str, Any], *, prompt: str, key: str) -> dict[str, Any]:
    """Every property of an object schema, the first string one holding the prompt."""
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return {}
    result: dict[str, Any] = {}
    first_string = True
    for name, sub in properties.items():
        value = _value_for(sub, prompt=prompt, key=f"{key}.{name}", first_string=first_string)
        if value == prompt:
            first_string = False
        result[name] = value
    return result


def tool_input(tool: ToolSpec, prompt: str) -> dict[str, Any]:
    """An input object for `tool` that fits its schema's properties, built from the prompt."""
    properties = tool.schema.get("properties")
    if not isinstance(properties, dict) or not properties:
        return {"prompt": prompt}
    return _object_for(tool.schema, prompt=prompt, key=tool.name)


def _mismatch(value: dict[str, Any]) -> dict[str, Any]:
    """`value` with its first field of the wrong type (a string becomes a number)."""
    if not value:
        return {"unexpected": 1}
    first = next(iter(value))
    wrong = 12345 if isinstance(value[first], str) else f"not {json.dumps(value[first])}"
    return {**value, first: wrong}


def _json_pieces(text: str, salt: str) -> tuple[str, ...]:
    """Split JSON text at arbitrary places (inside strings and escapes too), 1-8 chars each."""
    rng = random.Random(_digest("split", salt))
    pieces = []
    start = 0
    while start < len(text):
        end = start + rng.randint(1, 8)
        pieces.append(text[start:end])
        start = end
    return tuple(pieces)


def _cut_at_stop(
    pieces: tuple[str, ...], stops: Sequence[str]
) -> tuple[tuple[str, ...], str | None]:
    text = "".join(pieces)
    best: tuple[int, str] | None = None
    for stop in stops:
        at = text.find(stop) if stop else -1
        if at >= 0 and (best is None or at < best[0]):
            best = (at, stop)
    if best is None:
        return pieces, None
    cut, kept, pos = best[0], [], 0
    for piece in pieces:
        if pos + len(piece) > cut:
            if cut > pos:
                kept.append(piece[: cut - pos])
            break
        kept.append(piece)
        pos += len(piece)
    return tuple(kept), best[1]


def _limit(blocks: list[Block], max_tokens: int | None) -> tuple[list[Block], bool]:
    """Keep at most `max_tokens` pieces; a tool call that does not fit whole is dropped."""
    if max_tokens is None:
        return blocks, False
    left, kept = max_tokens, []
    for block in blocks:
        if len(block.pieces) <= left:
            kept.append(block)
            left -= len(block.pieces)
            continue
        if block.kind != "tool_use" and left > 0:
            kept.append(replace(block, pieces=block.pieces[:left]))
        return kept, True
    return kept, False


def compose(
    prompt: str,
    *,
    max_tokens: int | None = None,
    thinking: bool = False,
    tool: ToolSpec | None = None,
    tool_preamble: bool = True,
    stop_sequences: Sequence[str] = (),
    json_schema: dict[str, Any] | None = None,
    invalid: bool = False,
) -> Answer:
    """The full answer for a request: optional thinking, then text, JSON text that fits
    `json_schema` (chat's response_format), or a tool call.

    A "[prose]" prompt ignores the schema and the tool and answers in prose. `invalid`
    (the `invalid_output` fault) spoils an answer that holds JSON: prose instead, the JSON
    cut in half (JSON text only) or JSON with a field of the wrong type.
    """
    blocks: list[Block] = [_thinking_block(prompt)] if thinking else []
    if "[prose]" in prompt:
        tool = json_schema = None
    spoil = _digest("invalid", prompt) % 3 if invalid else None
    if spoil == 0:
        tool = json_schema = None
    stop: StopKind = "end"
    matched: str | None = None
    if tool is not None:
        if tool_preamble:
            blocks.append(Block("text", (f"Answer to {prompt}:", " calling", f" {tool.name}.")))
        arguments = tool_input(tool, prompt)
        if spoil is not None:
            arguments = _mismatch(arguments)
        text = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
        pieces = _json_pieces(text, f"{tool.name}\x1f{prompt}")
        blocks.append(Block("tool_use", pieces, name=tool.name, tool_input=arguments))
        stop = "tool"
    elif json_schema is not None:
        blocks.append(Block("text", _json_answer(json_schema, prompt, spoil)))
    else:
        pieces, matched = _cut_at_stop(_answer_pieces(prompt), stop_sequences)
        blocks.append(Block("text", pieces))
        stop = "end" if matched is None else "stop_sequence"
    blocks, truncated = _limit(blocks, max_tokens)
    if truncated:
        return Answer(tuple(blocks), "max")
    return Answer(tuple(blocks), stop, matched)


def _json_answer(schema: dict[str, Any], prompt: str, spoil: int | None) -> tuple[str, ...]:
    """JSON text that fits `schema` (its first string field holds the prompt), in pieces;
    spoiled: cut in half (1) or with a field of the wrong type (2)."""
    value = _object_for(schema, prompt=prompt, key="answer") if "properties" in schema else {}
    if spoil == 2:
        value = _mismatch(value)
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if spoil == 1:
        text = text[: len(text) // 2]
    return _json_pieces(text, f"answer\x1f{prompt}")


def pick_tool(tools: Sequence[ToolSpec], mode: str, prompt: str) -> ToolSpec | None:
    """The tool to call: forced by `mode` ("any" or a tool name), or on "[tool]" with "auto"."""
    if not tools or mode == "none":
        return None
    if mode not in ("auto", "any"):
        return next((tool for tool in tools if tool.name == mode), tools[0])
    if mode == "any" or "[tool]" in prompt:
        return tools[0]
    return None
