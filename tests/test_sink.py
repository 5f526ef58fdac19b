"""Parts and final assembly: fixed schema, sorted bucketed parts, streaming last-wins merge."""

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
    JSON_TYPE,
    OUTPUT_SCHEMA,
    PART_SCHEMA,
    assemble_results,
    convert_column,
    parse_lines,
    parse_type,
    read_part_outcomes,
    write_part,
)

if TYPE_CHECKING:
    from pathlib import Path


def _result(i: int, status: str = "succeeded", **kw: object) -> Result:
    return Result(index=i, id=f"r{i}", status=status, completed_at_us=1_000_000 * i, **kw)  # type: ignore[arg-type]


def _lines(results: list[Result]) -> bytes:
    return b"".join(encode_result(r) for r in results)


def _part(tmp_path: Path, seq: int, results: list[Result]) -> sink.PartOutcomes:
    parts = tmp_path / "parts"
    parts.mkdir(exist_ok=True)
    table, warnings = parse_lines(_lines(results))
    assert warnings == []
    written = write_part(parts, seq, [table], run_dir=tmp_path)
    assert written is not None
    return written


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
    good = [_result(i) for i in range(5)]
    data = (
        _lines(good[:2])
        + b'{"_index": 1, "id": \n'
        + _lines(good[2:3])
        + b'{"_index":7,"id":"x","status":"maybe"}\n'
        + b'{"_index":8,"id":"y","status":"succeeded","attempts":"two"}\n'
        + b"\n"
        + _lines(good[3:])
    )
    table, warnings = parse_lines(data, offset=100, name="seg-000003.jsonl")
    assert table.column("_index").to_pylist() == [0, 1, 2, 3, 4]
    assert len(warnings) == 3 and all("seg-000003.jsonl" in w for w in warnings)
    assert f"byte {100 + len(_lines(good[:2]))}" in warnings[0]


def test_parse_lines_survives_a_lone_surrogate() -> None:
    """Text with a lone surrogate (from a bad input byte) is kept, with a replacement char."""
    table, warnings = parse_lines(_lines([_result(0, text="a\ud800b"), _result(1, text="ok")]))
    assert warnings == [] and table.column("text").to_pylist() == ["a?b", "ok"]


def test_write_part_sorts_keeps_last_per_index_and_buckets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part is sorted by index, one row per index (last wins), one row group per bucket."""
    monkeypatch.setattr(sink, "BUCKET_ROWS", 8)
    results = [_result(9), _result(3, "errored"), _result(20), _result(3), _result(1)]
    written = _part(tmp_path, 7, results)
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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("string", pa.string()),
        ("int64", pa.int64()),
        ("double", pa.float64()),
        ("bool", pa.bool_()),
        ("list<item: string>", pa.list_(pa.string())),
        ("large_list<element: int64>", pa.large_list(pa.int64())),
        (
            "struct<a: int64, b: list<item: string>>",
            pa.struct([("a", pa.int64()), ("b", pa.list_(pa.string()))]),
        ),
        ("timestamp[us, tz=UTC]", pa.timestamp("us", tz="UTC")),
        ("timestamp[ms]", pa.timestamp("ms")),
        ("decimal128(10, 2)", pa.decimal128(10, 2)),
        ("map<string, int64>", pa.map_(pa.string(), pa.int64())),
        ("fixed_size_list<item: double>[3]", pa.list_(pa.float64(), 3)),
        ("dictionary<values=string, indices=int32, ordered=0>", pa.string()),
        ("date32[day]", pa.date32()),
        ("json", JSON_TYPE),
        ("null", JSON_TYPE),
        ("no such type", JSON_TYPE),
        ("list<item: frobnicate>", JSON_TYPE),
    ],
)
def test_parse_type_understands_arrow_type_strings(text: str, expected: object) -> None:
    """Arrow's own type strings parse back to the type; anything else means JSON text."""
    parsed = parse_type(text)
    if expected is JSON_TYPE:
        assert parsed is JSON_TYPE
    else:
        assert parsed is not None and parsed.equals(expected)


def test_convert_column_fits_casts_or_refuses() -> None:
    """Values convert to the type, cast from their JSON form, or the column is refused."""
    ints = convert_column([1, None, 3], pa.int64())
    assert ints is not None and ints.to_pylist() == [1, None, 3]
    assert convert_column([1, 2.5], pa.int64()) is None
    assert convert_column([True, 1], pa.bool_()) is None  # mixed kinds: JSON text instead
    texts = convert_column(["a", 5, {"k": 1}, None], pa.string())
    assert texts is not None and texts.to_pylist() == [
        "a",
        "5",
        '{"k":1}',
        None,
    ]
    ts = convert_column(["2024-01-02T03:04:05+00:00"], pa.timestamp("us", tz="UTC"))
    assert ts is not None and ts.type == pa.timestamp("us", tz="UTC")
    as_json = convert_column([{"a": 1}, "x", None], JSON_TYPE)
    assert as_json is not None and as_json.to_pylist() == ['{"a":1}', '"x"', None]


def _assemble(
    tmp_path: Path, parts: list[sink.PartOutcomes], total: int, extras: dict[str, str]
) -> tuple[pa.Table, list[str]]:
    out = tmp_path / "results.parquet"
    warnings = assemble_results(
        [p.info for p in parts], out, total_rows=total, extra_columns=extras, run_dir=tmp_path
    )
    return pq.read_table(out), warnings


