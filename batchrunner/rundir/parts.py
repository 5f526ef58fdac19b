"""Part files: OUTPUT_SCHEMA/PART_SCHEMA, writing a part and reading its outcomes back.

A part is written with `files.atomic_write`, so a reader sees a complete Parquet file or
none. Parts are sorted by row index, one row per index, with one row group per index
bucket (`BUCKET_ROWS` positions), so results.py can stream the run bucket by bucket.
Parsing journal lines is lines.py's job; building results.parquet is results.py's; no
journal, lock or done-set logic here (writer.py's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batchrunner.errors import OutputError
from batchrunner.rundir.files import Discard, atomic_write, part_path

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path


TOOL_CALL = pa.struct([("id", pa.string()), ("name", pa.string()), ("arguments", pa.string())])
BUCKET_ROWS = 1 << 14  # rows in memory at once during assembly, and the row-group grid
COMPRESSION = "zstd"

OUTPUT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("status", pa.string()),  # "succeeded" | "errored"
        ("response_id", pa.string()),
        ("request_id", pa.string()),
        ("model", pa.string()),
        ("text", pa.string()),
        ("stop_reason", pa.string()),
        ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("attempts", pa.int32()),
        ("latency_ms", pa.float64()),
        ("http_status", pa.int32()),
        ("error_type", pa.string()),
        ("error_message", pa.string()),
        ("response", pa.string()),  # the complete response body, JSON text
        ("completed_at", pa.timestamp("us", tz="UTC")),
        ("tool_calls", pa.list_(TOOL_CALL)),  # the answer's tool calls, both conventions
    ]
)
"""The fixed columns of results.parquet (README, "Output"); with --json-schema the
`parsed` columns follow (results.py), then the carried-through columns."""

# Parts add the input position, the carried-through fields (JSON) and the validated
# answer of --json-schema (JSON text) for final assembly.
PART_SCHEMA = pa.schema(
    [
        *OUTPUT_SCHEMA,
        pa.field("_index", pa.int64()),
        pa.field("_extra", pa.string()),
        pa.field("parsed", pa.string()),
    ]
)
# Columns newer than the first part layout: a part written before them lacks them, and
# reads as if they were null (old run directories resume and assemble as they are).
ADDED_COLUMNS = frozenset({"tool_calls", "parsed"})


@dataclass(frozen=True, slots=True)
class PartInfo:
    """Where a part's rows sit: (first bucket, last bucket, row group) per row group."""

    seq: int
    path: Path
    groups: tuple[tuple[int, int, int], ...]


@dataclass(frozen=True, slots=True)
class PartOutcomes:
    """What resume needs from a part: row indices (ascending) and whether each succeeded.

    `indices` is a range when the part's footer proved its rows contiguous."""

    info: PartInfo
    indices: Sequence[int]
    succeeded: list[bool]


class CorruptPartError(OutputError):
    """A part file could not be read back (bad footer, garbled pages, foreign columns)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path.name} is unreadable: {reason}")


def conform_part(table: pa.Table) -> pa.Table:
    """A part's rows (or row group) in PART_SCHEMA; an older layout's missing columns null.

    Raises pa.ArrowInvalid for any other difference (a foreign or damaged file).
    """
    if table.schema.equals(PART_SCHEMA):
        return table
    names = set(table.schema.names)
    old = [f for f in PART_SCHEMA if f.name in names or f.name not in ADDED_COLUMNS]
    if not table.schema.equals(pa.schema(old)):
        raise pa.ArrowInvalid("unexpected columns")
    columns = [
        table.column(f.name) if f.name in names else pa.nulls(table.num_rows, f.type)
        for f in PART_SCHEMA
    ]
    return pa.Table.from_arrays(columns, schema=PART_SCHEMA)


def known_layout(schema: pa.Schema) -> bool:
    """Whether a part file's schema is PART_SCHEMA or an older layout of it."""
    if schema.equals(PART_SCHEMA):
        return True  # every part this version writes: no empty table to build (resume reads
        # thousands of footers)
    try:
        conform_part(schema.empty_table())
    except pa.ArrowInvalid:
        return False
    return True


