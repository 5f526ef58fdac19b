"""Whether a value can travel in a request body: strict JSON, encoded as UTF-8.

The client sends bodies as httpx does, `json.dumps(..., allow_nan=False)` then UTF-8, so a
NaN or Infinity, a lone surrogate ("\\ud83d" from a JSON escape), or a value that is not
JSON at all (a Parquet timestamp, bytes) would crash the send. Python's own `json` reads
NaN, Infinity and lone surrogates without a word, so every row is checked here. Pure.
"""

from __future__ import annotations

import json
import math

from batchrunner.errors import SourceError

# The same encoding rules as httpx's request encoder; one instance, built once.
_STRICT = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_SIMPLE = (int, bool, type(None))  # exact types that always encode
_MAX_DEPTH = 100  # naming a problem walks the value; deeper than this, name the field alone


def check_json(value: object, name: str, where: str) -> None:
    """Raise SourceError(where, ...) naming `name` if `value` cannot be sent as strict JSON.

    Plain strings, numbers and booleans are checked inline (a few tens of nanoseconds);
    containers go through the C encoder once, and only a failure walks them for its path.
    """
    if isinstance(value, str):
        if value.isascii() or is_utf8(value):
            return
    elif type(value) in _SIMPLE:
        return
    elif isinstance(value, float):
        if math.isfinite(value):
            return
    else:
        try:
            text = _STRICT.encode(value)
        except (ValueError, TypeError, RecursionError):
            pass
        else:
            if text.isascii() or is_utf8(text):
                return
    raise SourceError(where, _why(value, name))


def check_text(value: str, name: str, where: str) -> None:
    """Refuse a string UTF-8 cannot hold (a lone surrogate): ids, names, settings."""
    if not value.isascii() and not is_utf8(value):
        raise SourceError(where, _surrogate(value, name))


def is_utf8(text: str) -> bool:
    """Whether `text` has a UTF-8 form (no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _surrogate(text: str, name: str) -> str:
    at = next(i for i, char in enumerate(text) if "\ud800" <= char <= "\udfff")
    return (
        f"{name} holds a lone surrogate ({text[at]!r} at character {at + 1}), "
        "which UTF-8 cannot encode"
    )


class _TooDeep(Exception):
    pass


def _why(value: object, name: str) -> str:
    """The first thing in `value` strict JSON cannot carry, named by its path."""
    try:
        found = _problem(value, name, 0)
    except _TooDeep:
        return f"{name} is nested too deeply"
    return found or f"{name} cannot be encoded as JSON"


def _problem(value: object, name: str, depth: int) -> str | None:
    if depth > _MAX_DEPTH:
        raise _TooDeep
    if isinstance(value, str):
        return None if is_utf8(value) else _surrogate(value, name)
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        shown = "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
        return f"{name} is {shown}, which JSON cannot carry"
    if isinstance(value, int) or value is None:
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int | float) and key is not None:
                return f"{name} has a key of type {type(key).__name__}, which JSON cannot carry"
            found = _problem(key, f"a key of {name}", depth + 1)
            found = found or _problem(item, f"{name}.{key}", depth + 1)
            if found:
                return found
        return None
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if found := _problem(item, f"{name}[{i}]", depth + 1):
                return found
        return None
    return f"{name} is a {type(value).__name__}, which is not JSON"
