"""files.py: the one atomic write, disk-error mapping and numbered-file listing, on real files."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from batchrunner.errors import DiskError
from batchrunner.rundir.files import (
    Discard,
    atomic_write,
    disk_errors,
    list_numbered,
    list_parts,
    list_segments,
    part_path,
    segment_path,
    to_disk_error,
)


def test_atomic_write_replaces_the_file_whole(tmp_path: Path) -> None:
    """After the block the target holds the new bytes, and no temp file is left."""
    target = tmp_path / "f.json"
    target.write_bytes(b"old")
    with atomic_write(target, run_dir=tmp_path) as fh:
        fh.write(b"new ")
        assert target.read_bytes() == b"old"  # nothing visible before the rename
        fh.write(b"content")
    assert target.read_bytes() == b"new content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


def test_atomic_write_leaves_the_old_file_on_error_or_discard(tmp_path: Path) -> None:
    """An exception in the block propagates; Discard is swallowed; both keep the old file."""
    target = tmp_path / "f.json"
    target.write_bytes(b"old")
    with pytest.raises(ValueError, match="boom"), atomic_write(target, run_dir=tmp_path) as fh:
        fh.write(b"half")
        raise ValueError("boom")
    with atomic_write(target, run_dir=tmp_path) as fh:
        fh.write(b"unwanted")
        raise Discard
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


def test_atomic_write_on_a_full_device_raises_disk_error(tmp_path: Path) -> None:
    """ENOSPC while writing becomes DiskError; the target is not created."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    (tmp_path / "f.json.tmp").symlink_to("/dev/full")
    full = pytest.raises(DiskError, match="No space left on device; free space")
    with full, atomic_write(tmp_path / "f.json", run_dir=tmp_path) as fh:
        fh.write(b"x" * 10_000)
    assert not (tmp_path / "f.json").exists()


def test_numbered_names_of_segments_and_parts(tmp_path: Path) -> None:
    """Segment and part N share N, six digits; each listing sees only its own kind."""
    assert segment_path(tmp_path, 7).name == "seg-000007.jsonl"
    assert part_path(tmp_path, 7).name == "part-000007.parquet"
    segment_path(tmp_path, 3).touch()
    part_path(tmp_path, 2).touch()
    assert list_segments(tmp_path) == [(3, segment_path(tmp_path, 3))]
    assert list_parts(tmp_path) == [(2, part_path(tmp_path, 2))]


def test_to_disk_error_maps_only_disk_refusals(tmp_path: Path) -> None:
    """EROFS/EACCES/ENOSPC/EDQUOT map to DiskError; other errors pass through."""
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
        mapped = to_disk_error(OSError(code, os.strerror(code)), tmp_path)
        assert isinstance(mapped, DiskError) and str(tmp_path) in str(mapped)
    assert "make it writable" in str(to_disk_error(OSError(errno.EROFS, "x"), tmp_path))
    assert to_disk_error(OSError(errno.ENOENT, "x"), tmp_path) is None
    with pytest.raises(FileNotFoundError), disk_errors(tmp_path):
        raise FileNotFoundError(errno.ENOENT, "gone")


def test_list_numbered_ignores_other_names(tmp_path: Path) -> None:
    """Only `prefix-N.suffix` names count, sorted numerically; a missing dir lists nothing."""
    for name in [
        "seg-000010.jsonl",
        "seg-2.jsonl",
        "seg-000003.jsonl.tmp",
        "x.jsonl",
        "seg-a.jsonl",
    ]:
        (tmp_path / name).touch()
    assert [n for n, _ in list_numbered(tmp_path, "seg", ".jsonl")] == [2, 10]
    assert list_numbered(tmp_path / "missing", "seg", ".jsonl") == []
