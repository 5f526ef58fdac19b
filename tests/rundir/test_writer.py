"""RunDir: record/seal/commit, recovery after crashes, lock, fingerprint, disk errors."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
import pytest

from batchrunner.errors import DiskError, IntegrityError, OutputError
from batchrunner.rundir.journal import encode_result
from batchrunner.rundir.parts import PART_SCHEMA
from tests.helpers import commit_all, make_result, open_run

if TYPE_CHECKING:
    from batchrunner.records import Result
    from batchrunner.rundir import RunDir


def _ids(path: Path) -> list[str]:
    ids: list[str] = pq.read_table(path, columns=["id"]).column("id").to_pylist()
    return ids


def _snapshot(path: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(path)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def _write_segment(run: Path, seq: int, results: list[Result], tail: bytes = b"") -> None:
    (run / "journal" / f"seg-{seq:06d}.jsonl").write_bytes(
        b"".join(encode_result(r) for r in results) + tail
    )


def test_record_seal_commit_finalize_round_trip(tmp_path: Path) -> None:
    """Recorded outcomes become parts, then results.parquet in input order."""
    run = tmp_path / "run"
    with open_run(run, total=6) as rd:
        for i in (2, 0, 1):
            rd.record(make_result(i, text=f"t{i}"))
        sealed = rd.seal()
        assert sealed is not None
        assert [json.loads(line)["_index"] for line in sealed.data.splitlines()] == [2, 0, 1]
        assert rd.seal() is None
        rd.commit(sealed)
        assert not sealed.segment.exists() and (run / "parts" / "part-000001.parquet").exists()
        rd.record(make_result(3, "errored", error_type="timeout"))
        assert rd.done.succeeded == 3 and rd.done.errored == 1 and rd.done.pending == 2
        assert rd.done.is_done(3) and not rd.done.is_done(4)
        out = rd.finalize({})
    assert _ids(out) == ["r0", "r1", "r2", "r3"]
    assert sorted(p.name for p in run.iterdir()) == [
        "journal",
        "lock",
        "manifest.json",
        "parts",
        "results.parquet",
    ]
    assert list((run / "journal").iterdir()) == []


def test_should_seal_on_rows_or_age(tmp_path: Path) -> None:
    """A seal is due after flush_rows outcomes, or once the oldest waited flush_s."""
    with open_run(tmp_path / "run", flush_rows=3, flush_s=5.0) as rd:
        now = time.monotonic()
        assert not rd.should_seal(now + 100)  # nothing buffered
        rd.record(make_result(0))
        assert not rd.should_seal(now) and rd.should_seal(now + 100)
        rd.record(make_result(1))
        rd.record(make_result(2))
        assert rd.should_seal(time.monotonic())


def test_reopen_after_a_kill_replays_segments_and_drops_the_torn_line(tmp_path: Path) -> None:
    """Segments left by a kill (torn last line included) become parts; the done set is right."""
    run = tmp_path / "run"
    open_run(run).close()
    _write_segment(run, 1, [make_result(0), make_result(1, "errored")])
    _write_segment(run, 2, [make_result(2), make_result(1)], tail=b'{"_index":3,"id":"r3","sta')
    with open_run(run) as rd:
        assert [rd.done.code(i) for i in range(5)] == [1, 1, 1, 0, 0]
        assert len(rd.warnings) == 1  # the torn line is said, for the CLI to print
        assert rd.warnings[0].startswith("seg-000002.jsonl: dropped an incomplete last line")
        assert sorted(p.name for p in (run / "parts").iterdir()) == [
            "part-000001.parquet",
            "part-000002.parquet",
        ]
        assert list((run / "journal").iterdir()) == []
        rd.record(make_result(3))
        sealed = rd.seal()
        assert sealed is not None and sealed.seq == 3  # numbering continues after the parts


def test_garbled_middle_line_stops_the_open_and_keeps_everything(tmp_path: Path) -> None:
    """A complete line that is no outcome is not skipped: IntegrityError, nothing deleted."""
    run = tmp_path / "run"
    open_run(run).close()
    _write_segment(
        run, 1, [make_result(0)], tail=b"\x00\x00garbage\n" + encode_result(make_result(2))
    )
    before = _snapshot(run / "journal")
    with pytest.raises(IntegrityError) as caught:
        open_run(run)
    assert "seg-000001.jsonl: the line at byte" in str(caught.value)
    assert caught.value.exit_code == 1
    assert _snapshot(run / "journal") == before and list((run / "parts").iterdir()) == []
    seg = run / "journal" / "seg-000001.jsonl"  # the user deletes the line, as told
    seg.write_bytes(seg.read_bytes().replace(b"\x00\x00garbage\n", b""))
    with open_run(run) as rd:  # and the lock was released by the failed open
        assert [rd.done.code(i) for i in range(3)] == [1, 0, 1]


def test_part_and_its_segment_both_present_count_once(tmp_path: Path) -> None:
    """A crash between rename and unlink leaves both; the part wins, no double count."""
    run = tmp_path / "run"
    with open_run(run) as rd:
        rd.record(make_result(0))
        rd.record(make_result(1, "errored"))
        commit_all(rd)
    _write_segment(run, 1, [make_result(0), make_result(1, "errored")])
    with open_run(run) as rd:
        assert rd.done.succeeded == 1 and rd.done.errored == 1
        assert list((run / "journal").iterdir()) == []
        out = rd.finalize({})
    assert _ids(out) == ["r0", "r1"]


def test_tmp_leftovers_are_removed(tmp_path: Path) -> None:
    """Half-written `*.tmp` files from a crash are ignored and deleted on open."""
    run = tmp_path / "run"
    open_run(run).close()
    for name in ("parts/part-000001.parquet.tmp", "results.parquet.tmp", "manifest.json.tmp"):
        (run / name).write_bytes(b"PAR1 half a file")
    with open_run(run) as rd:
        assert rd.done.pending == 10 and rd.warnings == []
    assert list(run.rglob("*.tmp")) == []


def test_corrupt_part_is_quarantined_and_its_rows_become_pending(tmp_path: Path) -> None:
    """An unreadable part moves to quarantine/ with a warning; its rows are pending again."""
    run = tmp_path / "run"
    with open_run(run) as rd:
        for i in range(3):
            rd.record(make_result(i))
        commit_all(rd)
        rd.record(make_result(5))
        commit_all(rd)
    part = run / "parts" / "part-000001.parquet"
    part.write_bytes(part.read_bytes()[:-20])  # lose the footer
    with open_run(run) as rd:
        assert [rd.done.code(i) for i in range(6)] == [0, 0, 0, 0, 0, 1]
        assert len(rd.warnings) == 1 and "part-000001.parquet" in rd.warnings[0]
        assert "quarantine" in rd.warnings[0]
        rd.record(make_result(0))
        sealed = rd.seal()
        assert sealed is not None and sealed.seq == 3
        rd.commit(sealed)
        assert _ids(rd.finalize({})) == ["r0", "r5"]
    assert (run / "quarantine" / "part-000001.parquet").exists()


def test_corrupt_part_with_its_segment_still_there_uses_the_segment(tmp_path: Path) -> None:
    """If part N is unreadable but segment N survived, the segment's rows are kept."""
    run = tmp_path / "run"
    open_run(run).close()
    (run / "parts" / "part-000004.parquet").write_bytes(b"garbage")
    _write_segment(run, 4, [make_result(7)])
    with open_run(run) as rd:
        assert rd.done.code(7) == 1 and len(rd.warnings) == 1
        assert (run / "parts" / "part-000004.parquet").exists()


