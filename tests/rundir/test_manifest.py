"""manifest.json: the exact format on disk, old run dirs resuming, the stored input summary."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from batchrunner.errors import OutputError
from batchrunner.rundir import Manifest, StoredSummary, stored_summary
from batchrunner.rundir.manifest import fingerprint_diff, read_manifest, write_manifest
from tests.helpers import open_run

if TYPE_CHECKING:
    from pathlib import Path

FP: dict[str, object] = {"input": {"path": "in.jsonl", "size": 123}, "settings": {"n": (1, 2)}}
SUMMARY = StoredSummary(rows=6, extra_columns={"topic": "string"})

# What batchrunner wrote before the run dir became a package (json.dump, indent 2, sorted).
OLD_MANIFEST = """{
  "fingerprint": {
    "input": {
      "path": "in.jsonl",
      "size": 123
    },
    "settings": {
      "n": [
        1,
        2
      ]
    }
  },
  "format": 1,
  "input_summary": {
    "extra_columns": {
      "topic": "string"
    },
    "rows": 6
  },
  "total_rows": 6
}
"""


def test_a_new_run_dir_writes_the_format_byte_for_byte(tmp_path: Path) -> None:
    """The manifest a fresh run writes is exactly the one earlier versions wrote."""
    open_run(tmp_path / "run", 6, input_summary=SUMMARY, fingerprint=FP).close()
    assert (tmp_path / "run" / "manifest.json").read_text() == OLD_MANIFEST


def test_an_existing_run_dir_resumes_without_rewriting_its_manifest(tmp_path: Path) -> None:
    """An old manifest is read as is; the same fingerprint, size and summary change nothing."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(OLD_MANIFEST)
    before = (run / "manifest.json").stat().st_mtime_ns
    assert stored_summary(run, FP) == SUMMARY
    open_run(run, 6, input_summary=SUMMARY, fingerprint=FP).close()
    open_run(run, 6, fingerprint=FP).close()  # no summary given: the stored one stays
    assert (run / "manifest.json").read_text() == OLD_MANIFEST
    assert (run / "manifest.json").stat().st_mtime_ns == before


def test_a_new_size_or_summary_is_stored_and_unknown_keys_are_kept(tmp_path: Path) -> None:
    """Rewrites change only what changed; keys from a later version survive them."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({**json.loads(OLD_MANIFEST), "later": [1]}))
    newer = StoredSummary(rows=9, extra_columns={})
    open_run(run, total=4, input_summary=newer, fingerprint=FP).close()
    stored = json.loads((run / "manifest.json").read_text())
    assert stored["later"] == [1] and stored["format"] == 1
    assert (stored["total_rows"], stored["input_summary"]) == (4, newer.to_json())
    assert read_manifest(run) == Manifest(
        fingerprint=json.loads(OLD_MANIFEST)["fingerprint"],
        total_rows=4,
        input_summary=newer,
        unknown={"later": [1]},
    )


def test_stored_summary_only_for_the_same_input_and_settings(tmp_path: Path) -> None:
    """No dir, another fingerprint, a malformed summary or manifest: validate again."""
    run = tmp_path / "run"
    assert stored_summary(run, FP) is None
    run.mkdir()
    write_manifest(run, Manifest.new(FP, 6, SUMMARY))
    assert stored_summary(run, FP) == SUMMARY
    assert stored_summary(run, {**FP, "settings": {"n": [1, 3]}}) is None
    for bad in ({"rows": "6", "extra_columns": {}}, {"rows": 6}, [6]):
        obj = {**json.loads(OLD_MANIFEST), "input_summary": bad}
        (run / "manifest.json").write_text(json.dumps(obj))
        assert stored_summary(run, FP) is None
    (run / "manifest.json").write_text("{not json")
    assert stored_summary(run, FP) is None
    with pytest.raises(OutputError, match="unreadable"):
        read_manifest(run)


def test_a_manifest_without_a_size_reads_as_zero_rows(tmp_path: Path) -> None:
    """A missing or non-integer total_rows counts as 0 (the writer then stores the size)."""
    (tmp_path / "manifest.json").write_text('{"format": 1, "total_rows": true}')
    manifest = read_manifest(tmp_path)
    assert manifest is not None and manifest.total_rows == 0 and manifest.fingerprint == {}


def test_fingerprint_diff_compares_as_json() -> None:
    """Tuples equal lists (they went through JSON); nested keys get dotted paths."""
    assert fingerprint_diff({"a": [1, 2]}, {"a": (1, 2)}) == []
    assert fingerprint_diff({"a": {"b": {"c": "x"}}}, {"a": {"b": {}}}) == [
        "a.b.c: x -> (absent)",
        "a.b: (absent) -> {}",
    ]
