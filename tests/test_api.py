"""The Python API: batchrunner.run / arun from any thread and under a running event loop,
with rows given as dicts, Arrow tables or DataFrames, against the fake API."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import batchrunner
from batchrunner.errors import ConfigError, OutputError, SourceError
from batchrunner.rundir import OUTPUT_SCHEMA
from tests.fakeserver import FakeServer
from tests.helpers import TEST_KEY, read_results, status_json, write_jsonl

if TYPE_CHECKING:
    from pathlib import Path

ONE = [{"id": "a", "prompt": "x"}]


@pytest.fixture
def base(shared_api: FakeServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """The fake API's base URL, with the test key in CAICAINI_API_KEY (the API reads it)."""
    monkeypatch.setenv("CAICAINI_API_KEY", TEST_KEY)
    monkeypatch.delenv("CAICAINI_BASE", raising=False)
    return shared_api.base_url


def _check_result(result: batchrunner.RunResult, out: Path, ids: list[str]) -> None:
    """A complete run: the table is results.parquet, schema and rows."""
    assert result.table.schema.equals(pq.read_schema(out / "results.parquet"))
    assert result.table.schema.names[: len(OUTPUT_SCHEMA)] == OUTPUT_SCHEMA.names
    assert result.table.column("id").to_pylist() == ids
    assert set(result.table.column("status").to_pylist()) == {"succeeded"}
    assert (result.total, result.succeeded, result.errored) == (len(ids), len(ids), 0)
    assert result.output == out


def test_run_from_a_thread_pool_worker(base: str, tmp_path: Path) -> None:
    """No signal handler is installed off the main thread (set_wakeup_fd would refuse)."""
    out = tmp_path / "d"
    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(batchrunner.run, ONE, output=out, base_url=base).result()
    _check_result(result, out, ["a"])
    assert result.sent == 1
    assert json.loads((out / "input.jsonl").read_text()) == ONE[0]


def test_arun_inside_a_running_loop(base: str, tmp_path: Path) -> None:
    """`await arun(...)` from a coroutine, as in a notebook cell."""
    out = tmp_path / "d"

    async def main() -> batchrunner.RunResult:
        return await batchrunner.arun(ONE, output=out, base_url=base, concurrency=2)

    _check_result(asyncio.run(main()), out, ["a"])


def test_sync_run_under_a_running_loop_gets_a_thread_of_its_own(base: str, tmp_path: Path) -> None:
    """`run(...)` called from code a running loop drives (a notebook's sync cell)."""
    out = tmp_path / "d"

    async def main() -> tuple[batchrunner.RunResult, Any]:
        result = batchrunner.run(ONE, output=out, base_url=base)
        return result, asyncio.get_running_loop()

    result, _ = asyncio.run(main())
    _check_result(result, out, ["a"])


def test_run_on_the_main_thread_and_resume(base: str, tmp_path: Path) -> None:
    """The same call again resumes: nothing re-sent, the rows file left untouched."""
    out = tmp_path / "d"
    rows = [{"id": f"r{i}", "prompt": f"p{i}", "topic": i % 3} for i in range(6)]
    first = batchrunner.run(rows, output=out, base_url=base, max_tokens=64, timeout=30)
    _check_result(first, out, [f"r{i}" for i in range(6)])
    assert first.table.column("topic").to_pylist() == [0, 1, 2, 0, 1, 2]
    mtime = (out / "input.jsonl").stat().st_mtime_ns
    again = batchrunner.run(rows, output=out, base_url=base, max_tokens=64, timeout=30)
    assert again.sent == 0 and again.table.equals(first.table)
    assert (out / "input.jsonl").stat().st_mtime_ns == mtime
    settings = json.loads((out / "manifest.json").read_text())["fingerprint"]["settings"]
    assert settings["request"]["max_tokens"] == 64


