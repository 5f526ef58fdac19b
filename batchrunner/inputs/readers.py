"""Reading inputs: formats, compression, Parquet directories, rows, and the input's identity.

`iter_records` yields decoded records (dicts as they stand in the file) with where they
came from, knowing nothing of shapes or ids; `read_rows` turns them into Rows with
`rows.RowMaker`. The producer end of the pipeline: it never checks ids across rows (the
validation pass does) and never sends anything. Memory stays O(one Parquet batch or one
line), whatever the file size.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import stat
import zlib
from collections.abc import Callable, Generator
from contextlib import closing
from typing import IO, TYPE_CHECKING, Any, Literal, cast

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import zstandard

from batchrunner import remote
from batchrunner.errors import SourceError
from batchrunner.inputs.images import image_folder
from batchrunner.inputs.rows import RowMaker
from batchrunner.uris import Source, Uri

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from batchrunner.records import Row
    from batchrunner.spec import SourceOptions

Format = Literal["jsonl", "csv", "tsv", "parquet"]  # spec.InputFormat
Records = Generator[tuple[Any, str], None, None]  # (decoded record, "FILE:LINE" / "FILE row N")
OnFile = Callable[[Source, Any], None]  # (file, pyarrow schema), before its first record

BATCH_ROWS = 4096  # Parquet rows decoded at once: a few MB of Python objects at most
_JSONL = (".jsonl", ".json", ".ndjson")
_PARQUET = (".parquet", ".pq")
_DELIMITED = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv"}
_IDENTITY_SPAN = 1 << 20  # identity hashes the first and the last MiB of each file
_READ_ERRORS = (OSError, EOFError, zlib.error, zstandard.ZstdError)
_BOM = "\ufeff"
_JSON_SPACE = " \t\r\n"
# json's own C scanner (what json.loads runs underneath); typeshed does not declare it.
_SCAN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def input_format(path: Source, given: Format | None = None) -> Format:
    """How `path` is read: `given` (`--format`), else from its name; SourceError if unknown.
    A remote object is one file (never a directory of Parquet files)."""
    if isinstance(path, Uri):
        return given or _by_name(path.suffixes, str(path))
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SourceError(str(path), "no such file or directory") from None
    except OSError as exc:  # a symlink loop, a path through a file, no permission
        raise SourceError(str(path), f"cannot open: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        return "parquet"
    if given is not None:
        return given
    return _by_name(path.suffixes, str(path))


def _by_name(names: list[str], path: str) -> Format:
    suffixes = [suffix.lower() for suffix in names[-2:]]
    if suffixes[-1:] and suffixes[-1] in _PARQUET:
        return "parquet"
    if suffixes[-1:] and suffixes[-1] in (".gz", ".zst"):
        suffixes.pop()
    if suffixes[-1:] and suffixes[-1] in _JSONL:
        return "jsonl"
    if suffixes[-1:] and suffixes[-1] in _DELIMITED:
        return cast("Format", _DELIMITED[suffixes[-1]])
    raise SourceError(
        path,
        "unknown input format: expected .jsonl, .json or .ndjson, .csv, .tsv (optionally .gz "
        "or .zst), .parquet, or a directory of .parquet files; or say it with --format",
    )


def input_files(path: Source) -> list[Source]:
    """The files that make up an input: itself, or a directory's *.parquet sorted by name."""
    if isinstance(path, Uri):
        return [path]
    return [*_local_files(path)]


def _local_files(path: Path) -> list[Path]:
    if input_format(path, "jsonl") != "parquet":
        return [path]
    files = sorted((p for p in path.glob("*.parquet") if p.is_file()), key=lambda p: p.name)
    if not files:
        raise SourceError(str(path), "no .parquet files in this directory")
    return files


def parquet_file(path: Source) -> pq.ParquetFile:
    """One Parquet file, local or remote, read a column chunk at a time: pre_buffer would
    read a whole row group at once (one can hold the whole file)."""
    handle = remote.open_file(path) if isinstance(path, Uri) else path
    return pq.ParquetFile(handle, pre_buffer=False, buffer_size=1 << 20)


def open_jsonl(path: Source) -> IO[bytes]:
    """Open a JSONL file for binary line iteration, decompressing .gz and .zst."""
    if isinstance(path, Uri):
        return cast("IO[bytes]", io.BufferedReader(remote.open_stream(path), 1 << 20))
    suffix = path.suffix.lower()
    try:
        if suffix == ".gz":
            return cast("IO[bytes]", gzip.open(path, "rb"))
        if suffix == ".zst":
            reader = zstandard.ZstdDecompressor().stream_reader(
                path.open("rb"), read_across_frames=True, closefd=True
            )
            return io.BufferedReader(reader, 1 << 20)
        return path.open("rb", buffering=1 << 20)
    except OSError as exc:
        raise SourceError(str(path), f"cannot open: {exc.strerror or exc}") from None


