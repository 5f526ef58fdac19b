"""The columns added after the first layout (`tool_calls`, `parsed`): old parts, odd values.

Parts written before these columns existed must be read, merged and assembled with them
null; tool calls and parsed answers must survive the journal whatever text they hold; and
the `parsed` columns of --json-schema come out typed, or as JSON text when a value does not
fit its type.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrunner.rundir.journal import encode_result
from batchrunner.rundir.lines import parse_lines
from batchrunner.rundir.parts import (
    ADDED_COLUMNS,
    PART_SCHEMA,
    conform_part,
    known_layout,
    read_part_outcomes,
)
from tests.helpers import commit_all, make_result, open_run

if TYPE_CHECKING:
    from pathlib import Path

CALL = {"id": "toolu_1", "name": "get_weather", "arguments": '{"city":"Zürich"}'}
OLD_SCHEMA = pa.schema([f for f in PART_SCHEMA if f.name not in ADDED_COLUMNS])


def _old_part(path: Path) -> None:
    """Rewrite a part as the first layout wrote it: without the added columns."""
    pq.write_table(pq.read_table(path).select(OLD_SCHEMA.names), path, compression="zstd")


def test_conform_part_fills_the_added_columns_of_an_old_layout() -> None:
    """An old-layout table gains null `tool_calls` and `parsed`; others are refused."""
    table, _ = parse_lines(encode_result(make_result(0, tool_calls=(CALL,), parsed="{}")))
    old = table.select(OLD_SCHEMA.names)
    assert known_layout(old.schema) and known_layout(PART_SCHEMA)
    conformed = conform_part(old)
    assert conformed.schema.equals(PART_SCHEMA)
    assert conformed.column("tool_calls").to_pylist() == [None]
    assert conformed.column("parsed").to_pylist() == [None]
    assert conform_part(table).column("tool_calls").to_pylist() == [[CALL]]
    foreign = old.drop_columns(["text"])
    assert not known_layout(foreign.schema)
    with pytest.raises(pa.ArrowInvalid):
        conform_part(foreign)


def test_an_old_part_and_a_larger_segment_merge_into_the_new_layout(tmp_path: Path) -> None:
    """A crash left an old-layout part and its segment holding one more row: on open the
    part is rebuilt from both in the new layout, and results keep each row's calls."""
    run = tmp_path / "run"
    with open_run(run, total=3) as rd:
        rd.record(make_result(0))
        rd.record(make_result(1))
        commit_all(rd)
    part = run / "parts" / "part-000001.parquet"
    _old_part(part)
    assert read_part_outcomes(1, part).indices == [0, 1]
    lines = [
        make_result(0, tool_calls=()),
        make_result(1, tool_calls=()),
        make_result(2, tool_calls=(CALL,)),
    ]
    (run / "journal" / "seg-000001.jsonl").write_bytes(b"".join(map(encode_result, lines)))
    with open_run(run, total=3) as rd:
        assert rd.done.succeeded == 3 and list((run / "journal").iterdir()) == []
        assert pq.read_schema(part).equals(PART_SCHEMA)
        out = rd.finalize({})
    rows = pq.read_table(out).to_pylist()
    assert [r["tool_calls"] for r in rows] == [[], [], [CALL]]  # the segment's rows win


def test_finalize_adds_typed_parsed_columns_and_falls_back_to_json_text(tmp_path: Path) -> None:
    """`parsed` and `parsed.<field>` follow the fixed columns; a value too big for int64
    turns that column into JSON text, with a warning; an errored row has nulls."""
    run = tmp_path / "run"
    with open_run(run, total=3) as rd:
        rd.record(make_result(0, parsed='{"name":"Ann","age":3}', extra={"parsed": "x"}))
        rd.record(make_result(1, "errored", error_type="invalid_output", extra={"parsed": "y"}))
        rd.record(make_result(2, parsed='{"name":"Bo","age":1' + "0" * 30 + "}", extra={}))
        out = rd.finalize({"parsed": "string"}, None, {"name": "string", "age": "int64"})
        assert any("'parsed.age'" in w and "JSON text" in w for w in rd.warnings)
    table = pq.read_table(out)
    names = table.schema.names
    assert names[names.index("tool_calls") + 1 :] == [
        "parsed",
        "parsed.name",
        "parsed.age",
        "input_parsed",
    ]
    assert table.schema.field("parsed.name").type == pa.string()
    assert table.column("parsed.name").to_pylist() == ["Ann", None, "Bo"]
    assert table.column("parsed.age").to_pylist() == ["3", None, "1" + "0" * 30]
    assert table.column("input_parsed").to_pylist() == ["x", "y", None]


def test_finalize_types_parsed_columns_that_fit(tmp_path: Path) -> None:
    """Values that fit give the schema's Arrow types: int64, double, bool."""
    run = tmp_path / "run"
    with open_run(run, total=1) as rd:
        rd.record(make_result(0, parsed='{"n":3,"x":2.5,"ok":true}'))
        out = rd.finalize({}, None, {"n": "int64", "x": "double", "ok": "bool"})
        assert rd.warnings == []
    table = pq.read_table(out)
    types = {n: str(table.schema.field(n).type) for n in ("parsed.n", "parsed.x", "parsed.ok")}
    assert types == {"parsed.n": "int64", "parsed.x": "double", "parsed.ok": "bool"}
    assert table.to_pylist()[0]["parsed.ok"] is True


def test_tool_calls_with_unpaired_surrogates_survive_the_journal() -> None:
    """Arguments (JSON text) keep a lone surrogate as its escape; a name gets U+FFFD,
    said in error_message; `parsed` is JSON text too."""
    call = {"id": "t", "name": "f\ud800", "arguments": '{"a":"\ud800"}'}
    line = encode_result(make_result(0, tool_calls=(call,), parsed='"\udc00"'))
    table, _ = parse_lines(line)
    row = table.to_pylist()[0]
    (stored,) = row["tool_calls"]
    assert json.loads(stored["arguments"]) == {"a": "\ud800"}
    assert stored["name"] == "f\ufffd" and stored["id"] == "t"
    assert json.loads(row["parsed"]) == "\udc00"
    assert "tool_calls.name: 1 unpaired UTF-16 surrogate" in row["error_message"]


def test_a_tool_calls_value_that_is_no_list_of_calls_is_stored_as_null() -> None:
    """A damaged line's tool_calls (not a list of {id, name, arguments} texts) becomes
    null with a note; the row is kept."""
    good = encode_result(make_result(0, tool_calls=(CALL,)))
    bad = b'{"_index":1,"id":"r1","status":"succeeded","tool_calls":[{"id":5}]}\n'
    table, warnings = parse_lines(good + bad)
    rows = table.to_pylist()
    assert rows[0]["tool_calls"] == [CALL] and rows[1]["tool_calls"] is None
    assert "is not a list of tool calls" in rows[1]["error_message"]
    assert len(warnings) == 1 and "r1" in warnings[0]
