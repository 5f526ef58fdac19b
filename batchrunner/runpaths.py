"""INPUT and the run directory, as the flags and the job file give them.

INPUT may be a local path or a remote URI (`uris`: kept whole, never a Path); the run
directory is always local (`REMOTE_RUN_DIR` says why). Unsafe run directories (`-o -`,
the input itself, inside another run's directory) are problems here, before anything
is read or sent. Split from `config`, which lists every problem of a job at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchrunner.uris import as_source, is_uri

if TYPE_CHECKING:
    from batchrunner.uris import Source


def run_paths(
    job: Path | None,
    jsec: dict[str, Any],
    input_path: Source | str | None,
    output: Path | str | None,
    problems: list[str],
) -> tuple[Source | None, Path | None]:
    """INPUT and the run directory: the flags', else the job file's (relative to it).
    INPUT may be a URI (`uris`); the run directory may not (`REMOTE_RUN_DIR`)."""
    base = job.parent if job else Path.cwd()
    try:
        inp = input_of(base, jsec, input_path)
    except ValueError as exc:  # a scheme not read here
        problems.append(str(exc))
        return None, None
    given_out = output if output is not None else jsec.get("output")
    if isinstance(given_out, str) and is_uri(given_out):
        problems.append(REMOTE_RUN_DIR)
        return inp, None
    out = Path(output) if output is not None else None
    out = out or (relative(base, jsec["output"]) if "output" in jsec else None)
    if inp is None:
        problems.append("no input: give INPUT or set [job] input in the job file")
    problems += output_clashes(inp, out) or output_problems(out)
    return inp, out


def relative(base: Path, value: object) -> Path:
    """A job-file path, relative to the file; `..` folded so messages read cleanly."""
    return Path(os.path.normpath(base / str(value)))


def input_of(base: Path, jsec: dict[str, Any], given: Source | str | None) -> Source | None:
    """INPUT as given (a URI kept whole), else the job file's: a URI, or a path relative
    to the job file."""
    value = given if given is not None else jsec.get("input")
    if isinstance(value, str) and is_uri(value):
        return as_source(value)
    if given is not None:
        return Path(given) if isinstance(given, str) else given
    return relative(base, jsec["input"]) if "input" in jsec else None


REMOTE_RUN_DIR = (
    "the run directory must be a local directory, not a URI: resuming safely needs an "
    "atomic rename and fsync, which object stores do not offer; give a local -o DIR, "
    "then `batchrunner export DIR -o URI` to put the results there"
)


def output_clashes(inp: Source | None, out: Path | None) -> list[str]:
    """A run directory that would write over its own input or into another run's directory,
    or `-o -`, which names no directory (the run directory is never a stream)."""
    if out is None:
        return []
    if str(out) == "-":
        return ["-o - is not a run directory: the run writes a directory; give -o DIR"]
    # realpath, not Path.resolve: an input in a symlink loop is the reader's to report.
    where = Path(os.path.realpath(out))
    local = inp if isinstance(inp, Path) and str(inp) != "-" else None
    if local is not None and where == Path(os.path.realpath(local)):
        return [f"run directory {out} is the input itself; give another -o DIR"]
    # "manifest.json" is rundir.manifest.NAME, which this layer may not import.
    owner = next((p for p in where.parents if (p / "manifest.json").is_file()), None)
    if owner is not None:
        return [f"run directory {out} is inside the run directory {owner} of another run"]
    return []


def output_problems(out: Path | None) -> list[str]:
    """No run directory, or one at (or under) an existing file, which cannot be created."""
    if out is None:
        return ["no run directory: give -o DIR or set [job] output in the job file"]
    path: Path | None = out
    while path is not None and not path.is_dir():
        if path.exists() or path.is_symlink():
            what = "is" if path == out else f"is under {path}, which is"
            return [f"run directory {out} {what} not a directory"]
        path = path.parent if path.parent != path else None
    return []