def index_column(md: pq.FileMetaData) -> int:
    """The position of `_index` among the file's Parquet (leaf) columns, whose statistics
    locate its row groups; -1 when it has none. A nested column (`tool_calls`) spans
    several leaves, so this is not the Arrow field's position."""
    return _leaf(md, "_index")


def _leaf(md: pq.FileMetaData, name: str) -> int:
    for i in range(md.num_columns):
        if md.schema.column(i).path == name:
            return i
    return -1


def is_unreadable(exc: BaseException) -> bool:
    """True for errors that mean a damaged file, not a failing disk or a missing file."""
    return isinstance(exc, pa.ArrowException) or (isinstance(exc, OSError) and exc.errno is None)


def last_wins_sorted(pieces: list[pa.Table]) -> pa.Table:
    """The pieces' rows sorted by `_index`, keeping the last row of each index (the last
    piece's, then the last in that piece). Empties `pieces`, so that they can go once
    joined: with the caller holding none of them, at most two copies of the rows are held
    (joined, then taken); sorting the whole table and then filtering it held three, and
    `Table.take` on a table of many chunks joins them first, out of sight."""
    table = pa.concat_tables(pieces)
    pieces.clear()
    positions = _last_wins_order(table)
    if positions is None:
        return table
    table = table.combine_chunks()  # and the pieces go
    return table.take(positions)


def in_bucket(table: pa.Table, bucket: int) -> pa.Table:
    """The rows of `table` whose `_index` lies in `bucket` (a row group that spans more)."""
    idx = table.column("_index")
    lo, hi = bucket * BUCKET_ROWS, (bucket + 1) * BUCKET_ROWS
    return table.filter(pc.and_(pc.greater_equal(idx, lo), pc.less(idx, hi)))


def _last_wins_order(table: pa.Table) -> pa.Array | None:
    """The positions of the rows to keep, in order; None when `table` is already strictly
    increasing by `_index` (the common case). Worked out on the index alone."""
    if table.num_rows <= 1:
        return None
    idx = table.column("_index")
    if pc.all(pc.greater(idx.slice(1), idx.slice(0, len(idx) - 1))).as_py():
        return None
    order = pa.array(range(table.num_rows), pa.int64())
    keyed = pa.table({"_index": idx, "_order": order})
    keys = [("_index", "ascending"), ("_order", "descending")]
    positions = pc.sort_indices(keyed, sort_keys=keys)
    idx = idx.take(positions).combine_chunks()
    keep = pa.concat_arrays(
        [pa.array([True]), pc.not_equal(idx.slice(1), idx.slice(0, len(idx) - 1))]
    )
    return positions.filter(keep)


