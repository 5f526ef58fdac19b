"""Parts: fixed schema, journal lines parsed back, sorted bucketed part files."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrunner.errors import IntegrityError
from batchrunner.records import Result
from batchrunner.rundir import parts as part_files
from batchrunner.rundir.journal import encode_result
from batchrunner.rundir.lines import parse_lines
from batchrunner.rundir.parts import OUTPUT_SCHEMA, PART_SCHEMA, read_part_outcomes, write_part
from tests.helpers import journal_lines, make_part, make_result

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
        "tool_calls": "list<item: struct<id: string, name: string, arguments: string>>",
    }
    assert {f.name: str(f.type) for f in OUTPUT_SCHEMA} == expected
    assert OUTPUT_SCHEMA.names == list(expected)
    assert PART_SCHEMA.names == [*expected, "_index", "_extra", "parsed"]


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


def test_parse_lines_keeps_every_row_and_notes_values_that_do_not_fit() -> None:
    """Values too big or of the wrong kind become null (or JSON text), said in the row."""
    good = [make_result(i) for i in range(5)]
    data = (
        journal_lines(good[:2])
        + b'{"_index":2,"id":"big","status":"succeeded","input_tokens":1'
        + b"0" * 30
        + b"}\n"
        + b"\n"
        + b'{"_index":3,"id":"x","status":"errored","attempts":"two","http_status":2147483648,'
        + b'"error_message":"boom","latency_ms":1e400,"model":7,"surprise":1}\n'
        + b'{"_index":4,"id":"y","status":"succeeded","output_tokens":9223372036854775808}\n'
        + journal_lines(good[3:])
    )
    table, warnings = parse_lines(data, name="seg-000003.jsonl")
    rows = table.to_pylist()
    assert [r["_index"] for r in rows] == [0, 1, 2, 3, 4, 3, 4]
    assert rows[2]["input_tokens"] is None and rows[2]["error_message"] == (
        "input_tokens 1000000000000000000000000000000 does not fit int64; stored as null"
    )
    assert rows[3]["attempts"] is None and rows[3]["http_status"] is None
    assert rows[3]["latency_ms"] == float("inf") and rows[3]["model"] == "7"
    assert rows[3]["error_message"] == (
        'boom; attempts "two" does not fit int32; stored as null; http_status 2147483648 '
        "does not fit int32; stored as null; model was not text; stored as its JSON text; "
        'unknown field "surprise" = 1 left out'
    )
    assert rows[4]["output_tokens"] is None and "does not fit int64" in rows[4]["error_message"]
    assert len(warnings) == 1 and warnings[0].startswith("seg-000003.jsonl: 3 row(s) held")


def test_parse_lines_raises_for_a_complete_line_that_is_no_outcome() -> None:
    """A garbled complete line stops the conversion loudly, naming segment and byte."""
    good = journal_lines([make_result(0), make_result(1)])
    bad_lines = (
        b'{"_index": 1, "id": ',
        b'{"_index":7,"id":"x","status":"maybe"}',
        b'{"_index":7,"id":"x\xff","status":"succeeded"}',  # not UTF-8: Arrow lets it through
        b'{"id":"x","status":"succeeded"}',
        b"[1]",
        b"\x00\x00",
    )
    for bad in bad_lines:
        with pytest.raises(IntegrityError) as caught:
            parse_lines(good + bad + b"\n" + good, offset=100, name="seg-000003.jsonl")
        assert f"seg-000003.jsonl: the line at byte {100 + len(good)} is not an outcome" in str(
            caught.value
        )


def test_parse_lines_converts_a_line_of_any_size() -> None:
    """A 9 MB line (Arrow's default block is 1 MiB) converts, text intact, fast path or not."""
    text = "ä" * (4 << 20)
    data = journal_lines([make_result(0), make_result(1, text=text), make_result(2)])
    table, warnings = parse_lines(data)
    assert warnings == [] and table.column("_index").to_pylist() == [0, 1, 2]
    assert table.column("text")[1].as_py() == text


def test_parse_lines_reads_a_lone_surrogate_escape_without_dropping_the_row() -> None:
    """A journal line with a "\\ud800" escape (not ours) keeps its row, with a note."""
    data = b'{"_index":0,"id":"a","status":"succeeded","text":"x\\ud800y"}\n'
    table, _ = parse_lines(data)
    row = table.to_pylist()[0]
    assert row["text"] == "x\ufffdy" and "U+FFFD" in row["error_message"]
    with pytest.raises(IntegrityError, match="has no UTF-8 form"):
        parse_lines(b'{"_index":0,"id":"\\udc80","status":"succeeded"}\n')


def test_write_part_sorts_keeps_last_per_index_and_buckets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part is sorted by index, one row per index (last wins), one row group per bucket."""
    monkeypatch.setattr(part_files, "BUCKET_ROWS", 8)
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


@pytest.mark.parametrize(
    ("rows", "proved"),
    [
        ([(i, "succeeded") for i in range(5)], True),
        ([(i, "errored") for i in range(3, 9)], True),
        # across a bucket boundary: two row groups that chain
        (
            [
                (i, "succeeded")
                for i in range(part_files.BUCKET_ROWS - 2, part_files.BUCKET_ROWS + 3)
            ],
            True,
        ),
        ([(0, "succeeded"), (1, "errored"), (2, "succeeded")], False),  # two outcomes
        ([(0, "succeeded"), (2, "succeeded"), (3, "succeeded")], False),  # a gap
        # row groups each contiguous, but not one run: buckets 0 and 2
        ([(0, "succeeded"), (2 * part_files.BUCKET_ROWS, "succeeded")], False),
    ],
)
def test_the_footer_proves_outcomes_only_when_they_are_one_contiguous_run(
    tmp_path: Path, rows: list[tuple[int, str]], proved: bool
) -> None:
    """From the footer alone when its statistics prove the rows (a range, one outcome),
    else from the columns; either way exactly what the columns hold."""
    part = make_part(tmp_path, 1, [make_result(i, status) for i, status in rows])  # type: ignore[arg-type]
    fast = read_part_outcomes(1, part.info.path, from_footer=True)
    slow = read_part_outcomes(1, part.info.path)
    assert isinstance(fast.indices, range) is proved
    assert isinstance(slow.indices, list)
    assert list(fast.indices) == slow.indices == [i for i, _ in rows]
    assert fast.succeeded == slow.succeeded == [s == "succeeded" for _, s in rows]