def test_corruption_found_at_finalize_quarantines_and_asks_for_a_rerun(tmp_path: Path) -> None:
    """A part that breaks during finalize is quarantined and the error says to run again."""
    run = tmp_path / "run"
    with open_run(run) as rd:
        rd.record(make_result(0))
        commit_all(rd)
        (run / "parts" / "part-000001.parquet").write_bytes(b"broken")
        with pytest.raises(OutputError, match="run the same command again"):
            rd.finalize({})
    assert (run / "quarantine" / "part-000001.parquet").exists()
    with open_run(run) as rd:
        assert rd.done.pending == 10


def test_fingerprint_mismatch_names_every_key_and_touches_nothing(tmp_path: Path) -> None:
    """A different run is refused with each differing key path, and the dir is unchanged."""
    run = tmp_path / "run"
    mine = {"input": {"path": "in.jsonl", "size": 123}, "settings": {"max_tokens": 1}}
    with open_run(run, fingerprint=mine) as rd:
        rd.record(make_result(0))
    before = _snapshot(run)
    other = {"input": {"path": "in.jsonl", "size": 456}, "settings": {"max_tokens": 2, "x": 1}}
    with pytest.raises(OutputError) as info:
        open_run(run, fingerprint=other, total=99)
    message = str(info.value)
    assert "input.size: 123 -> 456" in message
    assert "settings.max_tokens: 1 -> 2" in message
    assert "settings.x: (absent) -> 1" in message
    assert "input.path" not in message
    assert _snapshot(run) == before
    with open_run(run, fingerprint=mine) as rd:  # the lock was released
        assert rd.done.succeeded == 1