def test_assemble_is_in_input_order_with_last_outcome_winning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Across parts and buckets, rows come out in index order and later parts win."""
    monkeypatch.setattr(sink, "BUCKET_ROWS", 4)
    p1 = _part(tmp_path, 1, [_result(i, "errored") for i in (0, 1, 2, 5, 6, 17)])
    p2 = _part(tmp_path, 2, [_result(i) for i in (3, 4, 7, 8, 9, 10)])
    p3 = _part(tmp_path, 3, [_result(i) for i in (1, 17, 11, 12)])  # retries, straddling
    table, warnings = _assemble(tmp_path, [p3, p1, p2], 18, {})
    assert warnings == []
    assert table.schema.equals(OUTPUT_SCHEMA)
    assert table.column("id").to_pylist() == [f"r{i}" for i in [*range(13), 17]]
    status = dict(
        zip(table.column("id").to_pylist(), table.column("status").to_pylist(), strict=True)
    )
    assert status["r1"] == "succeeded" and status["r17"] == "succeeded"
    assert status["r0"] == "errored" and status["r5"] == "errored"


def test_assemble_reads_parts_written_on_another_bucket_grid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Row groups that span several buckets (another version's grid) are split on read."""
    first = _part(tmp_path, 1, [_result(i, "errored") for i in range(0, 40, 3)])
    second = _part(tmp_path, 2, [_result(i) for i in range(0, 40, 2)])
    monkeypatch.setattr(sink, "BUCKET_ROWS", 4)
    reread = [read_part_outcomes(p.info.seq, p.info.path) for p in (first, second)]
    assert reread[0].info.groups == ((0, 9, 0),)
    table, _ = _assemble(tmp_path, reread, 40, {})
    expected = sorted(set(range(0, 40, 3)) | set(range(0, 40, 2)))
    assert table.column("id").to_pylist() == [f"r{i}" for i in expected]
    status = table.column("status").to_pylist()
    assert status == ["succeeded" if i % 2 == 0 else "errored" for i in expected]


def test_assemble_leaves_out_rows_beyond_the_total(tmp_path: Path) -> None:
    """Rows an earlier, larger run recorded past the current input size are left out."""
    p = _part(tmp_path, 1, [_result(i) for i in range(10)])
    table, _ = _assemble(tmp_path, [p], 4, {})
    assert table.column("id").to_pylist() == ["r0", "r1", "r2", "r3"]


def test_assemble_types_extras_and_falls_back_to_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Carried-through columns get their types; a misfit in a later bucket turns JSON."""
    monkeypatch.setattr(sink, "BUCKET_ROWS", 2)
    rows = [
        _result(i, extra={"n": i, "tags": ["a", str(i)], "score": 1.5, "mixed": i, "status": "x"})
        for i in range(5)
    ]
    rows.append(_result(5, extra={"n": 5, "tags": ["z"], "mixed": "five", "status": "y"}))
    p = _part(tmp_path, 1, rows)
    extras = {"n": "int64", "tags": "list<item: string>", "score": "double", "mixed": "int64"}
    extras |= {"status": "string", "gone": "json", "odd": "whatever<"}
    table, warnings = _assemble(tmp_path, [p], 6, extras)
    types = {f.name: str(f.type) for f in table.schema}
    assert table.schema.names[: len(OUTPUT_SCHEMA)] == OUTPUT_SCHEMA.names
    assert types["n"] == "int64" and types["score"] == "double"
    assert types["tags"].startswith("list<") and types["mixed"] == "string"
    assert types["input_status"] == "string" and types["gone"] == "string"
    assert types["odd"] == "string"
    assert table.column("mixed").to_pylist() == ["0", "1", "2", "3", "4", '"five"']
    assert table.column("tags").to_pylist()[5] == ["z"]
    assert table.column("score").to_pylist()[5] is None
    assert table.column("input_status").to_pylist()[0] == "x"
    assert any("'mixed'" in w for w in warnings) and any("'odd'" in w for w in warnings)


def test_all_errored_and_empty_runs_have_the_full_schema(tmp_path: Path) -> None:
    """Every column keeps its type when all rows errored, or when nothing was recorded."""
    p = _part(tmp_path, 1, [_result(i, "errored", error_type="timeout") for i in range(3)])
    table, _ = _assemble(tmp_path, [p], 3, {"expected": "string", "nothing": "null"})
    assert table.num_rows == 3
    assert not any(pa.types.is_null(f.type) for f in table.schema)
    empty, _ = _assemble(tmp_path, [], 3, {"expected": "string"})
    assert empty.num_rows == 0 and empty.schema.names == [*OUTPUT_SCHEMA.names, "expected"]
    assert not any(pa.types.is_null(f.type) for f in empty.schema)


def test_assemble_reports_a_corrupt_part(tmp_path: Path) -> None:
    """A part that cannot be read back raises CorruptPartError naming it; no output appears."""
    p = _part(tmp_path, 1, [_result(0)])
    p.info.path.write_bytes(b"not parquet at all")
    with pytest.raises(sink.CorruptPartError, match=r"part-000001\.parquet"):
        _assemble(tmp_path, [p], 1, {})
    assert not (tmp_path / "results.parquet").exists()
    assert not (tmp_path / "results.parquet.tmp").exists()
