"""Carried-through Parquet columns come back with their exact Arrow type and value."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from batchrunner.rundir.carried import FromInput
from tests.helpers import run_cli

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from tests.fakeserver import FakeServer

ROWS = 5
EXTRA = {
    "blob": pa.array([b"\x00\x01", b"", None, b"\xff" * 3, b"x"], pa.binary()),
    "fixed": pa.array([b"ab", b"\x00\x00", b"zz", None, b"\x01\x02"], pa.binary(2)),
    "took": pa.array([1, 0, None, 86_400_000_000, -5], pa.duration("us")),
    "counts": pa.array(
        [[("a", 1)], [], None, [("b", 2), ("c", -3)], [("d", 2**40)]],
        pa.map_(pa.string(), pa.int64()),
    ),
    "label": pa.array(["x", "y", "x", None, "z"]).dictionary_encode(),
    "price": pa.array(
        [Decimal("1.10"), Decimal("-0.01"), None, Decimal("123456.78"), Decimal("0.00")],
        pa.decimal128(10, 2),
    ),
    "items": pa.array(
        [[{"k": "a", "v": 1}], [], None, [{"k": None, "v": 2}, {"k": "c", "v": None}], []],
        pa.list_(pa.struct([("k", pa.string()), ("v", pa.int32())])),
    ),
    "when": pa.array(
        [dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC), None]
        + [dt.datetime(2020 + i, 6, 1, tzinfo=dt.UTC) for i in range(3)],
        pa.timestamp("us", tz="Europe/Paris"),
    ),
}


def _input(tmp_path: Path) -> tuple[Path, pa.Table]:
    base = {
        "id": pa.array([f"r{i}" for i in range(ROWS)]),
        "prompt": pa.array([f"typed question {i}?" for i in range(ROWS)]),
    }
    table = pa.table({**base, **EXTRA})
    src = tmp_path / "typed.parquet"
    pq.write_table(table, src, row_group_size=2)  # rows taken across row groups
    return src, table


def test_eight_arrow_types_come_back_exactly(tmp_path: Path, shared_api: FakeServer) -> None:
    src, table = _input(tmp_path)
    out = tmp_path / "d"
    result = run_cli(["run", str(src), "-o", str(out), "--base-url", shared_api.base_url])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr
    got = pq.read_table(out / "results.parquet")
    assert got.column("status").to_pylist() == ["succeeded"] * ROWS
    for name in EXTRA:
        want = table.schema.field(name)
        assert got.schema.field(name).type == want.type, name
        assert got.column(name).combine_chunks().equals(table.column(name).combine_chunks()), name


def test_an_input_that_cannot_serve_falls_back_with_a_warning(
    tmp_path: Path, shared_api: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The input shorter at assembly than when validated (as if cut under the run): the
    columns are rebuilt from the journal's JSON, and stderr says so."""
    src, _ = _input(tmp_path)

    def cut(self: FromInput, indices: list[int]) -> list[pa.Array]:
        raise ValueError(f"the input has no row {indices[-1]} any more")

    monkeypatch.setattr(FromInput, "take", cut)
    out = tmp_path / "d"
    result = run_cli(["run", str(src), "-o", str(out), "--base-url", shared_api.base_url])
    assert result.exit_code == 0, result.output
    assert "warning: carried-through columns not read from the input" in result.stderr
    got = pq.read_table(out / "results.parquet")
    assert got.column("id").to_pylist() == [f"r{i}" for i in range(ROWS)]
    assert got.column("status").to_pylist() == ["succeeded"] * ROWS