def test_with_nothing_recorded_a_new_fingerprint_replaces_the_old_with_a_warning(
    tmp_path: Path,
) -> None:
    """No outcome recorded (a run stopped before its first answer): the directory takes the
    new input and settings, says so naming each change, and keeps them from then on."""
    run = tmp_path / "run"
    old = {"input": {"size": 1}, "settings": {"model": "nope"}}
    open_run(run, fingerprint=old).close()
    new = {"input": {"size": 1}, "settings": {"model": "caicaini/auto"}}
    with open_run(run, fingerprint=new) as rd:
        assert rd.warnings == [
            f"no row of {run} was recorded yet: it takes this command's input and settings "
            "(settings.model: nope -> caicaini/auto)"
        ]
        assert not rd.holds_outcomes
        rd.record(make_result(0))
        assert rd.holds_outcomes
        commit_all(rd)  # the outcome now lives in a part, the journal is empty
    with pytest.raises(OutputError, match=r"settings\.model: caicaini/auto -> nope"):
        open_run(run, fingerprint=old)
    with open_run(run, fingerprint=new) as rd:
        assert rd.warnings == [] and rd.holds_outcomes


def test_a_directory_that_is_not_a_run_dir_is_refused(tmp_path: Path) -> None:
    """An existing directory with other files and no manifest is never taken over."""
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not a batchrunner run directory"):
        open_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    open_run(empty).close()


def test_a_file_or_a_broken_manifest_is_refused(tmp_path: Path) -> None:
    """A path that is a file, or a run dir whose manifest is not JSON, raises OutputError."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a directory"):
        open_run(tmp_path / "file")
    run = tmp_path / "run"
    open_run(run).close()
    (run / "manifest.json").write_text("{not json")
    with pytest.raises(OutputError, match=r"manifest\.json is unreadable"):
        open_run(run)
    (run / "manifest.json").write_text("[1, 2]")
    with pytest.raises(OutputError, match="not a batchrunner manifest"):
        open_run(run)


_HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from batchrunner.rundir import RunDir
    fp = {"input": {"size": 1}, "settings": {}}  # tests.helpers.FP, as the parent opens it
    rd = RunDir.open(Path(sys.argv[1]), fingerprint=fp, total_rows=10, retry_errors=False,
                     durability="process")
    print("open", flush=True)
    sys.stdin.read()
    rd.close()
    """
)


