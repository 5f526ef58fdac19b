"""Final assembly: type strings, column conversion, streaming last-wins merge of parts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrunner.rundir import parts as part_files
from batchrunner.rundir.arrowtypes import JSON_TYPE, convert_column, parse_type
from batchrunner.rundir.parts import OUTPUT_SCHEMA, read_part_outcomes
from batchrunner.rundir.results import assemble_results
from tests.helpers import make_part, make_result

if TYPE_CHECKING:
    from pathlib import Path


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
    tmp_path: Path, parts: list[part_files.PartOutcomes], total: int, extras: dict[str, str]
) -> tuple[pa.Table, list[str]]:
    out = tmp_path / "results.parquet"
    ok, bad = _recorded(parts, total)
    warnings = assemble_results(
        [p.info for p in parts],
        out,
        total_rows=total,
        extra_columns=extras,
        run_dir=tmp_path,
        succeeded=ok,
        errored=bad,
    )
    return pq.read_table(out), warnings


def _recorded(parts: list[part_files.PartOutcomes], total: int) -> tuple[int, int]:
    """(succeeded, errored) below `total`, last outcome per index (what a done set counts)."""
    last: dict[int, bool] = {}
    for part in sorted(parts, key=lambda p: p.info.seq):
        last.update(zip(part.indices, part.succeeded, strict=True))
    kept = [ok for i, ok in last.items() if i < total]
    return sum(kept), len(kept) - sum(kept)


def test_assemble_is_in_input_order_with_last_outcome_winning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Across parts and buckets, rows come out in index order and later parts win."""
    monkeypatch.setattr(part_files, "BUCKET_ROWS", 4)
    p1 = make_part(tmp_path, 1, [make_result(i, "errored") for i in (0, 1, 2, 5, 6, 17)])
    p2 = make_part(tmp_path, 2, [make_result(i) for i in (3, 4, 7, 8, 9, 10)])
    p3 = make_part(tmp_path, 3, [make_result(i) for i in (1, 17, 11, 12)])  # retries, straddling
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
    first = make_part(tmp_path, 1, [make_result(i, "errored") for i in range(0, 40, 3)])
    second = make_part(tmp_path, 2, [make_result(i) for i in range(0, 40, 2)])
    monkeypatch.setattr(part_files, "BUCKET_ROWS", 4)
    reread = [read_part_outcomes(p.info.seq, p.info.path) for p in (first, second)]
    assert reread[0].info.groups == ((0, 9, 0),)
    table, _ = _assemble(tmp_path, reread, 40, {})
    expected = sorted(set(range(0, 40, 3)) | set(range(0, 40, 2)))
    assert table.column("id").to_pylist() == [f"r{i}" for i in expected]
    status = table.column("status").to_pylist()
    assert status == ["succeeded" if i % 2 == 0 else "errored" for i in expected]


def test_assemble_leaves_out_rows_beyond_the_total(tmp_path: Path) -> None:
    """Rows an earlier, larger run recorded past the current input size are left out."""
    p = make_part(tmp_path, 1, [make_result(i) for i in range(10)])
    table, _ = _assemble(tmp_path, [p], 4, {})
    assert table.column("id").to_pylist() == ["r0", "r1", "r2", "r3"]


def test_assemble_types_extras_and_falls_back_to_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Carried-through columns get their types; a misfit in a later bucket turns JSON."""
    monkeypatch.setattr(part_files, "BUCKET_ROWS", 2)
    rows = [
        make_result(
            i, extra={"n": i, "tags": ["a", str(i)], "score": 1.5, "mixed": i, "status": "x"}
        )
        for i in range(5)
    ]
    rows.append(make_result(5, extra={"n": 5, "tags": ["z"], "mixed": "five", "status": "y"}))
    p = make_part(tmp_path, 1, rows)
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
    p = make_part(tmp_path, 1, [make_result(i, "errored", error_type="timeout") for i in range(3)])
    table, _ = _assemble(tmp_path, [p], 3, {"expected": "string", "nothing": "null"})
    assert table.num_rows == 3
    assert not any(pa.types.is_null(f.type) for f in table.schema)
    empty, _ = _assemble(tmp_path, [], 3, {"expected": "string"})
    assert empty.num_rows == 0 and empty.schema.names == [*OUTPUT_SCHEMA.names, "expected"]
    assert not any(pa.types.is_null(f.type) for f in empty.schema)


def test_assemble_reports_a_corrupt_part(tmp_path: Path) -> None:
    """A part that cannot be read back raises CorruptPartError naming it; no output appears."""
    p = make_part(tmp_path, 1, [make_result(0)])
    p.info.path.write_bytes(b"not parquet at all")
    with pytest.raises(part_files.CorruptPartError, match=r"part-000001\.parquet"):
        _assemble(tmp_path, [p], 1, {})
    assert not (tmp_path / "results.parquet").exists()
    assert not (tmp_path / "results.parquet.tmp").exists()
