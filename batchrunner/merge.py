"""`batchrunner merge`: the run dirs of `--shard I/N` runs joined into one results.parquet.

Before anything is written, every dir must be a finished shard dir (no pending row, its
results.parquet current, no run in it: each is held with a shared lock while merging), all
of one job (fingerprints equal apart from the shard; the input compared by content, not by
path or mtime, so shards may have run on other machines or from copies) and together
shards 0..N-1 of one N, each once. Then a streaming k-way merge by input position: one
bucket of positions (parts.BUCKET_ROWS) at a time, read from every shard's parts, each
position checked to come from exactly one shard. Writes DIR/results.parquet (atomically),
DIR/run.json when the shards have one, and DIR/manifest.json last, which marks DIR as a
merged dir for `status`, `report` and `export`. Reads shard dirs only; sends nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from batchrunner.errors import OutputError
from batchrunner.rundir.files import atomic_write, list_parts
from batchrunner.rundir.manifest import (
    Manifest,
    StoredSummary,
    fingerprint_diff,
    read_manifest,
    write_manifest,
)
from batchrunner.rundir.parts import BUCKET_ROWS, is_unreadable, read_part_info
from batchrunner.rundir.recorded import results_current
from batchrunner.rundir.results import bucket_entries, read_bucket, write_results
from batchrunner.rundir.status import read_status
from batchrunner.sharding import Shard, parse_shard

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from batchrunner.rundir.parts import PartInfo

# What DIR may hold when it has no manifest: the files of a merge that did not finish.
_OWN_FILES = {"results.parquet", "run.json", "manifest.json.tmp"}


@dataclass(frozen=True, slots=True)
class _ShardDir:
    """A finished shard dir, as checked."""

    path: Path
    shard: Shard
    manifest: Manifest
    succeeded: int
    errored: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MergeSummary:
    """What `merge` wrote: rows by outcome, and warnings (carried-through columns that
    fell back to JSON text)."""

    results: Path
    rows: int
    succeeded: int
    errored: int
    shards: int
    warnings: tuple[str, ...]


def merge(dirs: Sequence[Path], out: Path) -> MergeSummary:
    """Join the shard dirs `dirs` into `out`; OutputError (exit 2, nothing written) when
    they are not one job's complete set of finished shards, each once."""
    _check_out(out, dirs)
    with contextlib.ExitStack() as stack:
        shards = [_open_shard(path, stack) for path in dirs]
        _check_same_job(shards)
        _check_cover(shards)
        first = shards[0].manifest
        total = first.total_rows
        summary = first.input_summary
        columns = dict(summary.extra_columns) if summary is not None else {}
        succeeded = sum(s.succeeded for s in shards)
        errored = sum(s.errored for s in shards)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {out}: {exc.strerror or exc}") from None
        results = out / "results.parquet"
        warnings = write_results(
            results,
            buckets=range(-(-total // BUCKET_ROWS)),
            read=_Positions(shards, total).read,
            total_rows=total,
            extra_columns=columns,
            run_dir=out,
            expect=(succeeded, errored),
            # Unique already: every position comes once (checked), and validation found
            # the input's ids unique; checking again would hold every id in memory.
            unique_ids=False,
        )
        _write_run_json(shards, out)
        merged = {"shards": _sources(shards)}
        job = {k: v for k, v in _as_dict(first.fingerprint).items() if k != "shard"}
        input_summary = (
            None if summary is None else StoredSummary(rows=total, extra_columns=columns)
        )
        write_manifest(
            out,
            Manifest(fingerprint=job, total_rows=total, input_summary=input_summary, merged=merged),
        )
    return MergeSummary(
        results=results,
        rows=succeeded + errored,
        succeeded=succeeded,
        errored=errored,
        shards=len(shards),
        warnings=tuple(warnings),
    )


def _check_out(out: Path, dirs: Sequence[Path]) -> None:
    """DIR is new, empty, an earlier merge's (replaced) or what a stopped merge left."""
    if any(out.resolve() == d.resolve() for d in dirs):
        raise OutputError(f"-o {out} is one of the shard dirs; write the merge elsewhere")
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError(f"-o {out} exists and is not a directory")
    manifest = read_manifest(out)
    if manifest is not None:
        if manifest.merged is None:
            raise OutputError(f"-o {out} is a run directory; write the merge elsewhere")
        return
    names = sorted(p.name for p in out.iterdir() if p.name not in _OWN_FILES)
    names = [n for n in names if not n.endswith(".tmp") and not n.startswith(".")]
    if names:
        raise OutputError(f"-o {out} holds other files ({', '.join(names[:3])}); choose a new dir")


def _hold(path: Path, stack: contextlib.ExitStack) -> bool:
    """Take a shared lock on a run dir's lock file for the merge; False when a run holds it.

    A run takes it exclusively, so while the merge reads no run can start in the dir.
    """
    try:
        fd = os.open(path / "lock", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    stack.callback(os.close, fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _open_shard(path: Path, stack: contextlib.ExitStack) -> _ShardDir:
    manifest = read_manifest(path) if path.is_dir() else None
    if manifest is None:
        raise OutputError(f"{path} is not a batchrunner run directory (no manifest.json)")
    if manifest.merged is not None:
        raise OutputError(f"{path} is a merge's output, not a shard dir")
    label = _as_dict(manifest.fingerprint).get("shard")
    if not isinstance(label, str):
        raise OutputError(f"{path} was not run with --shard: there is nothing to merge it with")
    try:
        shard = parse_shard(label)
    except ValueError as exc:
        raise OutputError(f"{path}: {exc}") from None
    if not _hold(path, stack):
        raise OutputError(f"{path}: a run is going in it; merge once it has finished")
    st = read_status(path)
    if st.pending or not results_current(path):
        left = f"{st.pending} of {st.total} rows pending" if st.pending else "results not written"
        raise OutputError(
            f"shard {shard} in {path} is not finished ({left}); run its command again to "
            "finish it, then merge"
        )
    return _ShardDir(path, shard, manifest, st.succeeded, st.errored)


def _as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _job(fingerprint: object) -> dict[str, Any]:
    """A fingerprint as merge compares shards: no shard, the input by content alone."""
    job = {k: v for k, v in _as_dict(fingerprint).items() if k != "shard"}
    source = {k: v for k, v in _as_dict(job.get("input")).items() if k not in ("path", "mtime_ns")}
    if isinstance(source.get("files"), list):
        source["files"] = [
            {k: v for k, v in _as_dict(f).items() if k != "mtime_ns"} for f in source["files"]
        ]
    job["input"] = source
    return job


def _check_same_job(shards: list[_ShardDir]) -> None:
    first = shards[0]
    for other in shards[1:]:
        diff = fingerprint_diff(_job(first.manifest.fingerprint), _job(other.manifest.fingerprint))
        if other.shard.count != first.shard.count:
            diff.insert(0, f"shard: {first.shard} -> {other.shard} (another N)")
        if diff:
            raise OutputError(
                f"{other.path} is not a shard of the same job as {first.path} "
                f"({'; '.join(diff[:5])})"
            )


def _check_cover(shards: list[_ShardDir]) -> None:
    """Shards 0..N-1 each once, and their rows add up to the input's."""
    seen: dict[int, list[Path]] = defaultdict(list)
    for s in shards:
        seen[s.shard.index].append(s.path)
    n = shards[0].shard.count
    problems = [
        f"shard {i}/{n} is given {len(paths)} times ({', '.join(map(str, paths))})"
        for i, paths in sorted(seen.items())
        if len(paths) > 1
    ]
    missing = [f"{i}/{n}" for i in range(n) if i not in seen]
    if missing:
        problems.append(f"shard {', '.join(missing)} missing (merge needs all {n} shard dirs)")
    rows, total = sum(s.succeeded + s.errored for s in shards), shards[0].manifest.total_rows
    if not problems and rows != total:
        problems.append(f"the shard dirs hold {rows} rows, the input has {total}")
    if problems:
        raise OutputError("cannot merge: " + "; ".join(problems))


class _Positions:
    """The k-way merge: a bucket's rows from every shard, each position exactly once."""

    def __init__(self, shards: list[_ShardDir], total: int) -> None:
        self.shards = shards
        self.total = total
        self.buckets = [bucket_entries(list(_part_infos(s.path))) for s in shards]

    def read(self, bucket: int) -> pa.Table:
        pieces = [
            (k, read_bucket(b[bucket], bucket)) for k, b in enumerate(self.buckets) if bucket in b
        ]
        lo = bucket * BUCKET_ROWS
        hi = min(lo + BUCKET_ROWS, self.total)
        if not pieces:
            raise OutputError(_coverage(lo, hi, [], self.shards))
        table = pa.concat_tables([t for _, t in pieces])
        index = table.column("_index")
        bounds = pc.min_max(index).as_py()
        if (
            table.num_rows != hi - lo
            or (bounds["min"], bounds["max"]) != (lo, hi - 1)
            or pc.count_distinct(index).as_py() != hi - lo
        ):
            raise OutputError(_coverage(lo, hi, pieces, self.shards))
        return table.take(pc.sort_indices(index))


def _part_infos(path: Path) -> Iterator[PartInfo]:
    for seq, part in list_parts(path / "parts"):
        try:
            yield read_part_info(seq, part)
        except Exception as exc:
            if not is_unreadable(exc):
                raise
            raise OutputError(
                f"{part} is unreadable; run the shard's command again (it sends those rows "
                "again), then merge"
            ) from exc


def _coverage(lo: int, hi: int, pieces: list[tuple[int, pa.Table]], shards: list[_ShardDir]) -> str:
    """Which positions in [lo, hi) no shard has, or more than one has, in words."""
    owners: dict[int, list[tuple[str, Path]]] = defaultdict(list)
    for k, table in pieces:
        ids = table.column("id").to_pylist()
        for index, row_id in zip(table.column("_index").to_pylist(), ids, strict=True):
            owners[index].append((row_id, shards[k].path))
    missing = [i for i in range(lo, hi) if i not in owners]
    doubled = [i for i in range(lo, hi) if len(owners.get(i, ())) > 1]
    said = []
    if missing:
        shown = ", ".join(map(str, missing[:5]))
        said.append(
            f"the input rows at positions {shown} ({len(missing)} here) are in no shard dir"
        )
    if doubled:
        row_id, _ = owners[doubled[0]][0]
        dirs = ", ".join(str(path) for _, path in owners[doubled[0]])
        said.append(
            f"{len(doubled)} rows are in more than one shard dir (position {doubled[0]}, "
            f"id {row_id!r}: {dirs})"
        )
    return "cannot merge: " + "; ".join(said or ["the shard dirs hold rows outside the input"])


def _sources(shards: list[_ShardDir]) -> list[dict[str, str]]:
    return [{"dir": str(s.path.resolve()), "shard": str(s.shard)} for s in shards]


def _write_run_json(shards: list[_ShardDir], out: Path) -> None:
    """DIR/run.json when every shard has one: the first's, with every shard's invocations."""
    records = []
    for s in shards:
        try:
            record = json.loads((s.path / "run.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            (out / "run.json").unlink(missing_ok=True)  # an earlier merge's, if any
            return
        records.append(record if isinstance(record, dict) else {})
    merged = dict(records[0])
    if all(isinstance(r.get("invocations"), list) for r in records):
        merged["invocations"] = [
            {**_as_dict(inv), "shard": str(s.shard)}
            for s, r in zip(shards, records, strict=True)
            for inv in r["invocations"]
        ]
    merged["merged_from"] = _sources(shards)
    with atomic_write(out / "run.json", run_dir=out) as fh:
        fh.write((json.dumps(merged, indent=2, default=str) + "\n").encode())
