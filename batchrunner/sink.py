"""Arrow side of the run dir: OUTPUT_SCHEMA, journal lines -> part files, results.parquet.

Every file is written under a `.tmp` name, fsynced, then renamed, so a reader sees a
complete Parquet file or none. Parts are sorted by row index, one row per index, with one
row group per index bucket (`BUCKET_ROWS` positions), so the final assembly can stream the
run bucket by bucket and never holds more than about one bucket of rows. No journal, lock
or done-set logic here (that is checkpoint's job).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from batchrunner.errors import OutputError
from batchrunner.journal import disk_errors, fsync_dir, read_chunks

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path


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
    ]
)
"""The fixed columns of results.parquet (INTERFACE.md); carried-through columns follow."""

# Parts add the input position and the carried-through fields (JSON) for final assembly.
PART_SCHEMA = OUTPUT_SCHEMA.append(pa.field("_index", pa.int64())).append(
    pa.field("_extra", pa.string())
)

# A journal line parses with this schema (completed_at as integer microseconds).
_LINE_SCHEMA = PART_SCHEMA.set(
    PART_SCHEMA.get_field_index("completed_at"), pa.field("completed_at", pa.int64())
)
_STATUSES = pa.array(["succeeded", "errored"])
_OUTCOME_SCHEMA = pa.schema([("_index", pa.int64()), ("status", pa.string())])
_STRICT = pj.ParseOptions(explicit_schema=_LINE_SCHEMA, unexpected_field_behavior="error")
_OUTCOMES = pj.ParseOptions(explicit_schema=_OUTCOME_SCHEMA, unexpected_field_behavior="ignore")


@dataclass(frozen=True, slots=True)
class PartInfo:
    """Where a part's rows sit: (first bucket, last bucket, row group) per row group."""

    seq: int
    path: Path
    groups: tuple[tuple[int, int, int], ...]


@dataclass(frozen=True, slots=True)
class PartOutcomes:
    """What resume needs from a part: row indices and whether each succeeded."""

    info: PartInfo
    indices: list[int]
    succeeded: list[bool]


