"""The input's identity around a run: what a resume may reuse, and whether it changed under us.

A run fingerprints its input (size, mtime, head and tail hashes) before the first request;
a `touch` alone keeps the stored identity (inputs.input_identity decides). An input that changes
while the run reads it (truncated, rewritten, appended to) must stop the run, since rows
read from then on may not be the rows that were validated. `prepare` settles all of it
before the run directory opens.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import anyio

from batchrunner import remote
from batchrunner.errors import ConfigError, OutputError, SourceError
from batchrunner.evaluate.settings import check_columns
from batchrunner.inputs import input_identity, validate
from batchrunner.process import fit_concurrency
from batchrunner.retrying import RetryPolicy
from batchrunner.rundir import RunDir
from batchrunner.rundir.manifest import StoredSummary, read_manifest, stored_summary
from batchrunner.uris import Uri

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from batchrunner.spec import JobSpec
    from batchrunner.uris import Source

Identity = dict[str, object]


@dataclass(frozen=True, slots=True)
class Opened:
    """A job prepared (`prepare`) and its run directory opened, for either engine."""

    spec: JobSpec
    fingerprint: dict[str, object]
    known: StoredSummary
    stored: Identity  # the input's identity as the run directory keeps it
    identity: Identity  # ... and as it is now
    policy: RetryPolicy
    total: int  # the rows this run is to record (`--limit` applied)
    rundir: RunDir


async def open_run(
    spec: JobSpec, warn: Callable[[str], None], policy: RetryPolicy | None = None
) -> Opened:
    """`prepare`, then the retry policy (the spec's, unless one is given), the row total
    and the run directory opened (locked) for them. Raises before anything is sent."""
    spec, fingerprint, known, stored, identity = await prepare(spec, warn)
    limits = spec.limits
    policy = policy or RetryPolicy(
        max_attempts=limits.max_attempts,
        max_elapsed_s=limits.max_elapsed_s,
        max_wait_s=limits.max_wait_s,
    )
    total = min(known.rows, spec.limit) if spec.limit else known.rows
    rundir = RunDir.open(
        spec.output,
        fingerprint=fingerprint,
        total_rows=total,
        retry_errors=spec.retry_errors,
        durability=spec.durability,
        input_summary=known,
    )
    return Opened(spec, fingerprint, known, stored, identity, policy, total, rundir)


async def prepare(
    spec: JobSpec, warn: Callable[[str], None]
) -> tuple[JobSpec, dict[str, object], StoredSummary, Identity, Identity]:
    """Everything settled before the run directory opens: the spec with a concurrency the
    open-file limit allows, the run fingerprint, the input summary (validated now, or as a
    resume of the same input and settings stored it), and the input's identity as stored
    and as it is now (see `stored_identity`). Raises before anything is sent."""
    concurrency, lowered = fit_concurrency(spec.limits.concurrency)
    if lowered is not None:
        spec = replace(spec, limits=replace(spec.limits, concurrency=concurrency))
        warn(lowered)
    stored, identity = await anyio.to_thread.run_sync(stored_identity, spec.input, spec.output)
    fingerprint: dict[str, object] = {"input": stored, "settings": spec.request_settings()}
    if spec.shard is not None:
        fingerprint["shard"] = str(spec.shard)
    # A resume of the same input and settings was validated when the run began: skip the
    # pass (a few seconds per million rows) and start sending at once.
    # With image files there is no skipping: the pass hashes them, and a digest that
    # differs from the stored one (an image replaced) makes another fingerprint.
    known = stored_summary(spec.output, fingerprint)
    if known is None:
        summary, images = await anyio.to_thread.run_sync(validated, spec)
        if images is not None:
            fingerprint["image_files"] = images
        known = summary
    if spec.eval is not None and (missing := check_columns(spec.eval, known.extra_columns)):
        raise ConfigError("; ".join(missing))  # scores would be impossible: send nothing
    return spec, fingerprint, known, stored, identity


def validated(spec: JobSpec) -> tuple[StoredSummary, str | None]:
    """The validation pass over the whole input (a shard's own rows counted), as the
    manifest keeps it for resumes, and the digest of the image files the rows name (None
    when they name none). Blocking: run it in a thread."""
    summary = validate(spec.input, spec.source_options(), shard=spec.shard)
    stored = StoredSummary(
        rows=summary.rows, extra_columns=summary.extra_columns, shard_rows=summary.shard_rows
    )
    return stored, summary.images


def stored_identity(path: Source, out: Path) -> tuple[dict[str, object], dict[str, object]]:
    """The input's identity for the fingerprint, and the one to watch it by during the run.

    For the fingerprint, the stored identity when the content is what the run began with
    (inputs.input_identity decides: a `touch` alone does not make it another input). The
    watch compares sizes and mtimes, so after a `touch` it needs the file's identity now.
    """
    try:
        manifest = read_manifest(out)
    except (OutputError, OSError):
        manifest = None  # RunDir.open reports it
    stored = manifest.fingerprint if manifest is not None else None
    identity = input_identity(path, stored.get("input") if isinstance(stored, dict) else None)
    if moved(path, identity) is None:
        return identity, identity
    return identity, input_identity(path)


def moved(path: Source, identity: dict[str, Any]) -> str | None:
    """How the input differs from `identity` (`inputs.input_identity`) by size and mtime
    alone: a stat per file, cheap enough to ask while the run reads. None if it does not.
    A remote object: by size, ETag and mtime (`remote.moved`, HEAD requests)."""
    if isinstance(path, Uri):
        return remote.moved(path, identity)
    files = identity.get("files")
    entries = files if isinstance(files, list) else [{"name": None, **identity}]
    for entry in entries:
        file = path if entry.get("name") is None else path / str(entry["name"])
        try:
            stat = file.stat()
        except OSError as exc:
            return f"{file} cannot be read any more ({exc.strerror or exc})"
        if stat.st_size != entry.get("size"):
            return f"{file} was {entry.get('size')} bytes when the run began, {stat.st_size} now"
        if stat.st_mtime_ns != entry.get("mtime_ns"):
            return f"{file} was modified after the run began"
    return None


def changed(before: dict[str, Any], after: dict[str, Any], path: Source) -> str | None:
    """How two full identities differ, in words; None when they are the same."""
    if before == after:
        return None
    if before.get("files") != after.get("files") and "files" in before:
        names = [f.get("name") for f in before["files"]]
        now = [f.get("name") for f in after.get("files", [])]
        if names != now:
            return f"the Parquet files in {path} are not the ones the run began with"
    return moved(path, before) or f"{path} has other content than when the run began"


def input_changed(path: Source, identity: dict[str, Any], how: str | None) -> str | None:
    """Why the run must stop because its input changed, or None when it did not.

    `how`: what the run itself noticed (a read error, the input ending early), if anything;
    the full identity (hashes too) is compared again here. Blocking: run it in a thread.
    """
    try:
        now: dict[str, Any] | None = input_identity(path)
    except SourceError:
        now = None  # gone or unreadable: `moved` says which
    what = changed(identity, now, path) if now is not None else moved(path, identity)
    if what is None:
        if how is None:
            return None
        return f"the input could not be read during the run ({how}); run the same command again"
    detail = "; ".join(x for x in (what, how) if x)
    return (
        f"the input changed under the run ({detail}); restore it and run the same command "
        "again to resume, or use a new run directory for the new input"
    )