def test_other_rows_into_a_begun_run_are_refused(base: str, tmp_path: Path) -> None:
    """The run dir's rows file is that run's input: other rows are exit 2, nothing written."""
    out = tmp_path / "d"
    batchrunner.run(ONE, output=out, base_url=base)
    before = (out / "input.jsonl").read_bytes()
    with pytest.raises(OutputError, match="is the run of other rows") as info:
        batchrunner.run([{"id": "b", "prompt": "y"}], output=out, base_url=base)
    assert info.value.exit_code == 2
    assert (out / "input.jsonl").read_bytes() == before
    with pytest.raises(OutputError, match="is the run of other rows"):
        batchrunner.run(pa.table({"id": ["a"], "prompt": ["x"]}), output=out, base_url=base)
    assert not (out / "input.parquet").exists()


def test_an_arrow_table_keeps_its_types(base: str, tmp_path: Path) -> None:
    """A pyarrow.Table is written as DIR/input.parquet; extra columns keep their types."""
    out = tmp_path / "d"
    table = pa.table(
        {
            "id": ["a", "b"],
            "prompt": ["x", "y"],
            "n": pa.array([1, 2], pa.int16()),
            "tags": pa.array([["u"], []], pa.list_(pa.string())),
        }
    )
    result = batchrunner.run(table, output=out, base_url=base)
    _check_result(result, out, ["a", "b"])
    assert pq.read_table(out / "input.parquet").equals(table)
    assert result.table.column("tags").to_pylist() == [["u"], []]


def test_a_pandas_dataframe(base: str, tmp_path: Path) -> None:
    """pandas: rows as they are, its index not carried as a column."""
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"id": ["a", "b"], "prompt": ["x", "y"], "k": [1.5, 2.5]}, index=[7, 9])
    out = tmp_path / "d"
    result = batchrunner.run(frame, output=out, base_url=base)
    _check_result(result, out, ["a", "b"])
    assert result.table.column("k").to_pylist() == [1.5, 2.5]
    assert "__index_level_0__" not in result.table.schema.names


class _StreamOnly:
    """A table known only by the Arrow C stream interface, as polars and DuckDB offer it."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        return self._table.__arrow_c_stream__(requested_schema)


def test_any_arrow_stream_exportable_table(base: str, tmp_path: Path) -> None:
    out = tmp_path / "d"
    source = _StreamOnly(pa.table({"id": ["a"], "prompt": ["x"]}))
    _check_result(batchrunner.run(source, output=out, base_url=base), out, ["a"])


def test_a_path_source_is_read_in_place(base: str, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", ONE)
    out = tmp_path / "d"
    _check_result(batchrunner.run(str(src), output=out, base_url=base), out, ["a"])
    assert not (out / "input.jsonl").exists()


def test_rows_json_cannot_carry_are_refused_naming_the_row(base: str, tmp_path: Path) -> None:
    """bytes in a dict: exit 2 naming the row, and no rows file left behind."""
    out = tmp_path / "d"
    with pytest.raises(SourceError, match=r"row 1: .*bytes.*pyarrow.Table") as info:
        batchrunner.run([*ONE, {"id": "b", "prompt": "y", "blob": b"\x00"}], output=out)
    assert info.value.exit_code == 2
    assert list(out.iterdir()) == []
    # What the type checker refuses too, as a caller without one might pass it.
    texts: Any = ["just text"]
    with pytest.raises(SourceError, match="row 0: is a str, not a dict"):
        batchrunner.run(texts, output=out)
    one_dict: Any = {"id": "a", "prompt": "x"}
    with pytest.raises(SourceError, match="not rows"):
        batchrunner.run(one_dict, output=out)


def test_options_are_checked_before_anything_is_written(base: str, tmp_path: Path) -> None:
    """Unknown names are a TypeError; bad values a ConfigError listing them; no files."""
    out = tmp_path / "d"
    with pytest.raises(TypeError, match="unexpected keyword arguments: colour"):
        batchrunner.run(ONE, output=out, colour="red")  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="concurrency must be a whole number"):
        batchrunner.run(ONE, output=out, concurrency=0)
    assert not out.exists()


def test_the_key_comes_from_the_environment(base: str, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.delenv("CAICAINI_API_KEY")
    with pytest.raises(ConfigError, match="CAICAINI_API_KEY is not set"):
        batchrunner.run(ONE, output=tmp_path / "d", base_url=base)


def test_runs_on_two_threads_at_once_restore_the_collector(base: str, tmp_path: Path) -> None:
    """Overlapping runs share the quiet-GC setting; the last one out restores it."""
    before = gc.get_threshold()
    with ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(
                batchrunner.run,
                [{"id": f"{t}-{i}", "prompt": f"{t} {i}"} for i in range(20)],
                output=tmp_path / t,
                base_url=base,
            )
            for t in ("one", "two")
        ]
        results = [f.result() for f in futures]
    assert [r.succeeded for r in results] == [20, 20]
    assert gc.get_threshold() == before


def test_import_batchrunner_stays_cheap() -> None:
    """The API loads on first use: `import batchrunner` brings neither it nor pyarrow."""
    code = (
        "import sys, batchrunner; "
        "print(sorted(m for m in ('pyarrow', 'batchrunner.api', 'anyio') if m in sys.modules)); "
        "print(callable(batchrunner.run), 'pyarrow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "True False"]
    assert {"run", "arun", "RunResult"} <= set(batchrunner.__all__)


_NOTEBOOK = """
import asyncio, os, sys
import batchrunner
from batchrunner.errors import BatchRunnerError

