"""Disk full mid-run (a small tmpfs): a clear message, nothing corrupt, resume once freed."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
import pytest

from batchrunner.fakeapi import answer_for
from tests.fakeserver import FakeServer
from tests.helpers import TEST_KEY, run_cli, write_jsonl

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs (root only); skipped cleanly where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_stops_cleanly_and_resumes_after_space_is_freed(
    tmp_path: Path, small_disk: Path
) -> None:
    """ENOSPC: exit 3 naming the cause, no traceback, no *.tmp; a rerun completes every row."""
    rows = [{"id": f"r{i}", "prompt": f"[long] disk test {i}"} for i in range(600)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (2 * 1024 * 1024 + 512 * 1024))  # leave about 0.5 MiB
    out = small_disk / "run"
    with FakeServer(api_key=TEST_KEY) as server:
        args = ["run", str(src), "-o", str(out), "--base-url", server.base_url, "-q"]
        full = run_cli(args)
        assert full.exit_code == 3, full.stderr
        assert "No space left" in full.stderr
        assert "Traceback" not in full.stderr
        assert not list(out.rglob("*.tmp"))
        for part in (out / "parts").glob("*.parquet"):
            pq.read_metadata(part)  # every committed part is whole
        filler.unlink()
        resumed = run_cli(args)
        assert resumed.exit_code == 0, resumed.stderr
    results = pq.read_table(out / "results.parquet").to_pylist()
    assert [r["id"] for r in results] == [r["id"] for r in rows]
    for row, got in zip(rows, results, strict=True):
        assert got["text"] == answer_for(row["prompt"], max_tokens=1024)[0]
