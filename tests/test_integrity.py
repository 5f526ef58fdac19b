"""The run dir never finishes short: checked conversion, finalize invariants, loud failures.

Real RunDirs on real files. Where a bug has to be simulated (a part writer that loses a
row), the real writer runs and its output is then damaged, so the checks see a real file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from batchrunner.errors import IntegrityError
from batchrunner.rundir import RunDir, recovery
from batchrunner.rundir import parts as part_files
from batchrunner.rundir.journal import encode_result
from batchrunner.rundir.parts import PART_SCHEMA, PartOutcomes
from tests.helpers import commit_all, make_result, open_run, run_cli, write_jsonl

if TYPE_CHECKING:
    from pathlib import Path

    from batchrunner.spec import JobSpec
    from tests.fakeserver import FakeServer


def _files(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def _drop_row(part: Path, index: int) -> None:
    """Rewrite a part without the row of `index` (what the old converter did to big lines)."""
    table = pq.read_table(part, schema=PART_SCHEMA)
    pq.write_table(table.filter(pc.not_equal(table["_index"], index)), part)


def test_a_row_lost_from_a_part_before_assembly_fails_loudly(tmp_path: Path) -> None:
    """Parts one row short of the done set: IntegrityError, no results, nothing deleted."""
    run = tmp_path / "run"
    with open_run(run, total=3) as rd:
        for i in range(3):
            rd.record(make_result(i))
        commit_all(rd)
        _drop_row(run / "parts" / "part-000001.parquet", 1)
        before = _files(run)
        with pytest.raises(IntegrityError) as caught:
            rd.finalize({})
        assert caught.value.exit_code == 1
        assert "the parts hold 2 rows (2 succeeded) but 3 outcomes were recorded" in str(
            caught.value
        )
        assert _files(run) == before and not (run / "results.parquet").exists()
    with open_run(run, total=3) as rd:  # as the message says: the lost row is pending again
        assert [rd.done.code(i) for i in range(3)] == [1, 0, 1]


def test_duplicate_ids_at_finalize_fail_loudly(tmp_path: Path) -> None:
    """Two rows with one id: IntegrityError naming it; results.parquet is not written."""
    run = tmp_path / "run"
    with open_run(run, total=4) as rd:
        rd.record(make_result(0))
        rd.record(make_result(1, id="twin"))
        commit_all(rd)
        rd.record(make_result(2, "errored", id="twin"))
        rd.record(make_result(3))
        before_parts = _files(run / "parts")
        with pytest.raises(
            IntegrityError, match=r"1 id\(s\) belong to more than one row \('twin'\)"
        ):
            rd.finalize({})
        assert not (run / "results.parquet").exists() and not list(run.rglob("*.tmp"))
        assert _files(run / "parts").items() >= before_parts.items()  # kept, plus the new one


def _losing_write_part(real: Any, index: int) -> Any:
    def write_part(parts_dir: Path, seq: int, tables: Any, *, run_dir: Path) -> PartOutcomes:
        written = real(parts_dir, seq, tables, run_dir=run_dir)
        _drop_row(written.info.path, index)
        return written  # type: ignore[no-any-return]

    return write_part


def test_a_segment_stays_until_its_part_holds_every_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part that lost a row: commit raises and keeps the segment; resume repairs the part."""
    run = tmp_path / "run"
    rd = open_run(run, 6)
    for i in range(4):
        rd.record(make_result(i, text=f"t{i}"))
    sealed = rd.seal()
    assert sealed is not None
    with monkeypatch.context() as mp:
        mp.setattr(recovery, "write_part", _losing_write_part(part_files.write_part, 2))
        with pytest.raises(IntegrityError, match="part 1 holds 3 of the 4 rows of seg-000001"):
            rd.commit(sealed)
    assert sealed.segment.exists()
    rd.close()
    with open_run(run, 6) as rd:  # part and segment both there: their union is kept
        assert [rd.done.code(i) for i in range(6)] == [1, 1, 1, 1, 0, 0]
        assert list((run / "journal").iterdir()) == []
        rd.set_total(4)
        out = rd.finalize({})
    assert pq.read_table(out).column("text").to_pylist() == ["t0", "t1", "t2", "t3"]