def _bucket_slices(indices: Sequence[int]) -> list[tuple[int, int, int]]:
    """(bucket, start, stop) runs of sorted indices that share a bucket."""
    runs: list[tuple[int, int, int]] = []
    start = 0
    for pos in range(1, len(indices) + 1):
        if pos == len(indices) or indices[pos] // BUCKET_ROWS != indices[start] // BUCKET_ROWS:
            runs.append((indices[start] // BUCKET_ROWS, start, pos))
            start = pos
    return runs


def write_part(
    parts_dir: Path, seq: int, tables: Iterable[pa.Table], *, run_dir: Path
) -> PartOutcomes | None:
    """Write part `seq` atomically (tmp, fsync, rename, dir fsync); None when no rows.

    Each table (rows in append order) is sorted, reduced to the last row per index and
    written as one row group per bucket. On a disk error the temp file is removed and
    DiskError raised: the caller's journal segment still holds the rows.
    """
    final = part_path(parts_dir, seq)
    groups: list[tuple[int, int, int]] = []
    indices: list[int] = []
    succeeded: list[bool] = []
    with atomic_write(final, run_dir=run_dir) as fh:
        with pq.ParquetWriter(fh, PART_SCHEMA, compression=COMPRESSION) as writer:
            for table in tables:
                table = last_wins_sorted([table])
                chunk_indices = table["_index"].to_pylist()
                indices += chunk_indices
                succeeded += pc.equal(table["status"], "succeeded").to_pylist()
                for bucket, start, stop in _bucket_slices(chunk_indices):
                    writer.write_table(table.slice(start, stop - start), stop - start)
                    groups.append((bucket, bucket, len(groups)))
        if not groups:
            raise Discard
    if not groups:
        return None
    return PartOutcomes(PartInfo(seq, final, tuple(groups)), indices, succeeded)


def _part_info(seq: int, path: Path, pf: pq.ParquetFile) -> PartInfo:
    if not known_layout(pf.schema_arrow):
        raise pa.ArrowInvalid("unexpected columns")
    md = pf.metadata
    col = index_column(md)
    groups = []
    for rg in range(md.num_row_groups):
        stats = md.row_group(rg).column(col).statistics
        if md.row_group(rg).num_rows == 0:
            continue
        if stats is None or not stats.has_min_max:
            raise pa.ArrowInvalid(f"row group {rg} has no _index statistics")
        groups.append((stats.min // BUCKET_ROWS, stats.max // BUCKET_ROWS, rg))
    return PartInfo(seq, path, tuple(groups))


def read_part_info(seq: int, path: Path) -> PartInfo:
    """A part's row-group index ranges, from its footer alone (no rows are read).

    Raises OSError or pa.ArrowException when the file is not a readable part.
    """
    with pq.ParquetFile(path) as pf:
        return _part_info(seq, path, pf)


def _group_run(group: pq.RowGroupMetaData, index: int, status: int) -> tuple[int, int, str] | None:
    """(first index, last index, status) of a row group whose statistics prove that its
    rows are exactly those indices, all with that one status; else None."""
    stats = [group.column(index).statistics, group.column(status).statistics]
    for st in stats:
        if st is None or not st.has_min_max or not st.has_null_count or st.null_count:
            return None
    idx, ok = stats
    if ok.min != ok.max or ok.min not in ("succeeded", "errored"):
        return None
    # Parts hold one row per index (last_wins_sorted): n rows over n positions fill them.
    if idx.max - idx.min + 1 != group.num_rows:
        return None
    return idx.min, idx.max, ok.min


def footer_outcomes(md: pq.FileMetaData) -> tuple[range, bool] | None:
    """The part's indices and their one outcome from its footer alone, when the row
    groups' statistics prove them (contiguous positions, one status: most parts, as the
    runner seals rows about in input order); None when only the columns can tell."""
    index, status = index_column(md), _leaf(md, "status")
    if index < 0 or status < 0:
        return None
    runs = [_group_run(md.row_group(rg), index, status) for rg in range(md.num_row_groups)]
    proved = [run for run in runs if run is not None]
    if not proved or len(proved) != len(runs):
        return None
    first, last, outcome = proved[0]
    for start, stop, ok in proved[1:]:
        if start != last + 1 or ok != outcome:
            return None
        last = stop
    return range(first, last + 1), outcome == "succeeded"


def read_part_outcomes(seq: int, path: Path, *, from_footer: bool = False) -> PartOutcomes:
    """Read only `_index` and `status` of a part, plus its row-group index ranges.

    `from_footer`: when the footer's statistics prove the outcomes (`footer_outcomes`),
    no column is read (an open of 5 000 parts: resume). A damaged data page is then found
    when results.parquet is assembled, which quarantines the part and asks for a rerun.
    Raises OSError or pa.ArrowException when the file is not a readable part.
    """
    # An OSFile: a path would be resolved to a filesystem first, per part (~0.1 ms).
    with pa.OSFile(str(path)) as source, pq.ParquetFile(source) as pf:
        info = _part_info(seq, path, pf)
        proved = footer_outcomes(pf.metadata) if from_footer else None
        if proved is not None:
            return PartOutcomes(info, proved[0], [proved[1]] * len(proved[0]))
        # One thread: two small columns, where the thread pool's hand-offs cost more than
        # the decoding (resume opens thousands of parts).
        table = pf.read(columns=["_index", "status"], use_threads=False)
    indices = table.column("_index").to_pylist()
    ok = pc.equal(table.column("status"), "succeeded").to_pylist()
    if None in indices:
        raise pa.ArrowInvalid("null _index")
    return PartOutcomes(info, indices, [bool(v) for v in ok])
