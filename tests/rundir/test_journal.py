"""Journal segments: one write per outcome, torn tails dropped, disk errors translated."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from batchrunner.errors import DiskError, IntegrityError
from batchrunner.records import Result
from batchrunner.rundir.files import list_segments, segment_path
from batchrunner.rundir.journal import JournalWriter, encode_result
from batchrunner.rundir.lines import read_chunks
from tests.helpers import make_result


def test_encode_result_is_one_utf8_line_keyed_like_a_part() -> None:
    """A result becomes one newline-terminated UTF-8 JSON line with part column names."""
    line = encode_result(
        make_result(3, text="héllo\nworld", completed_at_us=7, extra={"q": [1, 2]}, attempts=2)
    )
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert "héllo" in line.decode("utf-8")
    obj = json.loads(line)
    assert obj["_index"] == 3 and obj["id"] == "r3" and obj["text"] == "héllo\nworld"
    assert obj["completed_at"] == 7 and json.loads(obj["_extra"]) == {"q": [1, 2]}
    assert "response_id" not in obj and "index" not in obj and "extra" not in obj


def test_encode_result_keeps_non_json_extras_readable() -> None:
    """Carried-through values JSON cannot hold (dates, bytes, decimals) become text."""
    import datetime as dt
    import decimal
    import uuid

    extra = {
        "when": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "raw": b"\x00\x01",
        "price": decimal.Decimal("1.50"),
        "tags": {"a"},
        "id": uuid.UUID(int=1),
    }
    obj = json.loads(json.loads(encode_result(make_result(0, extra=extra)))["_extra"])
    assert obj == {
        "when": "2024-01-02T03:04:05+00:00",
        "raw": "AAE=",
        "price": "1.50",
        "tags": ["a"],
        "id": "00000000-0000-0000-0000-000000000001",
    }


def test_writer_appends_lines_and_rotates_lazily(tmp_path: Path) -> None:
    """Segments are created on first append; rotate moves on to the next number."""
    w = JournalWriter(tmp_path, first_seq=5, durability="process", run_dir=tmp_path)
    assert w.rotate() is None and w.seq == 5 and list_segments(tmp_path) == []
    w.append(encode_result(make_result(0)))
    w.append(encode_result(make_result(1)))
    closed = w.rotate()
    assert closed == segment_path(tmp_path, 5) and w.seq == 6
    w.append(encode_result(make_result(2)))
    w.close()
    assert [n for n, _ in list_segments(tmp_path)] == [5, 6]
    assert closed.read_bytes() == encode_result(make_result(0)) + encode_result(make_result(1))


def test_read_chunks_drops_the_torn_tail_and_keeps_offsets(tmp_path: Path) -> None:
    """Only newline-terminated lines come back, in pieces whose offsets add up."""
    lines = [encode_result(make_result(i, text="x" * (i * 7))) for i in range(40)]
    seg = tmp_path / "seg-000001.jsonl"
    seg.write_bytes(b"".join(lines) + b'{"_index":99,"id":"torn')
    torn: list[str] = []
    chunks = list(read_chunks(seg, chunk_bytes=100, torn=torn))
    assert b"".join(c for _, c in chunks) == b"".join(lines)
    assert torn == [
        f"seg-000001.jsonl: dropped an incomplete last line (23 bytes at byte "
        f"{len(b''.join(lines))}), a write cut short by a crash; its row counts as pending"
    ]
    assert list(read_chunks(seg, chunk_bytes=1 << 20)) == [(0, b"".join(lines))]
    assert all(c.endswith(b"\n") for _, c in chunks)
    offset = 0
    for start, data in chunks:
        assert start == offset
        offset += len(data)


def test_read_chunks_of_a_missing_segment_raises_file_not_found(tmp_path: Path) -> None:
    """A segment that vanished (committed meanwhile) is reported as missing."""
    with pytest.raises(FileNotFoundError):
        list(read_chunks(tmp_path / "seg-000001.jsonl"))


def test_append_on_a_full_device_raises_disk_error(tmp_path: Path) -> None:
    """ENOSPC from write() becomes DiskError with advice to free space and resume."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    segment_path(tmp_path, 1).symlink_to("/dev/full")
    w = JournalWriter(tmp_path, first_seq=1, durability="process", run_dir=tmp_path)
    with pytest.raises(DiskError, match="No space left on device; free space and run the same"):
        w.append(encode_result(make_result(0)))
    w.close()