def test_recovery_keeps_the_segment_when_its_part_comes_out_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same check on open: the crash-left segment is not deleted for a short part."""
    run = tmp_path / "run"
    open_run(run, 6).close()
    segment = run / "journal" / "seg-000001.jsonl"
    segment.write_bytes(b"".join(encode_result(make_result(i)) for i in range(3)))
    with monkeypatch.context() as mp:
        mp.setattr(recovery, "write_part", _losing_write_part(part_files.write_part, 0))
        with pytest.raises(IntegrityError, match="part 1 holds 2 of the 3 rows"):
            open_run(run, 6)
    assert segment.exists()
    with open_run(run, 6) as rd:
        assert [rd.done.code(i) for i in range(4)] == [1, 1, 1, 0]


def test_a_crash_left_segment_with_huge_values_converts_whole(tmp_path: Path) -> None:
    """On open, a segment with a 6 MB line and a 10^30 token count becomes a full part."""
    run = tmp_path / "run"
    open_run(run, 6).close()
    big = "€" * (2 << 20)
    lines = [
        encode_result(make_result(0, text=big, response=big)),
        encode_result(make_result(1, input_tokens=10**30, output_tokens=3)),
        encode_result(make_result(2, extra={"blob": big})),
    ]
    (run / "journal" / "seg-000001.jsonl").write_bytes(b"".join(lines))
    with open_run(run, total=3) as rd:
        assert rd.done.succeeded == 3 and rd.warnings == [
            "seg-000001.jsonl: 1 row(s) held values their columns cannot; kept, with a note in "
            "error_message (first: row 'r1' (index 1): input_tokens "
            "1000000000000000000000000000000 does not fit int64; stored as null)"
        ]
        rows = pq.read_table(rd.finalize({"blob": "string"})).to_pylist()
    assert rows[0]["text"] == big and rows[0]["response"] == big and rows[2]["blob"] == big
    assert rows[1]["input_tokens"] is None and rows[1]["output_tokens"] == 3
    assert "does not fit int64" in rows[1]["error_message"]


def test_the_cli_stops_with_exit_1_instead_of_finishing_short(
    tmp_path: Path, shared_api: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row lost from a part just before assembly: exit 1, no results; a rerun repairs it."""
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": f"q{i}", "prompt": f"p{i}"} for i in range(5)])
    out = tmp_path / "run"
    args = ["run", str(src), "-o", str(out), "--base-url", shared_api.base_url, "-q"]
    real = RunDir.finalize

    def losing_finalize(
        self: RunDir,
        extra_columns: dict[str, str],
        spec: JobSpec | None = None,
        parsed: dict[str, str] | None = None,
    ) -> Path:
        self.seal()
        for sealed in list(self._uncommitted.values()):
            self.commit(sealed)
        _drop_row(out / "parts" / "part-000001.parquet", 3)
        return real(self, extra_columns, spec, parsed)

    with monkeypatch.context() as mp:
        mp.setattr(RunDir, "finalize", losing_finalize)
        res = run_cli(args)
    assert res.exit_code == 1 and "results.parquet" not in res.stdout.splitlines()[0]
    assert "exit 1: the run directory's data does not add up" in res.stdout
    assert "results.parquet not written: the parts hold 4 rows" in res.stderr
    assert not (out / "results.parquet").exists()
    shared_api.reset()
    res = run_cli(args)
    assert res.exit_code == 0, res.stderr
    assert [r["prompt"] for r in shared_api.log()] == ["p3"]  # only the lost row, once more
    ids = pq.read_table(out / "results.parquet").column("id").to_pylist()
    assert ids == [f"q{i}" for i in range(5)]
