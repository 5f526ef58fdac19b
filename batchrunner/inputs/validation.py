"""The validation pass: read the whole input once, before anything is sent.

Raises SourceError naming the file and line (or Parquet row) of the first problem, or
returns an InputSummary. Holds no rows: ids are kept as 64-bit hashes only, and a repeated
hash is confirmed by a second, targeted pass, so a hash collision is never reported.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from batchrunner.errors import SourceError
from batchrunner.inputs.images import ImageCheck, image_folder
from batchrunner.inputs.readers import OnFile, input_files, input_format, iter_records
from batchrunner.inputs.rows import RowMaker
from batchrunner.protocols import PROTOCOLS

if TYPE_CHECKING:
    from batchrunner.records import Shape
    from batchrunner.sharding import Shard
    from batchrunner.spec import SourceOptions
    from batchrunner.uris import Source

Digest = Callable[[str], int]  # an id -> 64 bits (unsigned)

# A JSON value's Python type -> the arrow type of its column ("json": stored as JSON text).
_KINDS: dict[type, str] = {str: "string", int: "int64", float: "double", bool: "bool"}


def _hash64(row_id: str) -> int:
    # Python's own string hash (SipHash, seeded per process): both passes run in this
    # process, and it is computed in C at a third of blake2b's cost per row.
    return hash(row_id) & 0xFFFF_FFFF_FFFF_FFFF


@dataclass(frozen=True, slots=True, kw_only=True)
class InputSummary:
    """What a valid input holds.

    `extra_columns` maps each carried-through column to its arrow type name: the file's
    own types for Parquet; for JSONL "string", "int64", "double", "bool", "null" (never a
    value) or "json" (objects, arrays or mixed types, stored as JSON text).
    """

    rows: int
    shape: Shape
    files: list[Source]
    extra_columns: dict[str, str]
    seconds: float
    shard_rows: int | None = None  # with a shard: how many of the rows are its own
    max_output_tokens: int = 0  # every row's max_tokens (times `n` choices): plan's bound
    image_files: int = 0  # local image files the rows name (each checked and hashed)
    images: str | None = None  # their digest (inputs.images.ImageCheck), for the fingerprint


def validate(
    path: Source, opts: SourceOptions, *, shard: Shard | None = None, _digest: Digest = _hash64
) -> InputSummary:
    """Check every row of the input in one streaming pass; SourceError on the first problem.
    The whole input is checked also for a `shard` (every shard refuses a bad file alike),
    whose own rows are counted. `_digest`, for tests: a weak hash forces id collisions."""
    started = time.perf_counter()
    kind = input_format(path, opts.format)
    parquet = kind == "parquet"
    maker, images = _makers(path, opts, kind)
    check, schemas = _schema_check(maker)
    # 256 buckets by the digest's low byte, so each sorts alone with little extra memory.
    buckets = [array("Q") for _ in range(256)]
    kinds: dict[str, str] = {}
    last_types: dict[str, type] = {}
    rows = shard_rows = bound = 0
    owns = shard.owns if shard is not None else None
    failure: SourceError | None = None
    parse = maker.parse
    # The run's build_request, less what cannot fail: every row valid here can be sent.
    builders = {name: protocol.build_body for name, protocol in PROTOCOLS.items()}
    try:
        with closing(iter_records(path, on_file=check, fmt=opts.format)) as records:
            for index, (record, where) in enumerate(records):
                row_id, body, extra, api = parse(record, index, where)
                shape = maker.shape or "simple"  # parse() has set it
                if shape == "simple" and "images" in body:  # a new dict: parse() made it
                    body["images"] = images.check(body["images"], where)
                built, max_tokens = builders[api or opts.api](
                    body, opts.request, shape=shape, api=api, where=where
                )
                bound += max_tokens
                if "n" in built:  # chat: n answers, each up to max_tokens (a rare field)
                    bound += max_tokens * (_choices(built["n"]) - 1)
                digest = _digest(row_id)
                buckets[digest & 255].append(digest)
                if owns is not None and owns(row_id):
                    shard_rows += 1
                if not parquet:
                    for key, value in extra.items():
                        if last_types.get(key) is not type(value):
                            _note_kind(kinds, last_types, key, value)
                rows += 1
    except SourceError as exc:
        failure = exc  # a duplicate id before this row is the first problem, if any
    _raise_first_problem(path, opts, buckets, failure, rows=rows, digest=_digest)
    shape = _whole_input_checked(path, opts, maker, rows)
    return InputSummary(
        rows=rows,
        shape=shape,
        files=input_files(path),
        extra_columns=_columns(maker, schemas) if parquet else kinds,
        seconds=time.perf_counter() - started,
        shard_rows=shard_rows if shard is not None else None,
        max_output_tokens=bound,
        image_files=images.files,
        images=images.digest,
    )


def _whole_input_checked(path: Source, opts: SourceOptions, maker: RowMaker, rows: int) -> Shape:
    """The input's shape, once what only the whole input tells is checked: it has rows,
    and a column --image-column names is in one at least (else a typo sends no image)."""
    if rows == 0 or maker.shape is None:
        raise SourceError(str(path), "no rows: the input is empty")
    if (column := opts.request.image_column) is not None and not maker.image_rows:
        raise SourceError(str(path), f"image column {column!r} is in no row")
    return maker.shape


def _makers(path: Source, opts: SourceOptions, kind: str) -> tuple[RowMaker, ImageCheck]:
    """The pass's RowMaker (the run's own, image paths joined alike) and image check."""
    folder = image_folder(path, opts.image_dir)
    maker = RowMaker(opts, json_strings=kind != "jsonl", image_folder=folder)
    return maker, ImageCheck(opts.api, opts.request.image_column or "images")


def _columns(maker: RowMaker, schemas: list[Any]) -> dict[str, str]:
    """A Parquet input's carried columns with their types, from its unified schema."""
    return {f.name: str(f.type) for f in schemas[0] if maker.carried(f.name)}