SKIPPED: Any = object()  # stands in for a record `skip` said not to parse


def iter_records(
    path: Source,
    *,
    on_file: OnFile | None = None,
    skip: Callable[[int], bool] | None = None,
    fmt: Format | None = None,
) -> Records:
    """Every record of the input in order, with its place: "FILE:LINE" or "FILE row N".

    `on_file` sees each Parquet file's schema before its rows (never called for JSONL).
    `skip(index)` true: a JSONL row is yielded as `SKIPPED` without being decoded (a resume
    passes over a million recorded rows in a fraction of the parse time).
    Close it (`contextlib.closing`) when stopping early: its open file must not wait for GC.
    `fmt` is `--format`: None reads by the name.
    """
    kind = input_format(path, fmt)
    if kind == "jsonl":
        return _jsonl_records(path, skip)
    if kind in ("csv", "tsv"):
        return _delimited_records(path, "\t" if kind == "tsv" else ",")
    return _parquet_records(input_files(path), on_file)


def read_rows(
    path: Source, opts: SourceOptions, *, skip: Callable[[int], bool] | None = None
) -> Iterator[Row]:
    """Every row of the input, in order; SourceError on the first row that cannot be one.

    A directory is read as one input: its *.parquet files sorted by name, `Row.index`
    running on across them. Rows whose index `skip` accepts are left out (and, in JSONL,
    not even parsed).
    """
    maker = RowMaker(
        opts,
        json_strings=input_format(path, opts.format) != "jsonl",
        image_folder=image_folder(path, opts.image_dir),
    )

    def check(file: Source, schema: Any) -> None:
        maker.check_columns(schema.names, str(file))

    make = maker.make
    with closing(iter_records(path, on_file=check, skip=skip, fmt=opts.format)) as records:
        for index, (record, where) in enumerate(records):
            if record is SKIPPED or (skip is not None and skip(index)):
                continue
            yield make(record, index, where)


def _jsonl_records(path: Source, skip: Callable[[int], bool] | None = None) -> Records:
    name = str(path)
    scan = _SCAN
    lineno = 0
    index = -1
    with open_jsonl(path) as handle:
        try:
            for lineno, line in enumerate(handle, 1):
                if line.isspace():
                    continue  # blank lines are no rows, but they still count as lines
                index += 1
                if skip is not None and skip(index):
                    yield SKIPPED, ""
                    continue
                try:
                    text = line.decode()
                except UnicodeDecodeError as exc:
                    byte = line[exc.start]
                    reason = f"not UTF-8: byte 0x{byte:02x} at column {exc.start + 1}"
                    raise SourceError(f"{name}:{lineno}", reason) from None
                # json's C scanner without json.loads' Python layers: 2.5x faster a line.
                # Whatever it does not take whole goes through json.loads for its verdict.
                try:
                    record, end = scan(text, 0)
                except (StopIteration, ValueError, RecursionError):
                    end = -1
                if end != len(text) and (end < 0 or text[end:].strip(_JSON_SPACE)):
                    record = _load(text.removeprefix(_BOM) if lineno == 1 else text, name, lineno)
                yield record, f"{name}:{lineno}"
        except _READ_ERRORS as exc:
            raise SourceError(f"{name}:{lineno + 1}", f"cannot read: {exc}") from None


def _load(text: str, name: str, lineno: int) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        reason = f"invalid JSON: {exc.msg} (column {exc.colno})"
    except RecursionError:
        reason = "invalid JSON: nested too deeply"
    raise SourceError(f"{name}:{lineno}", reason)


def _parquet_records(files: list[Source], on_file: OnFile | None) -> Records:
    for file in files:
        name = str(file)
        try:
            parquet = parquet_file(file)
        except (pa.ArrowException, OSError) as exc:
            raise SourceError(name, f"cannot read Parquet: {exc}") from None
        with parquet:
            schema = parquet.schema_arrow
            if on_file is not None:
                on_file(file, schema)
            nested = [field.name for field in schema if pa.types.is_nested(field.type)]
            number = 0
            try:
                for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
                    # Parquet cannot leave a field out: a null means "not given".
                    has_nulls = any(column.null_count for column in batch.columns)
                    for record in _decoded(batch, name, number):
                        number += 1
                        if has_nulls:
                            record = {k: v for k, v in record.items() if v is not None}
                        for key in nested:
                            if key in record:
                                record[key] = _prune(record[key])
                        yield record, f"{name} row {number}"
            except (pa.ArrowException, OSError) as exc:
                reason = f"cannot read Parquet after row {number}: {exc}"
                raise SourceError(name, reason) from None


