"""Final assembly of results.parquet: the parts merged in input order, last outcome wins.

Streams bucket by bucket on parts.py's grid (about one bucket of rows in memory), leaves
out rows past the current input size, and types carried-through columns and the `parsed`
columns of --json-schema (JSON text when they do not fit). Parts of an older layout read
with their newer columns null. Writes only results.parquet (`files.atomic_write`); never writes or
removes parts, and no journal, lock or done-set logic (that is writer.py's job).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import batchrunner.rundir.parts as part_files
from batchrunner.errors import IntegrityError
from batchrunner.rundir.arrowtypes import JSON_TYPE, convert_column, parse_type
from batchrunner.rundir.files import atomic_write
from batchrunner.rundir.idcheck import IdCheck
from batchrunner.rundir.parts import (
    COMPRESSION,
    OUTPUT_SCHEMA,
    CorruptPartError,
    conform_part,
    in_bucket,
    is_unreadable,
    last_wins_sorted,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from io import BufferedWriter
    from pathlib import Path

    from batchrunner.rundir.carried import FromInput
    from batchrunner.rundir.parts import PartInfo

    Entry = tuple[int, int, Path, bool]  # a part's row group in a bucket: seq, rg, path, exact

# The bucket grid is parts.py's (it wrote the parts on it): read as parts.BUCKET_ROWS at
# call time so a single value governs both sides.


class _NoFit(Exception):
    def __init__(self, column: str, *, parsed: bool) -> None:
        self.column = column
        self.parsed = parsed


@dataclass(slots=True)
class _Types:
    """Arrow type per column taken from JSON: `parsed` (--json-schema: "" is the `parsed`
    column itself, then one per typed field) and `extra` (carried-through fields)."""

    parsed: dict[str, pa.DataType | None]
    extra: dict[str, pa.DataType | None]


def _output_schema(more: list[tuple[str, pa.DataType | None]]) -> pa.Schema:
    """The fixed columns, then `more` (JSON_TYPE columns hold JSON text)."""
    fields = list(OUTPUT_SCHEMA)
    for name, t in more:
        fields.append(pa.field(name, pa.string() if t is JSON_TYPE else t))
    return pa.schema(fields)


def _parsed_names(parsed_columns: dict[str, str] | None) -> dict[str, str]:
    """Output name per column of --json-schema: `parsed` (the key ""), `parsed.<field>`."""
    if parsed_columns is None:
        return {}
    return {"": "parsed", **{f: f"parsed.{f}" for f in parsed_columns}}


def _out_names(extra_columns: dict[str, str], taken: set[str]) -> dict[str, str]:
    """Output name per carried-through field; a clash with a fixed column (or one in
    `taken`) gets `input_`."""
    taken = set(OUTPUT_SCHEMA.names) | taken
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
    pieces = [_read_piece(entry, bucket) for entry in sorted(entries, key=lambda e: (e[0], e[1]))]
    if len(pieces) == 1:
        return pieces[0]  # one row group is already sorted, one row per index
    return last_wins_sorted(pieces)  # which lets go of the pieces as it joins them


def _read_piece(entry: Entry, bucket: int) -> pa.Table:
    """The rows of `bucket` in one entry's row group."""
    _seq, rg, path, exact = entry
    try:
        with pq.ParquetFile(path) as pf:
            table = conform_part(pf.read_row_group(rg, use_threads=False))
    except Exception as exc:
        if is_unreadable(exc):
            raise CorruptPartError(path, str(exc).splitlines()[0]) from exc
        raise
    return table if exact else in_bucket(table, bucket)


def _json_columns(
    blobs: list[str | None], types: dict[str, pa.DataType | None], whole: bool
) -> list[pa.Array]:
    """One array per key of `types` from the JSON objects in `blobs`; `whole`: the key ""
    is the JSON text itself. Raises _NoFit naming the first key whose values do not fit."""
    keys = [key for key in types if not (whole and key == "")]
    objs = [json.loads(b) if b else {} for b in blobs] if keys else []
    arrays = []
    for key, t in types.items():
        if whole and key == "":
            arrays.append(pa.array(blobs, pa.string()))
            continue
        arr = convert_column([o.get(key) if isinstance(o, dict) else None for o in objs], t)
        if arr is None:
            raise _NoFit(key, parsed=whole)
        arrays.append(arr)
    return arrays


