"""Final assembly of results.parquet: the parts merged in input order, last outcome wins.

Streams bucket by bucket on parts.py's grid (about one bucket of rows in memory), leaves
out rows past the current input size, and types carried-through columns (JSON text when
they do not fit). Writes only results.parquet (`files.atomic_write`); never writes or
removes parts, and no journal, lock or done-set logic (that is writer.py's job).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import batchrunner.rundir.parts as part_files
from batchrunner.errors import IntegrityError
from batchrunner.rundir.files import atomic_write
from batchrunner.rundir.parts import (
    COMPRESSION,
    OUTPUT_SCHEMA,
    PART_SCHEMA,
    CorruptPartError,
    is_unreadable,
    last_wins_sorted,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from io import BufferedWriter
    from pathlib import Path

    from batchrunner.rundir.carried import FromInput
    from batchrunner.rundir.parts import PartInfo

    Entry = tuple[int, int, Path, bool]  # a part's row group in a bucket: seq, rg, path, exact

# The bucket grid is parts.py's (it wrote the parts on it): read as parts.BUCKET_ROWS at
# call time so a single value governs both sides.

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
        try:
            return pa.array(as_text, type_)
        except UnicodeEncodeError:  # an unpaired surrogate: JSON text keeps it as an escape
            return None
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


def bucket_entries(parts: Sequence[PartInfo]) -> dict[int, list[Entry]]:
    """The row groups of `parts` filed under every bucket they touch."""
    buckets: dict[int, list[Entry]] = defaultdict(list)
    for part in parts:
        for first, last, rg in part.groups:
            for b in range(first, last + 1):
                buckets[b].append((part.seq, rg, part.path, first == last))
    return buckets


def read_bucket(entries: list[Entry], bucket: int) -> pa.Table:
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
            lo, hi = bucket * part_files.BUCKET_ROWS, (bucket + 1) * part_files.BUCKET_ROWS
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
    carried: FromInput | None,
) -> pa.Table:
    table = table.filter(pc.less(table.column("_index"), total_rows))
    columns = [table.column(name) for name in OUTPUT_SCHEMA.names]
    taken: dict[str, pa.Array] = {}
    if carried is not None:
        indices = table.column("_index").to_pylist()
        taken = dict(zip(carried.names, carried.take(indices), strict=True))
    if extra_types:
        blobs = table.column("_extra").to_pylist()
        objs = [json.loads(b) if b else {} for b in blobs]
        for field, t in extra_types.items():
            if field in taken:  # exact, from the input (carried.py)
                columns.append(taken[field])
                continue
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
    succeeded: int,
    errored: int,
    carried: FromInput | None = None,
) -> list[str]:
    """Stream the parts into `out_path` in input order, last outcome per index wins.

    Rows with index >= total_rows (left by an earlier, larger run) are left out. Returns
    warnings (carried-through columns that fell back to JSON text). `succeeded` and
    `errored` are the outcomes the done set counts: unless the rows match them exactly,
    each id once, IntegrityError is raised and `out_path` is left as it was.
    """
    buckets = bucket_entries(parts)
    return write_results(
        out_path,
        buckets=sorted(buckets),
        read=lambda bucket: read_bucket(buckets[bucket], bucket),
        total_rows=total_rows,
        extra_columns=extra_columns,
        run_dir=run_dir,
        expect=(succeeded, errored),
        carried=carried,
    )


def write_results(
    out_path: Path,
    *,
    buckets: Sequence[int],
    read: Callable[[int], pa.Table],
    total_rows: int,
    extra_columns: dict[str, str],
    run_dir: Path,
    expect: tuple[int, int],
    unique_ids: bool = True,
    carried: FromInput | None = None,
) -> list[str]:
    """`assemble_results` from any source: `read(bucket)` gives a bucket's rows in the
    parts' schema, sorted by `_index`, one row per index. `expect`: (succeeded, errored).
    `unique_ids=False` skips the id check, which holds every id in memory at once (for
    `merge`, whose sources were each checked when their run finished). `carried` gives
    the Parquet input's columns with their exact types, taken from the input by index.
    """
    out_names = _out_names(extra_columns)
    types = {field: parse_type(t) for field, t in extra_columns.items()}
    types |= carried.types if carried is not None else {}
    warnings = [
        f"column {out_names[f]!r}: type {extra_columns[f]!r} not understood; written as JSON text"
        for f, t in types.items()
        if t is JSON_TYPE and extra_columns[f] != "json"
    ]
    while True:
        schema = _output_schema({out_names[f]: t for f, t in types.items()})
        try:
            # A refused tally leaves the old results.parquet (or none) as it was.
            if carried is not None:
                carried.rewind()
            with atomic_write(out_path, run_dir=run_dir) as fh:
                args = (buckets, read, total_rows, types, schema, unique_ids, carried)
                tally = _write_results(fh, *args)
                _check(tally, succeeded=expect[0], errored=expect[1])
            break
        except _NoFit as exc:
            types[exc.column] = JSON_TYPE
            warnings.append(
                f"column {out_names[exc.column]!r}: some values do not fit type "
                f"{extra_columns[exc.column]!r}; written as JSON text"
            )
    return warnings


@dataclass
class _Tally:
    """What went into results.parquet.tmp: rows, succeeded rows, and every id."""

    rows: int = 0
    succeeded: int = 0
    ids: list[pa.Array] = dataclass_field(default_factory=list)


def _check(tally: _Tally, *, succeeded: int, errored: int) -> None:
    """Raise IntegrityError unless the rows are exactly the recorded outcomes, ids unique."""
    if (tally.rows, tally.succeeded) != (succeeded + errored, succeeded):
        raise IntegrityError(
            f"results.parquet not written: the parts hold {tally.rows} rows "
            f"({tally.succeeded} succeeded) but {succeeded + errored} outcomes were recorded "
            f"({succeeded} succeeded); journal/ and parts/ are kept as they are. Run the same "
            "command again: rows missing from the parts count as pending and are sent again"
        )
    if not tally.ids:
        return  # not collected (unique_ids=False), or no rows
    # Arrow's hash kernel: 0.17 s for 1 M ids; the ids are in memory as Arrow strings only.
    counts = pc.value_counts(pa.chunked_array(tally.ids, pa.string()))
    if len(counts) < tally.rows:
        twice = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
        shown = ", ".join(repr(v) for v in twice.to_pylist()[:3])
        raise IntegrityError(
            f"results.parquet not written: {len(twice)} id(s) belong to more than one row "
            f"({shown}{', ...' if len(twice) > 3 else ''}); ids must be unique. journal/ and "
            "parts/ are kept as they are; the input or the run dir changed under the run"
        )


def _write_results(
    fh: BufferedWriter,
    buckets: Sequence[int],
    read: Callable[[int], pa.Table],
    total_rows: int,
    types: dict[str, pa.DataType | None],
    schema: pa.Schema,
    unique_ids: bool,
    carried: FromInput | None,
) -> _Tally:
    tally = _Tally()
    with pq.ParquetWriter(fh, schema, compression=COMPRESSION) as writer:
        for bucket in buckets:
            if bucket * part_files.BUCKET_ROWS >= total_rows:
                break
            window = _window(read(bucket), total_rows, types, schema, carried)
            if window.num_rows:
                writer.write_table(window)
                tally.rows += window.num_rows
                tally.succeeded += pc.sum(pc.equal(window["status"], "succeeded")).as_py()
                if unique_ids:
                    tally.ids.extend(window.column("id").chunks)
        if not tally.rows:
            writer.write_table(schema.empty_table())
    return tally