def _holder(run: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(run)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "open\n"
    return proc


def test_lock_held_by_another_process_is_refused(tmp_path: Path) -> None:
    """While another live process has the run dir open, opening it fails naming that pid."""
    run = tmp_path / "run"
    proc = _holder(run)
    try:
        with pytest.raises(OutputError, match=f"run dir {run} is in use by pid {proc.pid}"):
            open_run(run)
    finally:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.wait(timeout=30)
        proc.stdout.close()
    open_run(run).close()


def test_lock_of_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    """A SIGKILLed holder's lock dies with it; the next open takes over and records its pid."""
    run = tmp_path / "run"
    proc = _holder(run)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.close()
    proc.stdout.close()
    assert (run / "lock").read_text().strip() == str(proc.pid)
    with open_run(run):
        assert (run / "lock").read_text().strip() == str(os.getpid())


def test_retry_errors_last_outcome_wins(tmp_path: Path) -> None:
    """With retry_errors, errored rows are not done; a later success wins everywhere."""
    run = tmp_path / "run"
    with open_run(run, total=3) as rd:
        rd.record(make_result(0))
        rd.record(make_result(1, "errored"))
        rd.record(make_result(2, "errored"))
    with open_run(run, total=3) as rd:
        assert rd.done.is_done(1) and rd.done.remaining == 0
    with open_run(run, total=3, retry_errors=True) as rd:
        assert not rd.done.is_done(1) and not rd.done.is_done(2) and rd.done.is_done(0)
        assert rd.done.remaining == 2
        rd.record(make_result(1, text="second try"))
        assert rd.done.succeeded == 2 and rd.done.errored == 1
        out = rd.finalize({})
    table = pq.read_table(out)
    assert table.column("status").to_pylist() == ["succeeded", "succeeded", "errored"]
    assert table.column("text").to_pylist()[1] == "second try"
    with open_run(run, total=3) as rd:
        assert rd.done.succeeded == 2 and rd.done.errored == 1


def test_set_total_updates_manifest_and_counts(tmp_path: Path) -> None:
    """A new input size is stored in the manifest and changes the pending count."""
    run = tmp_path / "run"
    with open_run(run, total=2) as rd:
        rd.record(make_result(5))
        assert rd.done.pending == 2 and rd.done.succeeded == 0
        rd.set_total(10)
        assert rd.done.pending == 9 and rd.done.succeeded == 1
    assert json.loads((run / "manifest.json").read_text())["total_rows"] == 10
    with open_run(run, total=4) as rd:
        assert rd.total_rows == 4 and rd.done.pending == 4
    assert json.loads((run / "manifest.json").read_text())["total_rows"] == 4


def test_finalize_commits_what_was_sealed_but_never_committed(tmp_path: Path) -> None:
    """Sealed segments whose commit never ran, and the open buffer, reach results.parquet."""
    run = tmp_path / "run"
    with open_run(run, total=3, durability="os") as rd:
        rd.record(make_result(0))
        assert rd.seal() is not None
        rd.record(make_result(2))
        assert _ids(rd.finalize({})) == ["r0", "r2"]
    assert list((run / "journal").iterdir()) == []


def test_double_commit_is_harmless_and_finalize_waits_for_a_running_commit(
    tmp_path: Path,
) -> None:
    """Committing a Sealed twice is a no-op; finalize waits for a commit in another thread."""
    run = tmp_path / "run"
    with open_run(run, total=2) as rd:
        rd.record(make_result(0))
        first = rd.seal()
        assert first is not None
        rd.commit(first)
        rd.commit(first)
        rd.record(make_result(1))
        second = rd.seal()
        assert second is not None
        worker = threading.Thread(target=rd.commit, args=(second,))
        worker.start()
        out = rd.finalize({})
        worker.join()
        assert _ids(out) == ["r0", "r1"]
        assert sorted(p.name for p in (run / "parts").iterdir()) == [
            "part-000001.parquet",
            "part-000002.parquet",
        ]


def test_failed_part_write_keeps_the_segment_and_resume_recovers(tmp_path: Path) -> None:
    """A part write that hits ENOSPC leaves no temp file, keeps the segment; resume works."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    run = tmp_path / "run"
    with open_run(run) as rd:
        rd.record(make_result(0))
        rd.record(make_result(1))
        sealed = rd.seal()
        assert sealed is not None
        tmp = run / "parts" / "part-000001.parquet.tmp"
        tmp.symlink_to("/dev/full")  # the part's bytes go to a full device
        with pytest.raises(DiskError, match="No space left on device"):
            rd.commit(sealed)
        assert not tmp.exists() and not tmp.is_symlink()
        assert list((run / "parts").iterdir()) == [] and sealed.segment.exists()
    with open_run(run) as rd:
        assert rd.done.succeeded == 2
        assert _ids(rd.finalize({})) == ["r0", "r1"]


_CRASHER = textwrap.dedent(
    """
    import os, random, sys, threading, time
    from pathlib import Path
    from batchrunner.rundir import RunDir
    from batchrunner.records import Result
    fp = {"input": {"size": 1}, "settings": {}}  # tests.helpers.FP, as the parent opens it
    rd = RunDir.open(Path(sys.argv[1]), fingerprint=fp, total_rows=10**6, retry_errors=False,
                     durability="process", flush_rows=40, flush_s=0.05)
    rng = random.Random(int(sys.argv[2]))
    out = os.fdopen(1, "w", buffering=1)
    i = 0
    while True:
        if rd.done.is_done(i):
            i += 1
            continue
        size = rng.choice([10, 100, 5000, 200000])
        rd.record(Result(index=i, id=f"r{i}", status="succeeded", text="x" * size))
        out.write(f"{i}\\n")
        i += 1
        if rd.should_seal(time.monotonic()):
            threading.Thread(target=rd.commit, args=(rd.seal(),)).start()
    """
)


@pytest.mark.crash
def test_sigkill_at_random_moments_loses_and_repeats_nothing(tmp_path: Path) -> None:
    """Rows recorded before a SIGKILL survive it, and no recorded row is recorded again."""
    run = tmp_path / "run"
    rng = random.Random(1234)
    reported: list[int] = []
    for round_ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", _CRASHER, str(run), str(round_)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        lines: list[str] = []
        reader = threading.Thread(target=lines.extend, args=(proc.stdout,))
        reader.start()
        deadline = time.monotonic() + 30
        while not lines and time.monotonic() < deadline:
            time.sleep(0.01)  # wait for the first outcome, not for a result
        time.sleep(rng.uniform(0.0, 0.4))
        proc.kill()
        proc.wait(timeout=30)
        reader.join(timeout=30)
        proc.stdout.close()
        assert lines, "the child recorded nothing"
        reported += [int(x) for x in lines if x.endswith("\n")]
    assert len(reported) == len(set(reported)), "a recorded row was recorded again"
    with open_run(run, total=max(reported) + 1) as rd:
        ids = _ids(rd.finalize({}))
    assert len(ids) == len(set(ids))
    assert {f"r{i}" for i in reported} <= set(ids)
    assert list(run.rglob("*.tmp")) == []


def _mount_tmpfs(where: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def test_full_disk_raises_disk_error_and_resume_works_after_freeing_space(
    tmp_path: Path,
) -> None:
    """On a full tmpfs: DiskError, no torn line, no part; after freeing space, resume works."""
    mnt = tmp_path / "mnt"
    if not _mount_tmpfs(mnt, "512k"):
        pytest.skip("needs root and a mountable tmpfs")
    rd: RunDir | None = None
    try:
        filler = mnt / "filler"
        filler.write_bytes(b"\0" * 256 * 1024)
        run = mnt / "run"
        rd = open_run(run, total=1000)
        recorded = 0
        with pytest.raises(DiskError, match="No space left on device; free space"):
            for i in range(1000):
                rd.record(make_result(i, text=os.urandom(10_000).hex()))
                recorded += 1
        assert recorded > 0
        segment = run / "journal" / "seg-000001.jsonl"
        assert segment.read_bytes().endswith(b"\n")
        assert segment.read_bytes().count(b"\n") == recorded
        sealed = rd.seal()
        assert sealed is not None
        with pytest.raises(DiskError):
            rd.commit(sealed)
        assert list((run / "parts").iterdir()) == [] and segment.exists()
        rd.close()
        filler.unlink()
        rd = open_run(run, total=1000)
        assert rd.done.succeeded == recorded
        assert len(_ids(rd.finalize({}))) == recorded
    finally:
        if rd is not None:
            rd.close()
        subprocess.run(["umount", str(mnt)], check=False)


def test_open_reads_only_the_index_and_status_columns(tmp_path: Path) -> None:
    """Damage in a part's other columns does not slow or trouble open; finalize finds it."""
    run = tmp_path / "run"
    with open_run(run) as rd:
        for i in range(3):
            rd.record(make_result(i, text=os.urandom(500).hex()))
        commit_all(rd)
    part = run / "parts" / "part-000001.parquet"
    column = pq.ParquetFile(part).metadata.row_group(0).column(PART_SCHEMA.names.index("text"))
    data = bytearray(part.read_bytes())
    start = column.dictionary_page_offset or column.data_page_offset
    data[start : start + column.total_compressed_size] = b"\xff" * column.total_compressed_size
    part.write_bytes(bytes(data))
    with open_run(run) as rd:
        assert rd.done.succeeded == 3 and rd.warnings == []
        with pytest.raises(OutputError, match=r"part-000001\.parquet is unreadable"):
            rd.finalize({})
