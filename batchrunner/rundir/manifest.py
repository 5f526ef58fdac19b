"""manifest.json: the one place that knows its keys, reads it and writes it.

The file is `{"format": 1, "fingerprint": ..., "total_rows": N, "input_summary": {...}}`
(JSON, indented, keys sorted). `fingerprint` says which input and settings the run dir
belongs to (and, for `--shard I/N`, which shard); `input_summary` is what validating that
input found, so a resume of the same input and settings can skip the pass. A directory
written by `batchrunner merge` also has `merged` (the shard dirs it joined) and takes no
runs. Keys this version does not know are kept as they are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from batchrunner.errors import OutputError
from batchrunner.rundir.files import atomic_write

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

FORMAT = 1
NAME = "manifest.json"
_KNOWN = {"format", "fingerprint", "total_rows", "input_summary", "merged"}


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredSummary:
    """What validation found: the row count and each carried-through column's Arrow type;
    for a shard, also how many of the rows are the shard's own."""

    rows: int
    extra_columns: Mapping[str, str]
    shard_rows: int | None = None

    def to_json(self) -> dict[str, object]:
        obj: dict[str, object] = {"rows": self.rows, "extra_columns": dict(self.extra_columns)}
        if self.shard_rows is not None:
            obj["shard_rows"] = self.shard_rows
        return obj

    @classmethod
    def from_json(cls, value: object) -> StoredSummary | None:
        """The summary held in `value`, or None when it is not one (then validate again)."""
        if not isinstance(value, dict):
            return None
        rows, columns = value.get("rows"), value.get("extra_columns")
        shard_rows = value.get("shard_rows")
        if not isinstance(rows, int) or not isinstance(columns, dict):
            return None
        if shard_rows is not None and not isinstance(shard_rows, int):
            return None
        return cls(rows=rows, extra_columns=columns, shard_rows=shard_rows)


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """The run dir's manifest. `fingerprint` is held as JSON holds it (tuples are lists)."""

    fingerprint: object
    total_rows: int
    input_summary: StoredSummary | None = None
    merged: Mapping[str, object] | None = None  # set by `batchrunner merge`
    unknown: Mapping[str, object] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """The rows this run dir is for: a shard's own rows, else `total_rows`.

        A shard dir's `total_rows` counts the whole input, since outcomes are keyed by
        input position; the positions of other shards are neither done nor pending.
        """
        summary = self.input_summary
        if summary is None or summary.shard_rows is None:
            return self.total_rows
        return summary.shard_rows

    @classmethod
    def new(
        cls, fingerprint: Mapping[str, object], total_rows: int, summary: StoredSummary | None
    ) -> Manifest:
        return cls(fingerprint=_as_json(fingerprint), total_rows=total_rows, input_summary=summary)

    def updated(self, *, total_rows: int, summary: StoredSummary | None) -> Manifest:
        """This manifest with a new input size and, when given, a new input summary."""
        return replace(self, total_rows=total_rows, input_summary=summary or self.input_summary)

    def differences(self, fingerprint: Mapping[str, object]) -> list[str]:
        """`key.path: stored -> given` for every fingerprint leaf that differs."""
        return fingerprint_diff(self.fingerprint, fingerprint)

    def encode(self) -> bytes:
        obj: dict[str, Any] = {
            **self.unknown,
            "format": FORMAT,
            "fingerprint": self.fingerprint,
            "total_rows": self.total_rows,
        }
        if self.input_summary is not None:
            obj["input_summary"] = self.input_summary.to_json()
        if self.merged is not None:
            obj["merged"] = dict(self.merged)
        return (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()

    @classmethod
    def decode(cls, obj: dict[str, Any]) -> Manifest:
        total = obj.get("total_rows")
        merged = obj.get("merged")
        return cls(
            fingerprint=obj.get("fingerprint", {}),
            total_rows=total if isinstance(total, int) and not isinstance(total, bool) else 0,
            input_summary=StoredSummary.from_json(obj.get("input_summary")),
            merged=merged if isinstance(merged, dict) else None,
            unknown={k: v for k, v in obj.items() if k not in _KNOWN},
        )


def read_manifest(run_dir: Path) -> Manifest | None:
    """The manifest of `run_dir`, or None when there is none yet (OutputError if unreadable)."""
    path = run_dir / NAME
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise OutputError(f"{path} is unreadable: {exc}") from exc
    if not isinstance(obj, dict):
        raise OutputError(f"{path} is not a batchrunner manifest")
    return Manifest.decode(obj)


def write_manifest(run_dir: Path, manifest: Manifest) -> None:
    """Replace manifest.json atomically (tmp, fsync, rename, dir fsync)."""
    with atomic_write(run_dir / NAME, run_dir=run_dir) as fh:
        fh.write(manifest.encode())


def stored_summary(run_dir: Path, fingerprint: Mapping[str, object]) -> StoredSummary | None:
    """The input summary a previous run stored, when input and settings are unchanged.

    None when there is no run dir, no summary, a different fingerprint or an unreadable
    manifest (RunDir.open reports that one).
    """
    try:
        manifest = read_manifest(run_dir)
    except OutputError:
        return None
    if manifest is None or manifest.differences(fingerprint):
        return None
    return manifest.input_summary


def _as_json(value: object) -> Any:
    """`value` as it comes back from manifest.json (tuples as lists, odd values as str)."""
    return json.loads(json.dumps(value, default=str))


_ABSENT = object()


def _flatten(value: object, prefix: str, out: dict[str, object]) -> dict[str, object]:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value
    return out


def _show(value: object) -> str:
    if value is _ABSENT:
        return "(absent)"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def fingerprint_diff(stored: object, given: object) -> list[str]:
    """`key.path: old -> new` for every leaf that differs between two fingerprints."""
    # Compare as JSON sees them: the stored side went through JSON, tuples became lists.
    old = _flatten(_as_json(stored), "", {})
    new = _flatten(_as_json(given), "", {})
    diffs = []
    for key in [*old, *(k for k in new if k not in old)]:
        a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if json.dumps(a, sort_keys=True, default=repr) != json.dumps(
            b, sort_keys=True, default=repr
        ):
            diffs.append(f"{key or '(root)'}: {_show(a)} -> {_show(b)}")
    return diffs
