"""Parts: fixed schema, journal lines parsed back, sorted bucketed part files."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrunner import sink
from batchrunner.journal import encode_result
from batchrunner.records import Result
from batchrunner.sink import (
    OUTPUT_SCHEMA,
    PART_SCHEMA,
    parse_lines,
    read_part_outcomes,
    write_part,
)
from tests.partdata import journal_lines, make_part, make_result

if TYPE_CHECKING:
    from pathlib import Path


def test_output_schema_matches_the_interface() -> None:
    """results.parquet's fixed columns and types are exactly INTERFACE.md's."""
    expected = {
        "id": "string",
        "status": "string",
        "response_id": "string",
        "request_id": "string",
        "model": "string",
        "text": "string",
        "stop_reason": "string",
        "input_tokens": "int64",
        "output_tokens": "int64",
        "attempts": "int32",
        "latency_ms": "double",
        "http_status": "int32",
        "error_type": "string",
        "error_message": "string",
        "response": "string",
        "completed_at": "timestamp[us, tz=UTC]",
    }
    assert {f.name: str(f.type) for f in OUTPUT_SCHEMA} == expected
    assert OUTPUT_SCHEMA.names == list(expected)
    assert PART_SCHEMA.names == [*expected, "_index", "_extra"]


def test_parse_lines_reads_every_field_back() -> None:
    """A journal line parses into a part row carrying every Result field."""
    r = Result(
        index=4,
        id="q4",
        status="errored",
        request_id="req",
        attempts=6,
        latency_ms=12.5,
        http_status=529,
        error_type="overloaded_error",
        error_message="busy",
        completed_at_us=1_700_000_000_123_456,
        extra={"expected": "x"},
    )
    table, warnings = parse_lines(encode_result(r))
    assert warnings == [] and table.schema.equals(PART_SCHEMA)
    row = table.to_pylist()[0]
    assert row["_index"] == 4 and row["status"] == "errored" and row["http_status"] == 529
    assert row["attempts"] == 6 and row["response_id"] is None
    assert row["completed_at"].timestamp() == pytest.approx(1_700_000_000.123456)
    assert json.loads(row["_extra"]) == {"expected": "x"}


def test_parse_lines_skips_garbled_lines_with_a_warning() -> None:
    """Bad lines in the middle are skipped by name and offset; the good ones all survive."""
    good = [make_result(i) for i in range(5)]
    data = (
        journal_lines(good[:2])
        + b'{"_index": 1, "id": \n'
        + journal_lines(good[2:3])
        + b'{"_index":7,"id":"x","status":"maybe"}\n'
        + b'{"_index":8,"id":"y","status":"succeeded","attempts":"two"}\n'
        + b"\n"
        + journal_lines(good[3:])
    )
    table, warnings = parse_lines(data, offset=100, name="seg-000003.jsonl")
    assert table.column("_index").to_pylist() == [0, 1, 2, 3, 4]
    assert len(warnings) == 3 and all("seg-000003.jsonl" in w for w in warnings)
    assert f"byte {100 + len(journal_lines(good[:2]))}" in warnings[0]


def test_parse_lines_survives_a_lone_surrogate() -> None:
    """Text with a lone surrogate (from a bad input byte) is kept, with a replacement char."""
    table, warnings = parse_lines(
        journal_lines([make_result(0, text="a\ud800b"), make_result(1, text="ok")])
    )
    assert warnings == [] and table.column("text").to_pylist() == ["a?b", "ok"]


def test_write_part_sorts_keeps_last_per_index_and_buckets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part is sorted by index, one row per index (last wins), one row group per bucket."""
    monkeypatch.setattr(sink, "BUCKET_ROWS", 8)
    results = [
        make_result(9),
        make_result(3, "errored"),
        make_result(20),
        make_result(3),
        make_result(1),
    ]
    written = make_part(tmp_path, 7, results)
    assert written.info.path.name == "part-000007.parquet"
    assert written.indices == [1, 3, 9, 20] and written.succeeded == [True] * 4
    assert written.info.groups == ((0, 0, 0), (1, 1, 1), (2, 2, 2))
    assert list((tmp_path / "parts").iterdir()) == [written.info.path]  # no .tmp left
    again = read_part_outcomes(7, written.info.path)
    assert again == written


def test_write_part_of_no_rows_writes_nothing(tmp_path: Path) -> None:
    """An empty segment (every line torn or garbled) leaves no part and no temp file."""
    (tmp_path / "parts").mkdir()
    empty, _ = parse_lines(b"")
    assert write_part(tmp_path / "parts", 1, [empty], run_dir=tmp_path) is None
    assert list((tmp_path / "parts").iterdir()) == []


def test_read_part_outcomes_rejects_a_foreign_file(tmp_path: Path) -> None:
    """A Parquet file with other columns is not taken for a part."""
    path = tmp_path / "part-000001.parquet"
    pq.write_table(pa.table({"a": [1]}), path)
    with pytest.raises(pa.ArrowInvalid):
        read_part_outcomes(1, path)