def _delimited_records(path: Source, delimiter: str) -> Records:
    """CSV/TSV through pyarrow.csv, a block (1 MiB) at a time: a header line names the
    fields, types are inferred (numbers, booleans, strings), empty numbers are left out."""
    name = str(path)
    number = 0
    try:
        # A path (not an open file) lets pyarrow decompress .gz and .zst by the name.
        reader = pacsv.open_csv(
            remote.open_stream(path) if isinstance(path, Uri) else str(path),
            read_options=pacsv.ReadOptions(block_size=1 << 20),
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
        )
        with closing(reader):
            for batch in reader:
                for record in _decoded(batch, name, number):
                    number += 1
                    yield {k: v for k, v in record.items() if v is not None}, f"{name} row {number}"
    except (pa.ArrowException, OSError) as exc:
        # A later block whose values do not fit the type inferred from the first one lands
        # here too: pyarrow's message names the column.
        raise SourceError(name, f"cannot read CSV after row {number}: {exc}") from None


def _decoded(batch: Any, name: str, before: int) -> list[dict[str, Any]]:
    """The batch's rows as dicts; SourceError naming row and column of a string that is not
    UTF-8 (Arrow does not check what a writer put in a string column)."""
    try:
        records: list[dict[str, Any]] = batch.to_pylist()
    except UnicodeDecodeError:
        for i in range(batch.num_rows):
            for column, values in zip(batch.schema.names, batch.columns, strict=True):
                try:
                    values[i].as_py()
                except UnicodeDecodeError as exc:
                    reason = f"column {column!r} is not UTF-8 (byte 0x{exc.object[exc.start]:02x})"
                    raise SourceError(f"{name} row {before + i + 1}", reason) from None
        raise SourceError(name, f"cannot read Parquet after row {before}: not UTF-8") from None
    return records


def _prune(value: Any) -> Any:
    """Drop the None fields a struct column gives every row that lacks them."""
    if type(value) is dict:
        return {k: _prune(v) for k, v in value.items() if v is not None}
    if type(value) is list:
        return [_prune(v) for v in value]
    return value


def input_identity(path: Source, previous: object = None) -> dict[str, object]:
    """What identifies an input for the run fingerprint, and the rule that compares it.

    Per file: size, mtime, a sha256 of the first and last MiB (`sha256`: 2 MiB read) and
    a sha256 of the whole content (`content_sha256`: one streamed read, ~1 GB/s here).
    `previous` is the identity stored when the run began (None for a new run). When it
    describes the same content it is returned unchanged, so the fingerprint comparison
    sees no difference: with size and mtime unchanged, head and tail decide and nothing
    more is read (a resume starts at once); with only the mtime changed (`touch`, a copy
    that kept the bytes) the whole content is hashed and compared. Anything else gets a
    new identity, content hash included, for the comparison to report.
    A remote object's is `remote.identity`: size, ETag, mtime, head and tail, no more.
    """
    if isinstance(path, Uri):
        return remote.identity(path)
    files = _local_files(path)  # SourceError for a missing file, a symlink loop, ...
    try:
        resolved = str(path.resolve())
        if isinstance(previous, dict) and previous.get("path") == resolved:
            if not path.is_dir() and _unchanged(path, previous):
                return previous
            stored = previous.get("files")
            if (
                path.is_dir()
                and isinstance(stored, list)
                and [f.get("name") if isinstance(f, dict) else None for f in stored]
                == [f.name for f in files]
                and all(_unchanged(f, old) for f, old in zip(files, stored, strict=True))
            ):
                return previous
        if path.is_dir():
            return {"path": resolved, "files": [{"name": f.name, **_identity(f)} for f in files]}
        return {"path": resolved, **_identity(path)}
    except OSError as exc:
        raise SourceError(str(path), f"cannot read: {exc.strerror or exc}") from None


def _unchanged(path: Path, stored: dict[str, Any]) -> bool:
    """Whether `path` holds the content `stored` (one file's identity) describes."""
    quick = _quick_identity(path)
    if all(stored.get(key) == value for key, value in quick.items()):
        return True
    if stored.get("size") != quick["size"] or stored.get("sha256") != quick["sha256"]:
        return False
    # Only the mtime moved: the bytes decide, when the run stored their hash.
    return "content_sha256" in stored and stored["content_sha256"] == _content_hash(path)


def _identity(path: Path) -> dict[str, object]:
    return {**_quick_identity(path), "content_sha256": _content_hash(path)}


def _quick_identity(path: Path) -> dict[str, object]:
    info = path.stat()
    digest = hashlib.sha256(info.st_size.to_bytes(8, "little"))
    with path.open("rb") as handle:
        digest.update(handle.read(_IDENTITY_SPAN))
        if info.st_size > _IDENTITY_SPAN:
            handle.seek(max(_IDENTITY_SPAN, info.st_size - _IDENTITY_SPAN))
            digest.update(handle.read(_IDENTITY_SPAN))
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns, "sha256": digest.hexdigest()}


def _content_hash(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