class CorruptPartError(OutputError):
    """A part file could not be read back (bad footer, garbled pages, foreign columns)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path.name} is unreadable: {reason}")


def is_unreadable(exc: BaseException) -> bool:
    """True for errors that mean a damaged file, not a failing disk or a missing file."""
    return isinstance(exc, pa.ArrowException) or (isinstance(exc, OSError) and exc.errno is None)


def part_path(parts_dir: Path, seq: int) -> Path:
    return parts_dir / f"part-{seq:06d}.parquet"


def _plausible(table: pa.Table) -> bool:
    idx, status, ids = table.column("_index"), table.column("status"), table.column("id")
    if table.num_rows == 0 or idx.null_count or status.null_count or ids.null_count:
        return bool(table.num_rows == 0)
    return bool(pc.min(idx).as_py() >= 0 and pc.all(pc.is_in(status, _STATUSES)).as_py())


def _read_lines(data: bytes, options: pj.ParseOptions) -> pa.Table:
    table = pj.read_json(pa.py_buffer(data), parse_options=options)
    if "id" not in table.column_names:
        table = table.append_column("id", pa.array([""] * table.num_rows))
    if not _plausible(table):
        raise pa.ArrowInvalid("a line lacks a row index, id or status")
    return table


def _lines_one_by_one(data: bytes, offset: int, name: str) -> tuple[pa.Table, list[str]]:
    tables, warnings = [_LINE_SCHEMA.empty_table()], []
    for line in data.split(b"\n")[:-1]:
        if line.strip():
            try:
                tables.append(_read_lines(line, _STRICT))
            except pa.ArrowInvalid as exc:
                reason = str(exc).splitlines()[0]
                warnings.append(
                    f"{name}: skipped a garbled journal line at byte {offset} ({reason})"
                )
        offset += len(line) + 1
    return pa.concat_tables(tables), warnings


def parse_lines(data: bytes, *, offset: int = 0, name: str = "") -> tuple[pa.Table, list[str]]:
    """Complete journal lines as a PART_SCHEMA table (append order) plus skipped-line warnings.

    Arrow's JSON reader does the work (about 3 us a row); if any line is garbled, the
    lines are parsed one at a time and the bad ones skipped with a warning.
    """
    warnings: list[str] = []
    try:
        table = _read_lines(data, _STRICT)
    except pa.ArrowInvalid:
        table, warnings = _lines_one_by_one(data, offset, name)
    ts = table.column("completed_at").cast(PART_SCHEMA.field("completed_at").type)
    return table.set_column(
        table.schema.get_field_index("completed_at"), "completed_at", ts
    ), warnings


def segment_outcomes(path: Path) -> tuple[list[int], list[bool], list[str]]:
    """Indices and success flags of a segment in append order (for `status`)."""
    indices: list[int] = []
    succeeded: list[bool] = []
    warnings: list[str] = []
    for offset, data in read_chunks(path):
        try:
            table = _read_lines(data, _OUTCOMES)
        except pa.ArrowInvalid:
            table, more = parse_lines(data, offset=offset, name=path.name)
            warnings.extend(more)
        indices.extend(table.column("_index").to_pylist())
        succeeded.extend(pc.equal(table.column("status"), "succeeded").to_pylist())
    return indices, succeeded, warnings


def last_wins_sorted(table: pa.Table) -> pa.Table:
    """Rows sorted by `_index`, keeping the last row (in table order) of each index."""
    if table.num_rows <= 1:
        return table
    idx = table.column("_index")
    if pc.all(pc.greater(idx.slice(1), idx.slice(0, len(idx) - 1))).as_py():
        return table  # already strictly increasing: the common case
    order = pa.array(range(table.num_rows), pa.int64())
    keyed = table.append_column("_order", order)
    keys = [("_index", "ascending"), ("_order", "descending")]
    sorted_ = table.take(pc.sort_indices(keyed, sort_keys=keys))
    idx = sorted_.column("_index").combine_chunks()
    keep = pa.concat_arrays(
        [pa.array([True]), pc.not_equal(idx.slice(1), idx.slice(0, len(idx) - 1))]
    )
    return sorted_.filter(keep)


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
    tmp = final.with_name(final.name + ".tmp")
    groups: list[tuple[int, int, int]] = []
    indices: list[int] = []
    succeeded: list[bool] = []
    try:
        with disk_errors(run_dir):
            with tmp.open("wb") as fh:
                with pq.ParquetWriter(fh, PART_SCHEMA, compression=COMPRESSION) as writer:
                    for table in tables:
                        table = last_wins_sorted(table)
                        chunk_indices = table["_index"].to_pylist()
                        indices += chunk_indices
                        succeeded += pc.equal(table["status"], "succeeded").to_pylist()
                        for bucket, start, stop in _bucket_slices(chunk_indices):
                            writer.write_table(table.slice(start, stop - start), stop - start)
                            groups.append((bucket, bucket, len(groups)))
                fh.flush()
                os.fsync(fh.fileno())
            if not groups:
                tmp.unlink()
                return None
            tmp.replace(final)
            fsync_dir(parts_dir)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return PartOutcomes(PartInfo(seq, final, tuple(groups)), indices, succeeded)


def read_part_outcomes(seq: int, path: Path) -> PartOutcomes:
    """Read only `_index` and `status` of a part, plus its row-group index ranges.

    Raises OSError or pa.ArrowException when the file is not a readable part.
    """
    with pq.ParquetFile(path) as pf:
        if not pf.schema_arrow.equals(PART_SCHEMA):
            raise pa.ArrowInvalid("unexpected columns")
        md = pf.metadata
        col = PART_SCHEMA.get_field_index("_index")
        groups = []
        for rg in range(md.num_row_groups):
            stats = md.row_group(rg).column(col).statistics
            if md.row_group(rg).num_rows == 0:
                continue
            if stats is None or not stats.has_min_max:
                raise pa.ArrowInvalid(f"row group {rg} has no _index statistics")
            groups.append((stats.min // BUCKET_ROWS, stats.max // BUCKET_ROWS, rg))
        table = pf.read(columns=["_index", "status"])
    indices = table.column("_index").to_pylist()
    ok = pc.equal(table.column("status"), "succeeded").to_pylist()
    if None in indices:
        raise pa.ArrowInvalid("null _index")
    return PartOutcomes(PartInfo(seq, path, tuple(groups)), indices, [bool(v) for v in ok])


JSON_TYPE = None  # marker: the column holds each value as JSON text
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)
_CONVERT_ERRORS = (*_ARROW_ERRORS, TypeError, ValueError, OverflowError)
_KINDS: dict[int, tuple[type, ...]] = {
    **{t.id: (int,) for t in (pa.int8(), pa.int16(), pa.int32(), pa.int64())},
    **{t.id: (int,) for t in (pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64())},
    **{t.id: (int, float) for t in (pa.float16(), pa.float32(), pa.float64())},
    pa.bool_().id: (bool,),
}


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside <>, [] or ()."""
    parts, depth, start = [], 0, 0
    for pos, ch in enumerate(text):
        if ch in "<[(":
            depth += 1
        elif ch in ">])":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:pos].strip())
            start = pos + 1
    parts.append(text[start:].strip())
    return parts


