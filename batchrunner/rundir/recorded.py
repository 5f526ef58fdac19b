"""The outcomes a run directory has recorded so far, with the results.parquet column names.

Read-only (safe while a run writes): results.parquet when it is current, else the Parquet
parts plus the journal segments, where a part wins over the segment of its number and the
last outcome recorded for a row index wins. Streams in input order, one index window at a
time, so memory does not grow with the run. Writes, repairs and locks nothing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batchrunner.errors import OutputError
from batchrunner.rundir.files import list_numbered, list_segments
from batchrunner.rundir.lines import parse_lines, read_chunks
from batchrunner.rundir.manifest import read_manifest
from batchrunner.rundir.parts import (
    BUCKET_ROWS,
    OUTPUT_SCHEMA,
    in_bucket,
    index_column,
    is_unreadable,
    last_wins_sorted,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

COLUMNS: tuple[str, ...] = tuple(OUTPUT_SCHEMA.names)
_RELIST_TRIES = 20
_BATCH_ROWS = 8192


@dataclass(slots=True)
class Recorded:
    """`tables()` streams the recorded rows; `warnings` fills with what was skipped."""

    path: Path
    columns: tuple[str, ...] = COLUMNS
    warnings: list[str] = field(default_factory=list)

    def schema(self) -> pa.Schema:
        """The schema of every table `tables()` yields."""
        return pa.schema([OUTPUT_SCHEMA.field(c) for c in self.columns])

    def tables(self) -> Iterator[pa.Table]:
        """Tables of the recorded rows, in input order, with `columns` (results types).

        Raises OutputError when `path` is not a run directory.
        """
        unknown = [c for c in self.columns if c not in COLUMNS]
        if unknown:
            raise ValueError(f"not result columns: {unknown}")
        manifest = read_manifest(self.path)
        if manifest is None:
            raise OutputError(f"{self.path} is not a batchrunner run directory (no manifest.json)")
        total = manifest.total_rows
        if results_current(self.path):
            yield from _from_results(self.path / "results.parquet", total, self.columns)
        else:
            yield from _from_parts(self.path, total, self.columns, self.warnings)


def read_recorded(path: Path, columns: Sequence[str] = COLUMNS) -> Iterator[pa.Table]:
    """Shorthand for `Recorded(path, tuple(columns)).tables()` when warnings do not matter."""
    return Recorded(path, tuple(columns)).tables()


def token_sums(path: Path) -> tuple[int, int]:
    """Input and output tokens of the recorded rows (the last outcome of each): what the
    run directory has spent, for --max-cost on resume. Reads two columns only."""
    sums = [0, 0]
    for table in read_recorded(path, ("input_tokens", "output_tokens")):
        for i, column in enumerate(table.columns):
            sums[i] += pc.sum(column).as_py() or 0
    return sums[0], sums[1]


def results_current(path: Path) -> bool:
    """results.parquet holds every recorded outcome: no segment waits and no part is newer.

    A resume (say with --retry-errors, or a larger --limit) leaves the old results.parquet
    in place until it finishes; its new outcomes live in segments and newer parts meanwhile.
    """
    try:
        written = (path / "results.parquet").stat().st_mtime_ns
    except FileNotFoundError:
        return False
    if list_segments(path / "journal"):
        return False
    parts = list_numbered(path / "parts", "part", ".parquet")
    try:
        return all(p.stat().st_mtime_ns <= written for _, p in parts)
    except FileNotFoundError:
        return False  # a part was quarantined meanwhile: read what is left the long way


def _conform(table: pa.Table, columns: Sequence[str]) -> pa.Table:
    """`columns` in results types; one a file lacks (an older layout) comes out as nulls."""
    arrays = []
    for name in columns:
        type_ = OUTPUT_SCHEMA.field(name).type
        if name in table.column_names:
            arrays.append(table.column(name).cast(type_))
        else:
            arrays.append(pa.nulls(table.num_rows, type_))
    return pa.Table.from_arrays(arrays, schema=pa.schema([OUTPUT_SCHEMA.field(c) for c in columns]))


def _from_results(path: Path, total: int, columns: Sequence[str]) -> Iterator[pa.Table]:
    # results.parquet has one row per input row, in order: position == row index, so a
    # smaller --limit since it was written is honoured by stopping at `total`.
    with pq.ParquetFile(path) as pf:
        present = [c for c in columns if c in pf.schema_arrow.names]
        seen = 0
        for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=present):
            table = pa.Table.from_batches([batch]).slice(0, max(0, total - seen))
            seen += batch.num_rows
            if table.num_rows:
                yield _conform(table, columns)
            if seen >= total:
                return


@dataclass(frozen=True, slots=True)
class _Group:
    """One row group of part `seq`; `single` when all its rows fall in one window."""

    seq: int
    path: Path
    row_group: int
    single: bool


def _read_segments(path: Path, warnings: list[str]) -> dict[int, pa.Table] | None:
    """Every journal segment's rows (append order); None when one vanished meanwhile.

    Segments are the uncommitted tail (a few flush intervals of outcomes), so holding
    them in memory is bounded by the flush settings, not by the run's size.
    """
    tables: dict[int, pa.Table] = {}
    for seq, segment in list_segments(path / "journal"):
        pieces = []
        try:
            for offset, data in read_chunks(segment):
                table, skipped = parse_lines(data, offset=offset, name=segment.name)
                warnings.extend(skipped)
                pieces.append(table)
        except FileNotFoundError:
            return None  # committed into its part between listing and reading: list again
        if pieces:
            tables[seq] = pa.concat_tables(pieces)
    return tables


def _part_groups(path: Path, skip: set[int], warnings: list[str]) -> dict[int, list[_Group]]:
    """Row groups of every readable part, filed under each index window they touch."""
    windows: dict[int, list[_Group]] = defaultdict(list)
    for seq, part in list_numbered(path / "parts", "part", ".parquet"):
        try:
            with pq.ParquetFile(part) as pf:
                md = pf.metadata
                col = index_column(md)
                spans = []
                for rg in range(md.num_row_groups):
                    if md.row_group(rg).num_rows == 0:
                        continue
                    stats = md.row_group(rg).column(col).statistics
                    if col < 0 or stats is None or not stats.has_min_max:
                        raise pa.ArrowInvalid(f"row group {rg} has no _index statistics")
                    spans.append((rg, stats.min // BUCKET_ROWS, stats.max // BUCKET_ROWS))
        except Exception as exc:
            if not is_unreadable(exc):
                raise
            warnings.append(f"{part.name} is unreadable; its rows are left out")
            continue
        skip.add(seq)
        for rg, first, last in spans:
            for window in range(first, last + 1):
                windows[window].append(_Group(seq, part, rg, first == last))
    return windows


def _snapshot(
    path: Path, warnings: list[str]
) -> tuple[dict[int, pa.Table], dict[int, list[_Group]]]:
    # Segments before parts (as status.py does): a segment committed after its reading
    # shows up as a part of the same number in the later listing, and the part wins.
    for _ in range(_RELIST_TRIES):
        found: list[str] = []
        segments = _read_segments(path, found)
        if segments is None:
            continue
        have_part: set[int] = set()
        groups = _part_groups(path, have_part, found)
        warnings.extend(found)
        return {s: t for s, t in segments.items() if s not in have_part}, groups
    raise OutputError(f"{path} kept changing while being read; try again")


def _from_parts(
    path: Path, total: int, columns: Sequence[str], warnings: list[str]
) -> Iterator[pa.Table]:
    segments, groups = _snapshot(path, warnings)
    seg_windows: dict[int, list[tuple[int, pa.Table]]] = defaultdict(list)
    for seq, table in segments.items():
        window_of = pc.divide(table.column("_index"), BUCKET_ROWS)
        for window in pc.unique(window_of).to_pylist():
            rows = table.filter(pc.equal(window_of, window))
            seg_windows[window].append((seq, rows))
    wanted = [*columns, "_index"]
    for window in sorted(groups.keys() | seg_windows.keys()):
        if window * BUCKET_ROWS >= total:
            break
        pieces = [
            *seg_windows.get(window, []),
            *((g.seq, _read_group(g, window, wanted)) for g in groups.get(window, [])),
        ]
        pieces.sort(key=lambda p: p[0])  # by sequence number: later outcomes last
        table = last_wins_sorted([_conform_part(t, wanted) for _, t in pieces])
        table = table.filter(pc.less(table.column("_index"), total))
        if table.num_rows:
            yield _conform(table, columns)


def _conform_part(table: pa.Table, wanted: Sequence[str]) -> pa.Table:
    """Part or segment rows with the `wanted` columns (results types, plus `_index`)."""
    body = _conform(table, [c for c in wanted if c != "_index"])
    return body.append_column("_index", table.column("_index").cast(pa.int64()))


def _read_group(group: _Group, window: int, wanted: Sequence[str]) -> pa.Table:
    try:
        with pq.ParquetFile(group.path) as pf:
            present = [c for c in wanted if c in pf.schema_arrow.names]
            table = pf.read_row_group(group.row_group, columns=present)
    except FileNotFoundError as exc:
        raise OutputError(f"{group.path.name} vanished while being read; try again") from exc
    return table if group.single else in_bucket(table, window)
