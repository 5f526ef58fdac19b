"""`--engine ray`: real CLI subprocesses, each starting a local Ray, against the fake API.

Each Ray run costs ~15 s of Ray start-up on this 2-core machine, so the module has three
of them: the same results as the local engine (with the server's in-flight count), and
one run whose actor and then driver are SIGKILLed, then resumed.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
import pytest

from batchrunner.rundir.actors import ACTORS_DIR, actor_dirs
from batchrunner.rundir.files import list_parts, list_segments
from batchrunner.rundir.lines import segment_outcomes
from batchrunner.rundir.parts import read_part_outcomes
from tests.fakeserver import FakeServer
from tests.helpers import TEST_KEY, run_cli, write_jsonl

# Ray starts a dozen processes: never beside the tests that pace against a clock.
pytestmark = pytest.mark.xdist_group("timing")

if TYPE_CHECKING:
    from collections.abc import Iterator

# Each Ray run pays Ray's start-up: past the default 120 s per test on a loaded machine.
RAY_TIMEOUT_S = 400

ROWS = 3000
CONCURRENCY = 64
MARK = "BATCHRUNNER_RAY_TEST"  # in every process a test run starts, Ray's included


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    # Latency, so that answers overlap and the in-flight count shows the concurrency.
    with FakeServer("--latency", "0.05-0.1", api_key=TEST_KEY) as api:
        yield api


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return [{"id": f"row-{i:05d}", "prompt": f"ray prompt {i}"} for i in range(ROWS)]


@pytest.fixture
def leftovers() -> Iterator[str]:
    """A mark for the test's processes; afterwards, the ones a SIGKILLed driver left
    behind (Ray's agents outlive it) are killed by pid."""
    mark = uuid.uuid4().hex
    yield mark
    for pid in _marked(mark):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _marked(mark: str) -> list[int]:
    found = []
    needle = f"{MARK}={mark}".encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            with contextlib.suppress(OSError):
                if needle in (proc / "environ").read_bytes():
                    found.append(int(proc.name))
    return found


def _start(
    src: Path, out: Path, url: str, mark: str, log: Path, *extra: str
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "batchrunner", "run", str(src), "-o", str(out)]
    cmd += ["--base-url", url, "-q", "--engine", "ray", "--concurrency", str(CONCURRENCY)]
    env = {**os.environ, "CAICAINI_API_KEY": TEST_KEY, MARK: mark}
    with log.open("ab") as sink:
        return subprocess.Popen([*cmd, *extra], env=env, stdout=sink, stderr=sink)


def _finish(proc: subprocess.Popen[bytes], log: Path, timeout: float = 240) -> None:
    assert proc.wait(timeout=timeout) == 0, log.read_text(errors="replace")[-3000:]


def _answers(server: FakeServer) -> int:
    return int(server.stats()["answers_total"])


def _wait_answers(server: FakeServer, n: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 180
    while _answers(server) < n:
        assert proc.poll() is None, "the run ended before the kill"
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _recorded(out: Path) -> set[int]:
    """Row indices the run directory and its actor directories hold, as on disk now."""
    found: set[int] = set()
    for d in [out, *actor_dirs(out)]:
        for seq, part in list_parts(d / "parts"):
            found.update(read_part_outcomes(seq, part).indices)
        for _, seg in list_segments(d / "journal"):
            found.update(segment_outcomes(seg)[0])
    return found


def _sent(server: FakeServer) -> collections.Counter[str]:
    return collections.Counter(e["prompt"] for e in server.log() if e["path"].endswith("/messages"))


@pytest.mark.slow
@pytest.mark.timeout(RAY_TIMEOUT_S)
def test_ray_gives_the_local_results_with_concurrency_per_actor(
    tmp_path: Path, server: FakeServer, rows: list[dict[str, str]], leftovers: str
) -> None:
    """3 000 rows, --concurrency 64, one actor: the local engine's ids, statuses and texts;
    the server saw at least half of 64 requests at once, never more than 64."""
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    base = ["run", str(src), "--base-url", server.base_url, "-q", "--concurrency", "64"]
    server.reset()
    assert run_cli([*base, "-o", str(tmp_path / "local")]).exit_code == 0
    server.reset()
    log = tmp_path / "ray.log"
    _finish(
        _start(src, tmp_path / "ray", server.base_url, leftovers, log, "--ray-actors", "1"), log
    )
    stats = server.stats()
    assert stats["answers_total"] == ROWS
    assert 32 <= stats["max_in_flight"] <= CONCURRENCY, stats
    columns = ["id", "status", "text"]
    local = pq.read_table(tmp_path / "local" / "results.parquet", columns=columns).to_pylist()
    ray = pq.read_table(tmp_path / "ray" / "results.parquet", columns=columns).to_pylist()
    assert ray == local
    assert [r["id"] for r in ray] == [r["id"] for r in rows]
    assert not (tmp_path / "ray" / ACTORS_DIR).exists()  # every actor's part gathered


@pytest.mark.crash
@pytest.mark.slow
@pytest.mark.timeout(RAY_TIMEOUT_S)
def test_killed_actor_then_killed_driver_resume_sends_no_recorded_row_again(
    tmp_path: Path, server: FakeServer, rows: list[dict[str, str]], leftovers: str
) -> None:
    """Two actors. SIGKILL one actor: Ray runs its batch again, skipping what it recorded.
    Then SIGKILL the driver halfway; the resume sends no row recorded before it."""
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out, log = tmp_path / "run", tmp_path / "ray.log"
    server.reset()
    proc = _start(src, out, server.base_url, leftovers, log, "--ray-actors", "2")
    _wait_answers(server, 400, proc)
    victim = actor_dirs(out)[0]
    before_actor_kill = _recorded(out)
    os.kill(int(victim.name.split("-")[1]), signal.SIGKILL)  # actor-<pid>-<hex>
    _wait_answers(server, ROWS // 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    first = _sent(server)
    recorded = _recorded(out)
    assert before_actor_kill <= recorded
    assert 0 < len(recorded) < ROWS
    assert server.stats()["max_in_flight"] <= 2 * CONCURRENCY
    server.reset()
    _finish(_start(src, out, server.base_url, leftovers, log, "--ray-actors", "2"), log)
    again = _sent(server)
    assert not {rows[i]["prompt"] for i in recorded} & set(again), "a recorded row was sent again"
    # Sent twice at most: a row answered but not journaled when its actor or the driver died.
    twice = [p for p in first if first[p] > 1 or p in again]
    assert len(twice) <= 3 * CONCURRENCY, len(twice)
    results = pq.read_table(out / "results.parquet").to_pylist()
    assert [r["id"] for r in results] == [r["id"] for r in rows]
    assert {r["status"] for r in results} == {"succeeded"}
    assert not (out / ACTORS_DIR).exists()


def test_engine_ray_without_ray_installed_exits_2_with_the_pip_command(tmp_path: Path) -> None:
    """`import ray` failing (a stand-in module on PYTHONPATH): exit 2, nothing sent."""
    fake = tmp_path / "noray"
    fake.mkdir()
    (fake / "ray.py").write_text("raise ImportError('no ray here')\n")
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p"}])
    env = {**os.environ, "CAICAINI_API_KEY": TEST_KEY, "PYTHONPATH": str(fake)}
    cmd = [sys.executable, "-m", "batchrunner", "run", str(src), "-o", str(tmp_path / "o")]
    done = subprocess.run(
        [*cmd, "--engine", "ray", "--base-url", "http://127.0.0.1:9/v1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "pip install 'batchrunner[ray]'" in done.stderr
    assert not (tmp_path / "o").exists()


def test_ray_options_without_engine_ray_are_refused(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p"}])
    res = run_cli(["run", str(src), "-o", str(tmp_path / "o"), "--ray-actors", "3"])
    assert res.exit_code == 2
    assert "need --engine ray" in res.stderr


def test_engine_ray_refuses_dedupe_before_anything_is_sent(tmp_path: Path) -> None:
    """Copies of a body would land in different actors: --dedupe is exit 2, no run dir."""
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p"}, {"prompt": "p"}])
    out = tmp_path / "o"
    res = run_cli(["run", str(src), "-o", str(out), "--engine", "ray", "--dedupe"])
    assert res.exit_code == 2
    assert "--dedupe does not combine with --engine ray" in res.stderr
    assert not (out / "parts").exists()