def _parse_field(text: str) -> pa.Field:
    name, _, type_text = text.partition(": ")
    type_text = type_text.removesuffix(" not null")
    return pa.field(name, _parse(type_text))


def _parse(text: str) -> pa.DataType:
    text = text.strip()
    if m := re.fullmatch(r"fixed_size_list<(.+)>\[(\d+)\]", text):
        return pa.list_(_parse_field(m.group(1)), int(m.group(2)))
    if m := re.fullmatch(r"timestamp\[(\w+)(?:, tz=(.+))?\]", text):
        return pa.timestamp(m.group(1), tz=m.group(2))
    if m := re.fullmatch(r"decimal(32|64|128|256)\((\d+), *(-?\d+)\)", text):
        make = {"32": pa.decimal32, "64": pa.decimal64, "128": pa.decimal128, "256": pa.decimal256}
        return make[m.group(1)](int(m.group(2)), int(m.group(3)))
    if m := re.fullmatch(r"(\w+)<(.*)>", text):
        head, args = m.group(1), _split_top(m.group(2))
        if head in ("list", "large_list") and len(args) == 1:
            make_list = pa.list_ if head == "list" else pa.large_list
            return make_list(_parse_field(args[0]))
        if head == "struct":
            return pa.struct([_parse_field(a) for a in args if a])
        if head == "map" and len(args) >= 2:
            return pa.map_(_parse(args[0]), _parse(args[1]))
        if head == "dictionary":
            # Carried-through values arrive decoded; the dictionary's value type is the type.
            return _parse(dict(a.split("=", 1) for a in args)["values"])
        raise ValueError(text)
    return pa.type_for_alias(text)


def parse_type(text: str) -> pa.DataType | None:
    """An Arrow type from its string form ("int64", "list<item: string>", ...).

    Returns JSON_TYPE for "json", for a null type, and for anything not understood.
    """
    if text == "json":
        return JSON_TYPE
    try:
        parsed = _parse(text)
    except (ValueError, KeyError, TypeError, *_ARROW_ERRORS):
        return JSON_TYPE
    return None if pa.types.is_null(parsed) else parsed


def _to_json(value: object) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def convert_column(values: list[Any], type_: pa.DataType | None) -> pa.Array | None:
    """Values decoded from JSON as an Arrow array of `type_`; None when some do not fit.

    Strings keep non-string values as JSON text; other types also accept what Arrow can
    cast from the JSON form (an ISO date string for a timestamp, say).
    """
    if type_ is JSON_TYPE:
        return pa.array([_to_json(v) for v in values], pa.string())
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        as_text = [v if isinstance(v, str) else _to_json(v) for v in values]
        return pa.array(as_text, type_)
    kinds = _KINDS.get(type_.id)
    if kinds is None or all(v is None or type(v) in kinds for v in values):
        try:  # Arrow would silently truncate 2.5 into an int64 column: hence the check
            return pa.array(values, type=type_)
        except _CONVERT_ERRORS:
            pass
    try:  # a checked cast from what JSON held ("2024-01-02T03:04:05Z" -> timestamp)
        return pa.array(values).cast(type_)
    except _CONVERT_ERRORS:
        return None


class _NoFit(Exception):
    def __init__(self, column: str) -> None:
        self.column = column


def _output_schema(extra_types: dict[str, pa.DataType | None]) -> pa.Schema:
    fields = list(OUTPUT_SCHEMA)
    for name, t in extra_types.items():
        fields.append(pa.field(name, pa.string() if t is JSON_TYPE else t))
    return pa.schema(fields)


def _out_names(extra_columns: dict[str, str]) -> dict[str, str]:
    """Output name per carried-through field; a clash with a fixed column gets `input_`."""
    taken = set(OUTPUT_SCHEMA.names)
    names: dict[str, str] = {}
    for field in extra_columns:
        name = field
        while name in taken:
            name = f"input_{name}"
        taken.add(name)
        names[field] = name
    return names


