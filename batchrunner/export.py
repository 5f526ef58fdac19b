"""`export`: the recorded outcomes as JSONL, CSV, or the OpenAI / Anthropic batch result lines.

A read-only consumer of recorded.py, so it also works on an unfinished run (what is
recorded so far). Writes only to the binary stream it is given; `export_file` makes a
FILE target atomic (temp + rename) and refuses one inside the run directory.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from batchrunner import remote
from batchrunner.errors import ConfigError, DiskError, OutputError
from batchrunner.rundir.files import atomic_write
from batchrunner.rundir.recorded import Recorded
from batchrunner.uris import Uri, as_source

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import BinaryIO

Format = Literal["jsonl", "csv", "openai-batch", "anthropic-batch"]
FORMATS: tuple[str, ...] = get_args(Format)

# Anthropic's error types (anthropic.types.shared.ErrorObject). Client-side failures have
# none; they become the nearest one, and the message keeps our own type in front.
_ANTHROPIC_TYPES = {
    "invalid_request_error",
    "authentication_error",
    "billing_error",
    "permission_error",
    "not_found_error",
    "rate_limit_error",
    "timeout_error",
    "api_error",
    "overloaded_error",
}
_NEAREST = {"timeout": "timeout_error"}
_MESSAGE_BODY = r'"type"\s*:\s*"message"'  # every Messages response's top-level type


def _dumps(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _body(text: str) -> str:
    """The response JSON, fit for one line. It is embedded as received (parsing and
    re-dumping costs ~35 us a row); only a body with raw line breaks is re-serialised."""
    if "\n" in text or "\r" in text:
        return _dumps(json.loads(text))
    return text


def _flat(table: pa.Table, *, iso: bool) -> pa.Table:
    """Timestamps as ISO 8601 text (`iso`) and nested columns as JSON text."""
    for i, f in enumerate(table.schema):
        col = table.column(i)
        if iso and pa.types.is_timestamp(f.type):
            col = pc.strftime(col, format="%Y-%m-%dT%H:%M:%SZ")  # %S carries the microseconds
        elif pa.types.is_nested(f.type):
            col = pa.array([None if v is None else _dumps(v) for v in col.to_pylist()], pa.string())
        table = table.set_column(i, f.name, col)
    return table


def _jsonl(table: pa.Table) -> Iterator[str]:
    for row in _flat(table, iso=True).to_pylist():
        yield _dumps(row)


def _openai_line(row: dict[str, Any]) -> str:
    """One line of an OpenAI Batch output (succeeded or HTTP failure) or error file."""
    req_id = "batch_req_" + hashlib.blake2b(row["id"].encode(), digest_size=12).hexdigest()
    head = f'{{"id":"{req_id}","custom_id":{_dumps(row["id"])},"response":'
    status = row["http_status"]
    if row["status"] == "succeeded":
        meta = f'{{"status_code":{status or 200},"request_id":{_dumps(row["request_id"])}'
        return f'{head}{meta},"body":{_body(row["response"])}}},"error":null}}'
    message = row["error_message"] or row["error_type"] or "error"
    if status is not None and status >= 400:  # an HTTP-level failure, as OpenAI writes one
        error = {"message": message, "type": row["error_type"], "param": None, "code": None}
        response = {
            "status_code": status,
            "request_id": row["request_id"],
            "body": {"error": error},
        }
        return head + _dumps(response) + ',"error":null}'
    return head + 'null,"error":' + _dumps({"code": row["error_type"], "message": message}) + "}"


def _anthropic_line(row: dict[str, Any]) -> str:
    """One line of a Message Batches results file."""
    head = f'{{"custom_id":{_dumps(row["id"])},"result":'
    if row["status"] == "succeeded":
        return f'{head}{{"type":"succeeded","message":{_body(row["response"])}}}}}'
    ours = row["error_type"] or "api_error"
    message = row["error_message"] or ours
    kind = ours if ours in _ANTHROPIC_TYPES else _NEAREST.get(ours, "api_error")
    if kind != ours:
        message = f"{ours}: {message}"
    error = {
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": row["request_id"],
    }
    return head + _dumps({"type": "errored", "error": error}) + "}"


def _check_messages(table: pa.Table) -> None:
    ok = table.filter(pc.equal(table.column("status"), "succeeded"))
    is_message = pc.match_substring_regex(ok.column("response"), _MESSAGE_BODY)
    bad = ok.filter(pc.invert(pc.fill_null(is_message, False)))
    if bad.num_rows:
        raise OutputError(
            f"row {bad.column('id')[0].as_py()!r} holds a chat completion, not a Messages "
            "response: export this run with --format openai-batch"
        )


def _batch_lines(make: Callable[[dict[str, Any]], str]) -> Callable[[pa.Table], Iterator[str]]:
    def lines(table: pa.Table) -> Iterator[str]:
        for row in table.to_pylist():
            yield make(row)

    return lines


_LINES = {
    "jsonl": _jsonl,
    "openai-batch": _batch_lines(_openai_line),
    "anthropic-batch": _batch_lines(_anthropic_line),
}


def _encode(table: pa.Table, fmt: Format, *, header: bool) -> bytes:
    if fmt == "csv":
        buf = pa.BufferOutputStream()
        options = pcsv.WriteOptions(include_header=header)
        pcsv.write_csv(_flat(table, iso=False), buf, write_options=options)
        return bytes(buf.getvalue().to_pybytes())
    if fmt == "anthropic-batch":
        _check_messages(table)
    return "".join(line + "\n" for line in _LINES[fmt](table)).encode("utf-8")


def _write_all(out: BinaryIO, data: bytes) -> None:
    # A buffered write to a pipe can return short without raising (the reader went away
    # after part of it): loop, so the next write raises instead of data vanishing.
    view = memoryview(data)
    while view:
        view = view[out.write(view) :]


RowScores = Mapping[str, tuple[bool | None, str | None]]  # id -> passed, the judge's reason


def _with_scores(table: pa.Table, scores: RowScores) -> pa.Table:
    """`passed` and `reason` appended (null for a row without a score)."""
    found = [scores.get(row_id, (None, None)) for row_id in table.column("id").to_pylist()]
    table = table.append_column("passed", pa.array([f[0] for f in found], pa.bool_()))
    return table.append_column("reason", pa.array([f[1] for f in found], pa.string()))


def export(
    run_dir: Path, out: BinaryIO, *, fmt: Format, scores: RowScores | None = None
) -> tuple[int, list[str]]:
    """Write every recorded row of `run_dir` to `out` in `fmt`, in input order.

    `scores` (a run with [eval]) adds the `passed` and `reason` columns to jsonl and csv;
    the batch formats are the providers' and stay as they are. Returns the number of
    rows written and warnings (lines the journal could not give). Raises OutputError
    when `run_dir` is not a run directory, or (anthropic-batch) when a response is not
    a Messages response.
    """
    recorded = Recorded(run_dir)
    scored = scores is not None and fmt in ("jsonl", "csv")
    rows = 0
    for table in recorded.tables():
        if scored:
            assert scores is not None
            table = _with_scores(table, scores)
        _write_all(out, _encode(table, fmt, header=rows == 0))
        rows += table.num_rows
    if fmt == "csv" and rows == 0:  # the header alone: a CSV of no rows still names columns
        empty = recorded.schema().empty_table()
        _write_all(out, _encode(_with_scores(empty, {}) if scored else empty, fmt, header=True))
    return rows, recorded.warnings


def export_file(
    run_dir: Path, target: Path, *, fmt: Format, scores: RowScores | None = None
) -> tuple[int, list[str]]:
    """`export` into `target` atomically: a temp file beside it, fsync, then rename.

    Raises ConfigError for a target inside the run directory (the runner owns it).
    """
    if target.resolve().is_relative_to(run_dir.resolve()):
        raise ConfigError(f"-o {target} is inside the run directory {run_dir}; write it elsewhere")
    try:
        with atomic_write(target, run_dir=target.parent) as fh:
            result = export(run_dir, fh, fmt=fmt, scores=scores)
    except (OSError, DiskError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise OutputError(f"cannot write {target}: {reason}") from exc
    return result


def export_uri(
    run_dir: Path, target: str, *, fmt: Format, scores: RowScores | None = None
) -> tuple[int, list[str]]:
    """`export` into the remote object `target` (`uris`): written whole to a local temp
    file, then uploaded. A store shows an object only once its upload completes, so a
    reader finds the old object or the whole new one, never a part.

    Raises ConfigError for a scheme not written here, OutputError when the upload fails.
    """
    try:
        uri = as_source(target)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    assert isinstance(uri, Uri)  # as_source gives a Uri for every text is_uri accepts
    try:
        with tempfile.TemporaryDirectory(prefix="batchrunner-export-") as tmp:
            local = Path(tmp) / "export"
            with local.open("wb") as fh:
                result = export(run_dir, fh, fmt=fmt, scores=scores)
            remote.upload(local, uri)
    except OSError as exc:  # the local temp file: a full disk, say
        raise OutputError(f"cannot write {uri}: {exc.strerror or exc}") from exc
    return result
