"""jsoncodec: orjson where it gives what the standard library gives, the standard library
where it does not (big integers, NaN, keys that are not text, lone surrogates, UTF-16)."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import TYPE_CHECKING

import pytest

from batchrunner import jsoncodec
from batchrunner.calllog import CallLog
from batchrunner.records import Attempt

if TYPE_CHECKING:
    from pathlib import Path

_STD = {"ensure_ascii": False, "separators": (",", ":")}


@pytest.mark.parametrize(
    "value",
    [
        {"model": "m", "messages": [{"role": "user", "content": "héllo ✓ 😀"}], "n": 1},
        {"a": [1, 2.5, None, True, False, "x"], "b": {"c": -3}},
        {"big": 2**70, "neg": -(2**70)},
        {1: "a key that is not text"},
        [0.1, 1e-05, 1e20, -0.0],
    ],
)
def test_dumps_is_compact_utf8_json_that_reads_back_the_same(value: object) -> None:
    data = jsoncodec.dumps(value)
    assert json.loads(data) == json.loads(json.dumps(value, **_STD))  # type: ignore[arg-type]
    assert b": " not in data and b", " not in data


def test_dumps_keeps_big_integers_exact_and_uses_default() -> None:
    assert jsoncodec.dumps({"n": 2**64}) == b'{"n":18446744073709551616}'
    stamp = dt.date(2026, 11, 30)
    assert jsoncodec.dumps({"d": {1, 2}}, default=sorted) == b'{"d":[1,2]}'
    assert jsoncodec.dumps({1: stamp}, default=str) == b'{"1":"2026-11-30"}'


def test_dumps_raises_on_a_lone_surrogate_and_on_nan_when_told() -> None:
    with pytest.raises(UnicodeEncodeError):
        jsoncodec.dumps({"id": "a\ud800b"})
    with pytest.raises(ValueError, match="Out of range float"):
        jsoncodec.dumps({1: math.nan}, allow_nan=False)  # a key orjson refuses: stdlib's turn


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"usage":{"input_tokens":12}}', {"usage": {"input_tokens": 12}}),
        (b'{"n":123456789012345678901234567890}', {"n": 123456789012345678901234567890}),
        (b'{"n":-9223372036854775809}', {"n": -9223372036854775809}),
        (b'{"s":"\\ud800"}', {"s": "\ud800"}),
        ('{"t":"é"}'.encode("utf-16"), {"t": "é"}),
    ],
)
def test_loads_reads_what_the_standard_library_reads(data: bytes, expected: object) -> None:
    assert jsoncodec.loads(data) == expected


def test_loads_reads_nan_and_refuses_what_is_not_json() -> None:
    assert math.isnan(jsoncodec.loads(b'{"x":NaN}')["x"])
    with pytest.raises(json.JSONDecodeError):
        jsoncodec.loads(b"<html>bad gateway</html>")
    with pytest.raises(ValueError):
        jsoncodec.loads(b'{"x":"\xff"}')


def test_calls_log_escapes_a_lone_surrogate_and_writes_utf8(tmp_path: Path) -> None:
    path = tmp_path / "calls.log"
    echoed: list[str] = []
    with CallLog(path, echo=echoed.append) as log:
        for row_id in ("r\ud800", "é"):
            log.write(
                Attempt(
                    row_id=row_id,
                    attempt=1,
                    http_status=200,
                    request_id=None,
                    response_id=None,
                    latency_ms=1.0,
                    error_type=None,
                    retry_after=None,
                )
            )
    lines = path.read_bytes().splitlines()
    assert [json.loads(line)["row_id"] for line in lines] == ["r\ud800", "é"]
    assert b"\\ud800" in lines[0] and "é".encode() in lines[1]
    assert [json.loads(line)["row_id"] for line in echoed] == ["r\ud800", "é"]