def _read_bucket(entries: list[tuple[int, int, Path, bool]], bucket: int) -> pa.Table:
    """The rows of one bucket from every part, sorted, last outcome (seq, row group) wins."""
    tables = []
    for _seq, rg, path, exact in sorted(entries, key=lambda e: (e[0], e[1])):
        try:
            with pq.ParquetFile(path) as pf:
                t = pf.read_row_group(rg)
            if not t.schema.equals(PART_SCHEMA):
                raise pa.ArrowInvalid("unexpected columns")
        except Exception as exc:
            if is_unreadable(exc):
                raise CorruptPartError(path, str(exc).splitlines()[0]) from exc
            raise
        if not exact:
            idx = t.column("_index")
            lo, hi = bucket * BUCKET_ROWS, (bucket + 1) * BUCKET_ROWS
            t = t.filter(pc.and_(pc.greater_equal(idx, lo), pc.less(idx, hi)))
        tables.append(t)
    if len(tables) == 1:
        return tables[0]  # one row group is already sorted, one row per index
    return last_wins_sorted(pa.concat_tables(tables))


def _window(
    table: pa.Table,
    total_rows: int,
    extra_types: dict[str, pa.DataType | None],
    schema: pa.Schema,
) -> pa.Table:
    table = table.filter(pc.less(table.column("_index"), total_rows))
    columns = [table.column(name) for name in OUTPUT_SCHEMA.names]
    if extra_types:
        blobs = table.column("_extra").to_pylist()
        objs = [json.loads(b) if b else {} for b in blobs]
        for field, t in extra_types.items():
            values = [o.get(field) for o in objs]
            arr = convert_column(values, t)
            if arr is None:
                raise _NoFit(field)
            columns.append(arr)
    return pa.Table.from_arrays(columns, schema=schema)


def assemble_results(
    parts: Sequence[PartInfo],
    out_path: Path,
    *,
    total_rows: int,
    extra_columns: dict[str, str],
    run_dir: Path,
) -> list[str]:
    """Stream the parts into `out_path` in input order, last outcome per index wins.

    Rows with index >= total_rows (left by an earlier, larger run) are left out. Returns
    warnings (carried-through columns that fell back to JSON text).
    """
    buckets: dict[int, list[tuple[int, int, Path, bool]]] = defaultdict(list)
    for part in parts:
        for first, last, rg in part.groups:
            for b in range(first, last + 1):
                buckets[b].append((part.seq, rg, part.path, first == last))
    out_names = _out_names(extra_columns)
    types = {field: parse_type(t) for field, t in extra_columns.items()}
    warnings = [
        f"column {out_names[f]!r}: type {extra_columns[f]!r} not understood; written as JSON text"
        for f, t in types.items()
        if t is JSON_TYPE and extra_columns[f] != "json"
    ]
    tmp = out_path.with_name(out_path.name + ".tmp")
    while True:
        schema = _output_schema({out_names[f]: t for f, t in types.items()})
        try:
            _write_results(tmp, buckets, total_rows, types, schema, run_dir)
            break
        except _NoFit as exc:
            types[exc.column] = JSON_TYPE
            warnings.append(
                f"column {out_names[exc.column]!r}: some values do not fit type "
                f"{extra_columns[exc.column]!r}; written as JSON text"
            )
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
    with disk_errors(run_dir):
        tmp.replace(out_path)
        fsync_dir(out_path.parent)
    return warnings


def _write_results(
    tmp: Path,
    buckets: dict[int, list[tuple[int, int, Path, bool]]],
    total_rows: int,
    types: dict[str, pa.DataType | None],
    schema: pa.Schema,
    run_dir: Path,
) -> None:
    with disk_errors(run_dir), tmp.open("wb") as fh:
        with pq.ParquetWriter(fh, schema, compression=COMPRESSION) as writer:
            wrote = False
            for bucket in sorted(buckets):
                if bucket * BUCKET_ROWS >= total_rows:
                    break
                table = _read_bucket(buckets[bucket], bucket)
                window = _window(table, total_rows, types, schema)
                if window.num_rows:
                    writer.write_table(window)
                    wrote = True
            if not wrote:
                writer.write_table(schema.empty_table())
        fh.flush()
        os.fsync(fh.fileno())
