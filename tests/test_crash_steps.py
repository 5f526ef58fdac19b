"""kill -9 at every fsync, rename and unlink of part commit, recovery and assembly.

A child process drives a real RunDir (open, record, seal, commit, finalize) with os.fsync,
os.replace and os.unlink wrapped to log each call and SIGKILL the child just before call
number K. The test then reopens the directory, records what the child never got to, and
finalizes: every id must come out exactly once with its own text, and no temp file stays.
The wrappers live in the child only; production code has no fault hooks.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from batchrunner.records import Result
from batchrunner.rundir.journal import encode_result
from tests.helpers import open_run

pytestmark = pytest.mark.crash

ROWS = 12
HALF = ROWS // 2
BIG = 5  # this row's text is 3 MB: more than Arrow's default JSON block holds

_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from batchrunner.rundir import RunDir
    sys.path.insert(0, sys.argv[4])
    from tests.test_crash_steps import result, ROWS, HALF

    run, kill_at, mode = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    steps = []

    def hooked(name, real):
        def call(target, *args):
            where = os.readlink(f"/proc/self/fd/{target}") if isinstance(target, int) else target
            steps.append(f"{name} {os.path.basename(where)}")
            if len(steps) == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(target, *args)
        return call

    os.fsync = hooked("fsync", os.fsync)
    os.replace = hooked("replace", os.replace)
    os.unlink = hooked("unlink", os.unlink)
    rd = RunDir.open(run, fingerprint={}, total_rows=ROWS, retry_errors=False,
                     durability="process")
    if mode == "fresh":
        for i in range(HALF):
            rd.record(result(i))
        print("recorded", HALF, flush=True)
        rd.commit(rd.seal())
        for i in range(HALF, ROWS):
            rd.record(result(i))
    print("recorded", ROWS, flush=True)
    rd.finalize({})
    print("steps", "|".join(steps), flush=True)
    """
)

FRESH_STEPS = [
    *("fsync manifest.json.tmp", "replace manifest.json.tmp", "fsync run"),  # a new run dir
    *("fsync part-000001.parquet.tmp", "replace part-000001.parquet.tmp", "fsync parts"),
    *("unlink seg-000001.jsonl", "fsync journal"),  # commit of the first half
    *("fsync part-000002.parquet.tmp", "replace part-000002.parquet.tmp", "fsync parts"),
    *("unlink seg-000002.jsonl", "fsync journal"),  # finalize: the rest committed, then
    *("fsync results.parquet.tmp", "replace results.parquet.tmp", "fsync run"),  # assembly
]
RESUME_STEPS = [
    *("fsync part-000001.parquet.tmp", "replace part-000001.parquet.tmp", "fsync parts"),
    *("unlink seg-000001.jsonl", "fsync part-000002.parquet.tmp"),  # recovery on open
    *("replace part-000002.parquet.tmp", "fsync parts", "unlink seg-000002.jsonl"),
    "fsync journal",
    *("fsync results.parquet.tmp", "replace results.parquet.tmp", "fsync run"),  # assembly
]


def result(i: int) -> Result:
    text = "x" * (3 << 20) if i == BIG else f"answer {i}"
    return Result(index=i, id=f"id-{i}", status="succeeded", text=text, completed_at_us=i)


def _child(run: Path, kill_at: int, mode: str) -> tuple[int, int, list[str]]:
    """Run the child; returns (exit code, rows it recorded, steps it logged when it finished)."""
    repo = str(Path(__file__).resolve().parent.parent)
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(run), str(kill_at), mode, repo],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    recorded, steps = 0, []
    for line in proc.stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word == "recorded":
            recorded = int(rest)
        elif word == "steps":
            steps = rest.split("|")
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr
    return proc.returncode, recorded, steps


def _leave_two_segments(run: Path) -> None:
    """The state a kill leaves after two flushes' worth of journal and no part yet."""
    open_run(run, ROWS, fingerprint={}).close()
    for seq, rows in ((1, range(HALF)), (2, range(HALF, ROWS))):
        path = run / "journal" / f"seg-{seq:06d}.jsonl"
        path.write_bytes(b"".join(encode_result(result(i)) for i in rows))


def _finish_and_check(run: Path, recorded: int) -> None:
    with open_run(run, ROWS, fingerprint={}) as rd:
        codes = [rd.done.code(i) for i in range(ROWS)]
        assert codes == [1] * recorded + [0] * (ROWS - recorded), "a recorded outcome was lost"
        for i in range(recorded, ROWS):  # what a resumed run would send and record
            rd.record(result(i))
        out = rd.finalize({})
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == [f"id-{i}" for i in range(ROWS)]
    assert table.column("text").to_pylist() == [result(i).text for i in range(ROWS)]
    assert not list(run.rglob("*.tmp")) and not list((run / "journal").iterdir())


@pytest.mark.parametrize(("mode", "steps"), [("fresh", FRESH_STEPS), ("resume", RESUME_STEPS)])
def test_the_durable_steps_are_these(tmp_path: Path, mode: str, steps: list[str]) -> None:
    """Uninterrupted, the child makes exactly these calls (the list the kills walk)."""
    run = tmp_path / "run"
    if mode == "resume":
        _leave_two_segments(run)
    code, recorded, logged = _child(run, 0, mode)
    assert (code, recorded, logged) == (0, ROWS, steps)


@pytest.mark.parametrize("kill_at", range(1, len(FRESH_STEPS) + 1))
def test_kill_before_each_step_of_commit_and_assembly(tmp_path: Path, kill_at: int) -> None:
    """SIGKILL just before step K of a run's life: resume finishes with every id once."""
    run = tmp_path / "run"
    code, recorded, _ = _child(run, kill_at, "fresh")
    assert code == -signal.SIGKILL
    if not (run / "manifest.json").exists():
        return  # killed while creating the run dir: nothing was recorded, nothing to check
    _finish_and_check(run, recorded)


@pytest.mark.parametrize("kill_at", range(1, len(RESUME_STEPS) + 1))
def test_kill_before_each_step_of_recovery(tmp_path: Path, kill_at: int) -> None:
    """SIGKILL just before step K of converting crash-left segments on open: nothing lost."""
    run = tmp_path / "run"
    _leave_two_segments(run)
    code, _, _ = _child(run, kill_at, "resume")
    assert code == -signal.SIGKILL
    _finish_and_check(run, ROWS)