def _raise_first_problem(
    path: Source,
    opts: SourceOptions,
    buckets: list[array[int]],
    failure: SourceError | None,
    *,
    rows: int,
    digest: Digest,
) -> None:
    """A duplicate id read before `failure` is the first problem; then `failure` itself."""
    repeated = _repeated(buckets)
    buckets.clear()  # up to 8 bytes a row: free them before reading the input again
    if repeated:
        _confirm_duplicates(path, opts, repeated, rows=rows, digest=digest)
    if failure is not None:
        raise failure


def _choices(n: object) -> int:
    return n if type(n) is int and n > 1 else 1


def _schema_check(maker: RowMaker) -> tuple[OnFile, list[Any]]:
    """The pass's hook for each Parquet file (the columns the options name exist, and the
    file's types agree with the files before it), and the unified schema it keeps."""
    schemas: list[Any] = []

    def check(file: Source, schema: Any) -> None:
        maker.check_columns(schema.names, str(file))
        try:
            schemas[:] = [pa.unify_schemas([*schemas, schema], promote_options="permissive")]
        except (pa.ArrowException, TypeError) as exc:
            reason = f"its column types disagree with the files before it: {exc}"
            raise SourceError(str(file), reason) from None

    return check, schemas


def _note_kind(kinds: dict[str, str], last: dict[str, type], key: str, value: object) -> None:
    """Widen a JSONL column's type for a value whose Python type differs from the last one."""
    last[key] = type(value)
    kind = "null" if value is None else _KINDS.get(type(value), "json")
    seen = kinds.get(key)
    if seen != kind:
        kinds[key] = _merge_kinds(seen, kind)


def _merge_kinds(seen: str | None, kind: str) -> str:
    if seen is None or seen == "null":
        return kind
    if kind == "null":
        return seen
    if {seen, kind} == {"int64", "double"}:
        return "double"
    return "json"


def _repeated(buckets: list[array[int]]) -> set[int]:
    """The digests that occur more than once: per bucket, a sort and an adjacent check."""
    found: set[int] = set()
    for bucket in buckets:
        count = len(bucket)
        if count < 2:
            continue
        values = pa.Array.from_buffers(pa.uint64(), count, [None, pa.py_buffer(bucket)]).sort()
        following, preceding = values.slice(1), values.slice(0, count - 1)
        same = pc.equal(following, preceding)
        if pc.any(same).as_py():
            found.update(pc.filter(following, same).unique().to_pylist())
    return found


def _confirm_duplicates(
    path: Source, opts: SourceOptions, repeated: set[int], *, rows: int, digest: Digest
) -> None:
    """Re-read the first `rows` rows; raise on the first id that really repeats."""
    maker = RowMaker(opts, json_strings=input_format(path, opts.format) != "jsonl")
    first: dict[str, str] = {}

    def check(file: Source, schema: Any) -> None:
        maker.check_columns(schema.names, str(file))

    with closing(iter_records(path, on_file=check, fmt=opts.format)) as records:
        for index, (record, where) in enumerate(islice(records, rows)):
            row_id = maker.parse(record, index, where)[0]
            if digest(row_id) not in repeated:
                continue
            if row_id in first:
                reason = f"duplicate id {row_id!r} ({_first_seen(first[row_id], where)})"
                raise SourceError(where, reason)
            first[row_id] = where


def _first_seen(first: str, here: str) -> str:
    """'first on line 3' in the same file, else 'first at FILE row 3'."""
    for separator, unit in ((" row ", "row"), (":", "line")):
        file, _, number = first.rpartition(separator)
        if file and number.isdigit():
            if here.rpartition(separator)[0] == file:
                return f"first on {unit} {number}"
            break
    return f"first at {first}"