def test_encode_result_never_replaces_a_character_silently() -> None:
    """Split pairs are joined; lone surrogates stay exact in JSON text, else are said."""
    body = '{"content":[{"text":"a\ud800b"}]}'  # a streamed body as json.dumps leaves it
    line = encode_result(
        make_result(0, text="\ud83d\ude00 a\ud800b", response=body, extra={"k": "\udfff"})
    )
    obj = json.loads(line)
    assert obj["text"] == "\U0001f600 a\ufffdb"  # the emoji joined, the lone one replaced
    assert obj["error_message"] == "text: 1 unpaired UTF-16 surrogate(s) replaced by U+FFFD"
    assert json.loads(obj["response"]) == json.loads(body)  # escaped: the same JSON value
    assert json.loads(obj["_extra"]) == {"k": "\udfff"}
    joined = json.loads(encode_result(make_result(1, text="\ud83d\ude00", error_message="e")))
    assert joined["text"] == "\U0001f600" and joined["error_message"] == "e"


def test_encode_result_refuses_an_id_it_cannot_store_exactly() -> None:
    """An id with a lone surrogate is a loud IntegrityError, never an id with "?" in it."""
    with pytest.raises(IntegrityError, match="row 0: its id 'a\\\\udc80' holds an unpaired"):
        encode_result(Result(index=0, id="a\udc80", status="succeeded"))


def test_a_half_line_that_cannot_be_undone_ends_the_segment(tmp_path: Path) -> None:
    """When write() and its undo both fail, nothing more is appended after the half line."""
    real_write = os.write
    w = JournalWriter(tmp_path, first_seq=1, durability="process", run_dir=tmp_path)
    w.append(encode_result(make_result(0)))

    def half_then_full(fd: int, data: bytes) -> int:
        real_write(fd, data[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    def refuse(fd: int, size: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "write", half_then_full)
        mp.setattr(os, "ftruncate", refuse)
        with pytest.raises(DiskError):
            w.append(encode_result(make_result(1)))
    with pytest.raises(DiskError, match="could not be undone"):
        w.append(encode_result(make_result(2)))
    torn: list[str] = []
    chunks = list(read_chunks(segment_path(tmp_path, 1), torn=torn))
    assert [c for _, c in chunks] == [encode_result(make_result(0))]
    assert len(torn) == 1 and "10 bytes" in torn[0]
    w.rotate()
    w.append(encode_result(make_result(2)))  # the next segment starts clean
    w.close()
    assert segment_path(tmp_path, 2).read_bytes() == encode_result(make_result(2))


def test_durability_os_syncs_at_most_once_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With "os" the segment is fdatasync'ed when a second has passed, never with "process"."""
    calls: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    w = JournalWriter(tmp_path, first_seq=1, durability="os", run_dir=tmp_path)
    w.append(encode_result(make_result(0)))
    w.append(encode_result(make_result(1)))
    assert len(calls) <= 1  # both appends fall inside the same second
    before = len(calls)
    w.sync_if_due(10**9)
    assert len(calls) == before + 1
    w.sync_if_due(10**9)  # nothing new appended: no sync
    assert len(calls) == before + 1
    w.close()
    p = JournalWriter(tmp_path / "p", first_seq=1, durability="process", run_dir=tmp_path)
    (tmp_path / "p").mkdir()
    p.append(encode_result(make_result(0)))
    p.sync_if_due(10**9)
    p.close()
    assert len(calls) == before + 1
