"""Whether the input changed under a run: a stat per file while reading, the full identity
(hashes too) when something looks wrong."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from batchrunner.inputs import input_identity
from batchrunner.runprep import input_changed, moved

if TYPE_CHECKING:
    from pathlib import Path


def test_a_file_that_shrank_grew_or_was_touched_has_moved(tmp_path: Path) -> None:
    """Size or mtime differing from the identity: moved names the file and the change."""
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "a"}\n{"prompt": "b"}\n')
    identity = input_identity(src)
    assert moved(src, identity) is None
    assert input_changed(src, identity, None) is None
    src.write_text('{"prompt": "a"}\n')
    assert moved(src, identity) == f"{src} was 32 bytes when the run began, 16 now"
    why = input_changed(src, identity, None)
    assert why is not None and why.startswith("the input changed under the run")
    src.write_text('{"prompt": "a"}\n{"prompt": "c"}\n')  # same size, new mtime and content
    os.utime(src, ns=(1, 1))
    assert moved(src, identity) == f"{src} was modified after the run began"
    src.unlink()
    assert "cannot be read any more" in str(moved(src, identity))


def test_an_unchanged_input_that_failed_to_read_is_reported_as_unreadable(
    tmp_path: Path,
) -> None:
    """A read error with the file as it was is not "changed": the message says so."""
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "a"}\n')
    why = input_changed(src, input_identity(src), "reading it failed: EIO")
    assert why is not None and why.startswith("the input could not be read during the run")


def test_a_parquet_directory_with_a_file_added_has_changed(tmp_path: Path) -> None:
    """Directory inputs: a new Parquet file is a change, named as such."""
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.table({"prompt": ["a", "b"]}), folder / "a.parquet")
    identity = input_identity(folder)
    assert moved(folder, identity) is None
    assert input_changed(folder, identity, None) is None
    pq.write_table(pa.table({"prompt": ["c"]}), folder / "b.parquet")
    why = input_changed(folder, identity, None)
    assert why is not None and "not the ones the run began with" in why
