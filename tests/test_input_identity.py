"""The input's identity across a resume: a `touch` is not a change, new bytes are.

`input_identity(path, previous)` returns `previous` itself when the content is the one
the run began with, so the run fingerprint compares equal; anything else is refused.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchrunner.inputs import input_identity, readers
from tests.helpers import run_cli, write_jsonl

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from tests.fakeserver import FakeServer


def _stored(identity: dict[str, object]) -> Any:
    """The identity as a run dir's manifest holds it (JSON round trip)."""
    return json.loads(json.dumps(identity))


def _touch(path: Path, seconds: int = 7) -> None:
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + seconds * 1_000_000_000))


def test_a_touched_file_keeps_the_stored_identity(tmp_path: Path) -> None:
    """Same bytes, new mtime: the stored identity comes back unchanged."""
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"p{i}"} for i in range(5)])
    stored = _stored(input_identity(path))
    assert isinstance(stored["content_sha256"], str)
    _touch(path)
    assert input_identity(path, stored) == stored
    assert input_identity(path)["mtime_ns"] != stored["mtime_ns"]


def test_new_bytes_of_the_same_size_make_a_new_identity(tmp_path: Path) -> None:
    """Same size, other content (and so a new mtime): a new identity, its own content hash."""
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"p{i}"} for i in range(5)])
    stored = _stored(input_identity(path))
    path.write_bytes(path.read_bytes().replace(b"p3", b"q3"))
    _touch(path)
    fresh = input_identity(path, stored)
    assert fresh != stored
    assert fresh["size"] == stored["size"]
    assert fresh["content_sha256"] != stored["content_sha256"]


def test_a_change_in_the_middle_of_a_large_file_is_found_after_touch(tmp_path: Path) -> None:
    """Head and tail alone would miss it: with the mtime moved, the whole content decides."""
    path = tmp_path / "big.jsonl"
    blob = bytearray(b"x" * (5 << 20))
    path.write_bytes(blob)
    stored = _stored(input_identity(path))
    blob[len(blob) // 2] = ord("y")
    path.write_bytes(blob)
    _touch(path)
    fresh = input_identity(path, stored)
    assert fresh["sha256"] == stored["sha256"]  # the 2 MiB of head and tail are the same
    assert fresh["content_sha256"] != stored["content_sha256"]


def test_an_unchanged_file_is_not_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Size and mtime unchanged: a resume reads head and tail only, never the whole file."""
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p"}])
    stored = _stored(input_identity(path))

    def whole_read(path: Path) -> str:
        raise AssertionError(f"{path} was hashed whole")

    monkeypatch.setattr(readers, "_content_hash", whole_read)
    assert input_identity(path, stored) == stored


def test_an_identity_without_a_content_hash_cannot_vouch_for_a_touch(tmp_path: Path) -> None:
    """A run dir from before content hashes: unchanged is fine, touched is a new identity."""
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p"}])
    stored = _stored(input_identity(path))
    del stored["content_sha256"]
    assert input_identity(path, stored) == stored
    _touch(path)
    assert input_identity(path, stored) != stored


def test_another_path_with_the_same_bytes_is_another_input(tmp_path: Path) -> None:
    """The path is part of the identity, as before."""
    first = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "p"}])
    second = tmp_path / "b.jsonl"
    second.write_bytes(first.read_bytes())
    stored = _stored(input_identity(first))
    assert input_identity(second, stored)["path"] == str(second.resolve())


def test_a_directory_of_parquet_files(tmp_path: Path) -> None:
    """Per file: a touched part keeps the identity; a rewritten one, or a new one, does not."""
    folder = tmp_path / "parts"
    folder.mkdir()
    for name in ("a", "b"):
        pq.write_table(pa.table({"prompt": [f"{name}1", f"{name}2"]}), folder / f"{name}.parquet")
    stored = _stored(input_identity(folder))
    _touch(folder / "b.parquet")
    assert input_identity(folder, stored) == stored
    pq.write_table(pa.table({"prompt": ["b1", "b3"]}), folder / "b.parquet")
    assert input_identity(folder, stored) != stored
    stored = _stored(input_identity(folder))
    pq.write_table(pa.table({"prompt": ["c"]}), folder / "c.parquet")
    assert input_identity(folder, stored) != stored


def test_touch_between_a_partial_run_and_its_resume(tmp_path: Path, fake_api: FakeServer) -> None:
    """A touched input resumes without re-sending; new bytes of the same size are refused."""
    rows = [{"id": f"r{i}", "prompt": f"touch me {i}"} for i in range(12)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "run"
    args = ["run", str(src), "-o", str(out), "--base-url", fake_api.base_url, "-q"]
    assert run_cli([*args, "--limit", "5"]).exit_code == 0
    assert len(fake_api.log()) == 5
    _touch(src)
    resumed = run_cli(args)
    assert resumed.exit_code == 0, resumed.stderr
    sent = sorted(entry["prompt"] for entry in fake_api.log())
    assert sent == sorted(row["prompt"] for row in rows), "recorded rows must not be re-sent"
    assert pq.read_table(out / "results.parquet").column("id").to_pylist() == [
        row["id"] for row in rows
    ]
    src.write_bytes(src.read_bytes().replace(b"touch me 7", b"touch me 8"))
    _touch(src, 20)
    changed = run_cli(args)
    assert changed.exit_code == 2
    assert "content_sha256" in changed.stderr and "Traceback" not in changed.stderr
    assert len(fake_api.log()) == 12
