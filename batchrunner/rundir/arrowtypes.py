"""Arrow types from their string names, and JSON values into a column of such a type.

The carried-through fields of a JSONL input, and the typed `parsed` columns, are stored in
the journal as JSON; these turn them back into Arrow columns at assembly, or say (None)
that the values do not fit, so the caller can write them as JSON text instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pyarrow as pa

JSON_TYPE = None  # marker: the column holds each value as JSON text
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)
_CONVERT_ERRORS = (*_ARROW_ERRORS, TypeError, ValueError, OverflowError)
_KINDS: dict[int, tuple[type, ...]] = {
    **{t.id: (int,) for t in (pa.int8(), pa.int16(), pa.int32(), pa.int64())},
    **{t.id: (int,) for t in (pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64())},
    **{t.id: (int, float) for t in (pa.float16(), pa.float32(), pa.float64())},
    pa.bool_().id: (bool,),
}


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside <>, [] or ()."""
    parts, depth, start = [], 0, 0
    for pos, ch in enumerate(text):
        if ch in "<[(":
            depth += 1
        elif ch in ">])":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:pos].strip())
            start = pos + 1
    parts.append(text[start:].strip())
    return parts


def _parse_field(text: str) -> pa.Field:
    name, _, type_text = text.partition(": ")
    type_text = type_text.removesuffix(" not null")
    return pa.field(name, _parse(type_text))


def _parse(text: str) -> pa.DataType:
    text = text.strip()
    if m := re.fullmatch(r"fixed_size_list<(.+)>\[(\d+)\]", text):
        return pa.list_(_parse_field(m.group(1)), int(m.group(2)))
    if m := re.fullmatch(r"timestamp\[(\w+)(?:, tz=(.+))?\]", text):
        return pa.timestamp(m.group(1), tz=m.group(2))
    if m := re.fullmatch(r"decimal(32|64|128|256)\((\d+), *(-?\d+)\)", text):
        make = {"32": pa.decimal32, "64": pa.decimal64, "128": pa.decimal128, "256": pa.decimal256}
        return make[m.group(1)](int(m.group(2)), int(m.group(3)))
    if m := re.fullmatch(r"(\w+)<(.*)>", text):
        head, args = m.group(1), _split_top(m.group(2))
        if head in ("list", "large_list") and len(args) == 1:
            make_list = pa.list_ if head == "list" else pa.large_list
            return make_list(_parse_field(args[0]))
        if head == "struct":
            return pa.struct([_parse_field(a) for a in args if a])
        if head == "map" and len(args) >= 2:
            return pa.map_(_parse(args[0]), _parse(args[1]))
        if head == "dictionary":
            # Carried-through values arrive decoded; the dictionary's value type is the type.
            return _parse(dict(a.split("=", 1) for a in args)["values"])
        raise ValueError(text)
    return pa.type_for_alias(text)


def parse_type(text: str) -> pa.DataType | None:
    """An Arrow type from its string form ("int64", "list<item: string>", ...).

    Returns JSON_TYPE for "json", for a null type, and for anything not understood.
    """
    if text == "json":
        return JSON_TYPE
    try:
        parsed = _parse(text)
    except (ValueError, KeyError, TypeError, *_ARROW_ERRORS):
        return JSON_TYPE
    return None if pa.types.is_null(parsed) else parsed


def _to_json(value: object) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def convert_column(values: list[Any], type_: pa.DataType | None) -> pa.Array | None:
    """Values decoded from JSON as an Arrow array of `type_`; None when some do not fit.

    Strings keep non-string values as JSON text; other types also accept what Arrow can
    cast from the JSON form (an ISO date string for a timestamp, say).
    """
    if type_ is JSON_TYPE:
        return pa.array([_to_json(v) for v in values], pa.string())
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        as_text = [v if isinstance(v, str) else _to_json(v) for v in values]
        try:
            return pa.array(as_text, type_)
        except UnicodeEncodeError:  # an unpaired surrogate: JSON text keeps it as an escape
            return None
    kinds = _KINDS.get(type_.id)
    if kinds is None or all(v is None or type(v) in kinds for v in values):
        try:  # Arrow would silently truncate 2.5 into an int64 column: hence the check
            return pa.array(values, type=type_)
        except _CONVERT_ERRORS:
            pass
    try:  # a checked cast from what JSON held ("2024-01-02T03:04:05Z" -> timestamp)
        return pa.array(values).cast(type_)
    except _CONVERT_ERRORS:
        return None
