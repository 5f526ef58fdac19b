"""The input read from standard input (`run -`, `run /dev/stdin`), kept in the run directory.

A resume must read the rows the run began with, and a pipe can be read only once: so the
stream is copied, zstd-compressed, into `DIR/stdin.jsonl.zst` (`stdin.csv.zst`,
`stdin.tsv.zst` with `--format`) as it is read (1 MiB at a
time, whatever its size), and the run reads that copy, a JSONL input like any other. A
resume needs no stdin: given none (a terminal, or `< /dev/null`) it reads the copy; given
the same bytes again it keeps the copy; given other bytes where the run has begun it is
refused (OutputError) and the copy is left alone, as for rows the Python API was given.
"""

from __future__ import annotations

import filecmp
from typing import IO, TYPE_CHECKING

import zstandard

from batchrunner.errors import OutputError, SourceError
from batchrunner.rundir.files import Discard, atomic_write
from batchrunner.rundir.manifest import NAME as MANIFEST

if TYPE_CHECKING:
    from pathlib import Path

    from batchrunner.uris import Source

STDIN_NAME = "stdin.jsonl.zst"
_STREAMED = ("jsonl", "csv", "tsv")  # Parquet needs to seek: it cannot come from a pipe
STDIN_NAMES = frozenset(f"stdin.{kind}.zst{tmp}" for kind in _STREAMED for tmp in ("", ".tmp"))
_CHUNK = 1 << 20


def is_stdin(path: Source) -> bool:
    """Whether INPUT names standard input."""
    return str(path) in ("-", "/dev/stdin")


def spool_stdin(stream: IO[bytes], out: Path, fmt: str | None = None) -> Path:
    """Copy `stream` into the run directory `out` (see the module doc); the copy's path.

    SourceError when there is no copy yet and stdin is a terminal (nothing piped in);
    OutputError when `out` holds a run begun from another input, or from other stdin rows.
    """
    if fmt not in (None, *_STREAMED):
        raise SourceError("-", f"--format {fmt} cannot be read from stdin; give a file")
    final = out / f"stdin.{fmt or 'jsonl'}.zst"
    kept = final.is_file()
    began = (out / MANIFEST).exists()
    if began and not kept:
        raise OutputError(
            f"{out} holds a run of another input, not of stdin: use a new output directory"
        )
    if stream.isatty():
        if kept:
            return final
        raise SourceError("-", "stdin is a terminal: pipe the rows in (cat x.jsonl | ...)")
    first = stream.read(_CHUNK)
    if kept and not first:
        return final  # a resume given no stdin reads the stored copy
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(final, run_dir=out) as fh:
        with zstandard.ZstdCompressor(level=3).stream_writer(fh, closefd=False) as packed:
            chunk = first
            while chunk:
                packed.write(chunk)
                chunk = stream.read(_CHUNK)
        fh.flush()
        # Equal input gives equal zstd bytes (same level, same library): compare as stored.
        if kept and filecmp.cmp(fh.name, final, shallow=False):
            raise Discard
        if began:
            raise OutputError(
                f"{out} is the run of other stdin rows (kept in {final.name}): pipe the same "
                "rows, or none, to resume it, or use another output directory"
            )
    return final
