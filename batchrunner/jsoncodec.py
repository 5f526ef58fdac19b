"""JSON on the per-row path (request bodies, answers, journal and calls.log lines): orjson,
with the standard library for what orjson reads or writes differently.

orjson took ~7% off a 10 k-row run's CPU (BENCHMARKS.md). Where it differs, the
standard library keeps the old behaviour:
- writing: integers past 64 bits, keys that are not text, and lone surrogates (which then
  raise UnicodeEncodeError, as `str.encode` did before);
- reading: an integer past 64 bits (orjson makes it a float: a run of 19 digits sends the
  text to the standard library), NaN and Infinity, lone surrogates, UTF-16 and UTF-32.

orjson writes NaN and Infinity as null: the values written here hold none (requests are
refused at validation if they do; latencies and counts are finite).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from collections.abc import Callable

# A run of 19 digits, found as "0" * 19 once every digit reads "0": bytes.translate and
# `in` run at C speed (0.5 µs for a 730-byte answer; a `\d{19}` regex took 6.4 µs, more
# than orjson's parse, and 14 times as long on a 1 MB body).
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_LONG_NUMBER = b"0" * 19


def dumps(
    value: object, *, default: Callable[[Any], object] | None = None, allow_nan: bool = True
) -> bytes:
    """Compact UTF-8 JSON, non-ASCII as is (httpx's `json=` bytes, give or take a
    float's spelling). `default` turns what JSON has no type for into what it has;
    `allow_nan=False`: a NaN that reaches the standard library raises ValueError."""
    try:
        return orjson.dumps(value, default=default)
    except TypeError:
        text = json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), allow_nan=allow_nan, default=default
        )
        return text.encode("utf-8")


def loads(data: bytes) -> Any:
    """The value of a JSON text; raises ValueError (json.JSONDecodeError or
    UnicodeDecodeError) as `json.loads` does."""
    if _LONG_NUMBER not in data.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # maybe JSON only the standard library reads: it says
    return json.loads(data)
