"""Rows given as Python objects, kept in the run directory as the run's input file.

The Python API takes an iterable of dicts, a pyarrow.Table or a DataFrame. A run reads
its rows from a file, and a resume must read the same rows again, so such objects are
written first: dicts as `DIR/input.jsonl` (JSON Lines, so their fields are read exactly
as a user's JSONL file would be), tables as `DIR/input.parquet` (their Arrow types kept).
pandas and polars are never imported here: a DataFrame is known by its type's module or
by the Arrow C stream interface (`__arrow_c_stream__`) and read through its own methods.
"""

from __future__ import annotations

import filecmp
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchrunner.errors import OutputError, SourceError
from batchrunner.rundir.files import Discard, atomic_write
from batchrunner.rundir.manifest import NAME as MANIFEST

if TYPE_CHECKING:
    from io import BufferedWriter
    from pathlib import Path

JSONL_NAME = "input.jsonl"
PARQUET_NAME = "input.parquet"
GIVEN_NAMES = frozenset({JSONL_NAME, PARQUET_NAME, f"{JSONL_NAME}.tmp", f"{PARQUET_NAME}.tmp"})


def write_given(rows: object, out: Path) -> Path:
    """Write `rows` as the input file of the run directory `out`; return its path.

    The same content already there is kept untouched (its mtime too, so a resume reads
    only its head and tail). Where a run has begun (its manifest exists) any other
    content is refused with OutputError and nothing is written: the file is that run's
    input, which its resume needs. SourceError for rows that cannot be written.
    """
    table = _as_table(rows)
    final = out / (JSONL_NAME if table is None else PARQUET_NAME)
    began = (out / MANIFEST).exists()
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(final, run_dir=out) as fh:
        if table is None:
            _write_jsonl(rows, fh)
        else:
            pq.write_table(table, fh)
        fh.flush()
        if final.exists() and filecmp.cmp(fh.name, final, shallow=False):
            raise Discard
        if began:
            raise OutputError(
                f"{out} is the run of other rows (its {final.name} holds different ones, or "
                "none): pass the same rows to resume it, or use another output directory"
            )
    return final


def _as_table(rows: object) -> pa.Table | None:
    """`rows` as an Arrow table when it is one or a DataFrame; None for other iterables."""
    module = type(rows).__module__.partition(".")[0]
    try:
        if module == "pandas" and hasattr(rows, "columns"):
            # Rows are rows: the index is pandas' bookkeeping, not a column to carry.
            return pa.Table.from_pandas(rows, preserve_index=False)
        if isinstance(rows, pa.Table):
            return rows
        if hasattr(rows, "__arrow_c_stream__"):  # polars, pyarrow readers, DuckDB, ...
            return pa.table(rows)
        if module == "polars" and hasattr(rows, "to_arrow"):
            return rows.to_arrow()
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise SourceError(
            f"the {type(rows).__name__} given", f"cannot become an Arrow table: {exc}"
        ) from None
    return None


def _write_jsonl(rows: object, fh: BufferedWriter) -> None:
    if isinstance(rows, str | bytes | Mapping) or not isinstance(rows, Iterable):
        raise SourceError(
            f"the {type(rows).__name__} given",
            "is not rows: give a path, an iterable of dicts, a pyarrow.Table or a DataFrame",
        )
    for n, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise SourceError(f"row {n}", f"is a {type(row).__name__}, not a dict")
        fh.write(_line(n, row))


def _line(n: int, row: Mapping[str, Any]) -> bytes:
    try:
        text = json.dumps(row, ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        # A lone surrogate: JSON's \uXXXX escape carries it, and validation judges it.
        return json.dumps(row, separators=(",", ":")).encode("ascii") + b"\n"
    except (TypeError, ValueError) as exc:
        raise SourceError(
            f"row {n}",
            f"{exc}: JSON cannot carry it; give a pyarrow.Table or a DataFrame to keep "
            "such values with their types",
        ) from None