def _window(
    table: pa.Table,
    total_rows: int,
    types: _Types,
    schema: pa.Schema,
    carried: FromInput | None,
) -> pa.Table:
    index = table.column("_index")
    if table.num_rows and pc.max(index).as_py() >= total_rows:  # else no copy: the common case
        table = table.filter(pc.less(index, total_rows))
    columns = [table.column(name) for name in OUTPUT_SCHEMA.names]
    if types.parsed:
        columns += _json_columns(table.column("parsed").to_pylist(), types.parsed, True)
    if types.extra:
        taken: dict[str, pa.Array] = {}
        if carried is not None:  # exact, from the input (carried.py)
            indices = table.column("_index").to_pylist()
            taken = dict(zip(carried.names, carried.take(indices), strict=True))
        rest = {field: t for field, t in types.extra.items() if field not in taken}
        blobs = table.column("_extra").to_pylist() if rest else []
        from_json = iter(_json_columns(blobs, rest, False))
        columns += [taken[f] if f in taken else next(from_json) for f in types.extra]
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
    parsed_columns: dict[str, str] | None = None,
    carried: FromInput | None = None,
) -> list[str]:
    """Stream the parts into `out_path` in input order, last outcome per index wins.

    Rows with index >= total_rows (left by an earlier, larger run) are left out. Returns
    warnings (columns that fell back to JSON text). `parsed_columns` (a run with
    --json-schema) maps the schema's typed fields to Arrow type strings: `parsed` and
    `parsed.<field>` follow the fixed columns. `succeeded` and `errored` are the outcomes
    the done set counts: unless the rows match them exactly, each id once,
    IntegrityError is raised and `out_path` is left as it was.
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
        parsed_columns=parsed_columns,
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
    parsed_columns: dict[str, str] | None = None,
    carried: FromInput | None = None,
) -> list[str]:
    """`assemble_results` from any source: `read(bucket)` gives a bucket's rows in the
    parts' schema, sorted by `_index`, one row per index. `expect`: (succeeded, errored).
    `unique_ids=False` skips the id check (for `merge`, whose sources were each checked
    when their run finished). `carried` gives
    the Parquet input's columns with their exact types, taken from the input by index.
    """
    p_names = _parsed_names(parsed_columns)
    out_names = _out_names(extra_columns, set(p_names.values()))
    declared = {"": "string", **(parsed_columns or {})}
    types = _Types(
        parsed={key: parse_type(declared[key]) for key in p_names},
        extra={field: parse_type(t) for field, t in extra_columns.items()},
    )
    types.extra |= carried.types if carried is not None else {}
    warnings = [
        f"column {out_names[f]!r}: type {extra_columns[f]!r} not understood; written as JSON text"
        for f, t in types.extra.items()
        if t is JSON_TYPE and extra_columns[f] != "json"
    ]
    while True:
        schema = _output_schema(
            [(p_names[k], t) for k, t in types.parsed.items()]
            + [(out_names[f], t) for f, t in types.extra.items()]
        )
        try:
            # A refused tally leaves the old results.parquet (or none) as it was.
            if carried is not None:
                carried.rewind()
            ids = IdCheck(sum(expect), run_dir) if unique_ids else None
            try:
                with atomic_write(out_path, run_dir=run_dir) as fh:
                    args = (buckets, read, total_rows, types, schema, ids, carried)
                    tally = _write_results(fh, *args)
                    _check(tally, succeeded=expect[0], errored=expect[1])
                    _check_ids(ids, fh)
            finally:
                if ids is not None:
                    ids.close()
            break
        except _NoFit as exc:
            group, names, given = (
                (types.parsed, p_names, declared)
                if exc.parsed
                else (types.extra, out_names, extra_columns)
            )
            group[exc.column] = JSON_TYPE
            warnings.append(
                f"column {names[exc.column]!r}: some values do not fit type "
                f"{given[exc.column]!r}; written as JSON text"
            )
    return warnings


@dataclass
class _Tally:
    """What went into results.parquet.tmp: rows and succeeded rows."""

    rows: int = 0
    succeeded: int = 0


def _check(tally: _Tally, *, succeeded: int, errored: int) -> None:
    """Raise IntegrityError unless the rows are exactly the recorded outcomes."""
    if (tally.rows, tally.succeeded) != (succeeded + errored, succeeded):
        raise IntegrityError(
            f"results.parquet not written: the parts hold {tally.rows} rows "
            f"({tally.succeeded} succeeded) but {succeeded + errored} outcomes were recorded "
            f"({succeeded} succeeded); journal/ and parts/ are kept as they are. Run the same "
            "command again: rows missing from the parts count as pending and are sent again"
        )


def _check_ids(ids: IdCheck | None, fh: BufferedWriter) -> None:
    """Raise IntegrityError when an id belongs to more than one row written to `fh`.

    Bounded memory (idcheck.py): every id was filed as a hash while it was written; ids
    are read back from `fh`'s file only to confirm hashes that repeat.
    """
    if ids is None or ids.rows < 2:
        return  # not collected (unique_ids=False), or nothing to compare

    def written() -> Iterator[pa.Array]:
        fh.flush()
        with pq.ParquetFile(fh.name) as pf:
            for batch in pf.iter_batches(columns=["id"]):
                yield batch.column(0)

    twice = list(ids.duplicates(written()))
    if twice:
        shown = ", ".join(repr(v) for v in twice[:3])
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
    types: _Types,
    schema: pa.Schema,
    ids: IdCheck | None,
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
                if ids is not None:
                    ids.add(window.column("id"))
            # Let go before the next bucket is read, or two are held at once (assembling
            # 300 k recorded rows, 16 k-row buckets of 12 MiB: peak 131 -> 117 MiB).
            del window
        if not tally.rows:
            writer.write_table(schema.empty_table())
    return tally