async def cell():
    # A sync call from code a running loop drives, as a notebook cell is.
    try:
        result = batchrunner.run(sys.argv[1], output=sys.argv[2], base_url=sys.argv[3],
                                 concurrency=4)
    except BatchRunnerError as exc:
        print(type(exc).__name__, flush=True)
        sys.exit(exc.exit_code)
    print("done", result.succeeded, result.sent, flush=True)

asyncio.run(cell())
"""


@pytest.mark.crash
def test_ctrl_c_under_a_running_loop_stops_the_run_like_the_cli(tmp_path: Path) -> None:
    """SIGINT reaches the waiting thread, which hands it to the run's: the requests on the
    wire finish and are recorded, the call raises InterruptedRunError, and the same call
    then resumes to the end."""
    src = write_jsonl(
        tmp_path / "in.jsonl", [{"id": f"r{i}", "prompt": f"p{i}"} for i in range(24)]
    )
    out = tmp_path / "d"
    script = tmp_path / "cell.py"
    script.write_text(_NOTEBOOK)
    env = {**os.environ, "CAICAINI_API_KEY": TEST_KEY}
    with FakeServer("--latency", "1.0", api_key=TEST_KEY) as server:
        args = [sys.executable, str(script), str(src), str(out), server.base_url]
        proc = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 30
        while server.stats()["in_flight"] < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
        sent = len(server.log())
        assert proc.returncode == 130, stderr
        assert stdout.strip() == "InterruptedRunError"
        counts = status_json(out)
        assert counts["succeeded"] == sent and 4 <= sent < 24  # the wire's answers were kept
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["done", "24", str(24 - sent)]
    assert [r["id"] for r in read_results(out)] == [f"r{i}" for i in range(24)]


def test_signal_handlers_are_left_alone_off_the_main_thread(base: str, tmp_path: Path) -> None:
    """A worker thread's run never touches the process's signal handling."""
    handler = signal.getsignal(signal.SIGINT)
    box: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: box.update(r=batchrunner.run(ONE, output=tmp_path / "d", base_url=base))
    )
    thread.start()
    thread.join(60)
    assert box["r"].succeeded == 1
    assert signal.getsignal(signal.SIGINT) is handler


def test_a_main_thread_run_gives_the_host_its_signal_handlers_back(
    base: str, tmp_path: Path
) -> None:
    """The run handles SIGINT/SIGTERM while it goes (main thread), then the host's own
    handlers are back, not the defaults asyncio resets them to."""
    assert threading.current_thread() is threading.main_thread()
    seen: list[int] = []

    def host(signum: int, frame: object) -> None:
        seen.append(signum)

    previous = signal.signal(signal.SIGTERM, host)
    try:
        batchrunner.run(ONE, output=tmp_path / "d", base_url=base)
        assert signal.getsignal(signal.SIGTERM) is host
        signal.raise_signal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == [signal.SIGTERM]
