"""export (and the issue's acceptance run): JSONL, CSV and the two batch result formats."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import pyarrow.csv as pcsv
import pytest
from anthropic.types.messages import MessageBatchIndividualResponse
from openai.types import BatchError
from openai.types.chat import ChatCompletion
from openai.types.shared import ErrorObject

from batchrunner.cli import main
from batchrunner.records import Result
from batchrunner.rundir import RunDir, read_status
from tests.fakeserver import FakeServer
from tests.helpers import TEST_KEY, run_cli, write_jsonl

if TYPE_CHECKING:
    from collections.abc import Iterator

# The fake API refuses temperature 7 with 400 invalid_request_error (both conventions).
BAD = {"id": "bad", "prompt": "bad question", "temperature": 7}


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def _run(tmp: Path, base_url: str, rows: list[dict[str, Any]], *extra: str) -> Path:
    src = write_jsonl(tmp / "in.jsonl", rows)
    out = tmp / "run"
    res = run_cli(["run", str(src), "-o", str(out), "--base-url", base_url, "-q", *extra])
    assert res.exit_code in (0, 1), res.stderr
    return out


@pytest.fixture(scope="module")
def acceptance_run(
    _module_server: FakeServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """300 good rows and 1 bad-request row (the 150th), run to the end."""
    rows: list[dict[str, Any]] = [
        {"id": f"g{i}", "prompt": f"good question {i}"} for i in range(300)
    ]
    rows.insert(150, BAD)
    yield _run(tmp_path_factory.mktemp("acceptance"), _module_server.base_url, rows)


def test_acceptance_status_report_and_openai_batch_export(acceptance_run: Path) -> None:
    """status 301/300/1/0; report has tokens and the error type; 301 OpenAI batch lines."""
    status = json.loads(run_cli(["status", str(acceptance_run), "--json"]).stdout)
    assert (status["total"], status["succeeded"], status["errored"], status["pending"]) == (
        301,
        300,
        1,
        0,
    )
    report = json.loads(run_cli(["report", str(acceptance_run), "--json"]).stdout)
    assert report["input_tokens"]["sum"] > 0 and report["output_tokens"]["sum"] > 0
    assert report["error_type"] == {"invalid_request_error": 1}
    assert report["status"] == {"succeeded": 300, "errored": 1, "pending": 0}
    res = run_cli(["export", str(acceptance_run), "--format", "openai-batch"])
    assert res.exit_code == 0 and res.stderr == ""
    lines = _lines(res.stdout)
    assert len(lines) == 301
    assert [line["custom_id"] for line in lines][149:152] == ["g149", "bad", "g150"]
    assert len({line["id"] for line in lines}) == 301
    for line in lines:
        assert line["id"].startswith("batch_req_")
        if line["custom_id"] == "bad":
            assert line["error"] is None  # an HTTP failure: the response carries it
            assert line["response"]["status_code"] == 400
            assert line["response"]["request_id"].startswith("req_")
            error = ErrorObject.model_validate(line["response"]["body"]["error"])
            assert error.type == "invalid_request_error" and "temperature" in error.message
        else:
            assert line["error"] is None and line["response"]["status_code"] == 200
            assert line["response"]["body"]["id"].startswith("msg_")


def test_anthropic_batch_export_is_read_by_the_anthropic_sdk(acceptance_run: Path) -> None:
    """Every line parses as MessageBatchIndividualResponse; the bad row is an errored result."""
    res = run_cli(["export", str(acceptance_run), "--format", "anthropic-batch"])
    parsed = [
        MessageBatchIndividualResponse.model_validate_json(x) for x in res.stdout.splitlines()
    ]
    assert len(parsed) == 301
    bad = parsed[150]
    assert bad.custom_id == "bad" and bad.result.type == "errored"
    assert bad.result.error.error.type == "invalid_request_error"
    good = parsed[0].result
    assert good.type == "succeeded" and good.message.id.startswith("msg_")
    assert good.message.content[0].type == "text" and good.message.usage.output_tokens > 0


def test_jsonl_and_csv_hold_the_result_columns(acceptance_run: Path, tmp_path: Path) -> None:
    """jsonl: one object per row with the result columns; csv reads back with the same rows."""
    rows = _lines(run_cli(["export", str(acceptance_run), "--format", "jsonl"]).stdout)
    assert len(rows) == 301 and rows[150]["error_type"] == "invalid_request_error"
    assert rows[0]["completed_at"].endswith("Z") and json.loads(rows[0]["response"])["id"]
    assert list(rows[0])[:3] == ["id", "status", "response_id"]
    target = tmp_path / "out.csv"
    res = run_cli(["export", str(acceptance_run), "--format", "csv", "-o", str(target)])
    assert res.exit_code == 0 and "301 rows written" in res.stderr
    table = pcsv.read_csv(target)
    assert table.num_rows == 301 and table.column_names == list(rows[0])
    assert table.column("id").to_pylist() == [r["id"] for r in rows]
    assert json.loads(table.column("response")[0].as_py())["id"] == rows[0]["response_id"]


def test_openai_batch_of_a_chat_run_is_read_by_the_openai_sdk(
    shared_api: FakeServer, tmp_path: Path
) -> None:
    """Chat bodies parse as ChatCompletion; the bad row's body as an OpenAI ErrorObject."""
    rows: list[dict[str, Any]] = [{"id": f"c{i}", "prompt": f"chat {i}"} for i in range(5)]
    out = _run(tmp_path, shared_api.base_url, [*rows, BAD], "--api", "chat")
    lines = _lines(run_cli(["export", str(out), "--format", "openai-batch"]).stdout)
    assert len(lines) == 6
    for line in lines[:5]:
        completion = ChatCompletion.model_validate(line["response"]["body"])
        assert completion.id == line["response"]["body"]["id"]
        assert completion.choices[0].message.content
    assert ErrorObject.model_validate(lines[5]["response"]["body"]["error"]).type
    # Chat completions are not Messages: the Anthropic format is refused, nothing written.
    target = tmp_path / "anthropic.jsonl"
    res = run_cli(["export", str(out), "--format", "anthropic-batch", "-o", str(target)])
    assert res.exit_code == 2 and "--format openai-batch" in res.stderr
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_errors_without_an_http_status_fit_both_sdks(tmp_path: Path) -> None:
    """A timeout and a connection error: OpenAI `error` objects, Anthropic nearest types."""
    run = tmp_path / "run"
    fp: dict[str, object] = {"input": {"size": 1}, "settings": {}}
    with RunDir.open(
        run, fingerprint=fp, total_rows=3, retry_errors=False, durability="process"
    ) as rd:
        for i, kind in enumerate(("timeout", "connection_error", "overloaded_error")):
            status = 529 if kind == "overloaded_error" else None
            message = f"{kind} happened"
            rd.record(
                Result(
                    index=i,
                    id=f"e{i}",
                    status="errored",
                    error_type=kind,
                    http_status=status,
                    error_message=message,
                    attempts=6,
                )
            )
    openai_lines = _lines(run_cli(["export", str(run), "--format", "openai-batch"]).stdout)
    first = openai_lines[0]
    assert first["response"] is None
    assert BatchError.model_validate(first["error"]).code == "timeout"
    assert openai_lines[2]["response"]["status_code"] == 529
    res = run_cli(["export", str(run), "--format", "anthropic-batch"])
    parsed = [
        MessageBatchIndividualResponse.model_validate_json(x) for x in res.stdout.splitlines()
    ]
    errors = [p.result.error.error for p in parsed if p.result.type == "errored"]
    assert [(e.type, e.message) for e in errors] == [
        ("timeout_error", "timeout: timeout happened"),
        ("api_error", "connection_error: connection_error happened"),
        ("overloaded_error", "overloaded_error happened"),
    ]


def test_output_file_is_atomic_and_never_inside_the_run_dir(
    acceptance_run: Path, tmp_path: Path
) -> None:
    """-o FILE replaces the file whole; -o inside DIR or in a missing dir: exit 2, nothing."""
    target = tmp_path / "export.jsonl"
    target.write_text("old content\n")
    res = run_cli(["export", str(acceptance_run), "--format", "jsonl", "-o", str(target)])
    assert res.exit_code == 0 and res.stdout == ""
    stdout = run_cli(["export", str(acceptance_run), "--format", "jsonl"]).stdout
    assert target.read_text() == stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.jsonl"]
    before = sorted(p.name for p in acceptance_run.rglob("*"))
    inside = run_cli(
        ["export", str(acceptance_run), "--format", "csv", "-o", str(acceptance_run / "x.csv")]
    )
    assert inside.exit_code == 2 and "inside the run directory" in inside.stderr
    assert sorted(p.name for p in acceptance_run.rglob("*")) == before
    missing = run_cli(
        ["export", str(acceptance_run), "--format", "csv", "-o", str(tmp_path / "no" / "x.csv")]
    )
    assert missing.exit_code == 2 and "cannot write" in missing.stderr
    not_a_run = run_cli(["export", str(tmp_path), "--format", "jsonl", "-o", str(target)])
    assert not_a_run.exit_code == 2 and target.read_text() == stdout


def test_a_reader_that_goes_away_ends_export_quietly(tmp_path: Path) -> None:
    """`export | head -1`: exit 1 and no traceback (4 MB of output: past any pipe buffer)."""
    run = tmp_path / "run"
    fp: dict[str, object] = {"input": {"size": 1}, "settings": {}}
    with RunDir.open(
        run, fingerprint=fp, total_rows=2000, retry_errors=False, durability="process"
    ) as rd:
        for i in range(2000):
            rd.record(Result(index=i, id=f"p{i}", status="succeeded", text="x" * 2000))
    cmd = [sys.executable, "-m", "batchrunner", "export", str(run), "--format", "jsonl"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert json.loads(proc.stdout.readline())["id"] == "p0"
    proc.stdout.close()
    with proc.stderr:
        err = proc.stderr.read()
    assert proc.wait(timeout=60) == 1
    assert err == b""


def test_a_full_disk_under_stdout_is_an_error_not_a_traceback(acceptance_run: Path) -> None:
    """`export > /dev/full`: exit 2 and one line naming the cause."""
    cmd = [sys.executable, "-m", "batchrunner", "export", str(acceptance_run), "--format", "csv"]
    full_device = Path("/dev/full")
    if not full_device.exists():
        pytest.skip("no /dev/full here")
    with full_device.open("wb") as full:
        res = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, text=True, check=False)
    assert res.returncode == 2
    assert res.stderr == "Error: cannot write the export: No space left on device\n"


@pytest.mark.crash
def test_export_after_kill_9_gives_exactly_the_recorded_rows(tmp_path: Path) -> None:
    """SIGKILL mid-run (parts and journal both hold outcomes): export = succeeded + errored."""
    rows: list[dict[str, Any]] = [{"id": f"k{i}", "prompt": f"kill {i}"} for i in range(8000)]
    for k in range(0, 8000, 500):
        rows[k] = {**BAD, "id": f"bad{k}"}
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "run"
    with FakeServer("--latency", "0.005-0.02", api_key=TEST_KEY) as server:
        cmd = [sys.executable, "-m", "batchrunner", "run", str(src), "-o", str(out)]
        cmd += ["--base-url", server.base_url, "--concurrency", "16", "-q"]
        env = {**os.environ, "CAICAINI_API_KEY": TEST_KEY}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_for_part_and_segment(out, proc)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    st = read_status(out)
    assert 0 < st.succeeded + st.errored < st.total and st.errored > 0
    assert list((out / "parts").glob("part-*.parquet")) and list((out / "journal").glob("seg-*"))
    for fmt in ("jsonl", "openai-batch"):
        res = run_cli(["export", str(out), "--format", fmt])
        assert res.exit_code == 0, res.stderr
        ids = [line.get("custom_id", line.get("id")) for line in _lines(res.stdout)]
        assert len(ids) == st.succeeded + st.errored, (fmt, len(ids), st)
        order = {row["id"]: i for i, row in enumerate(rows)}
        assert [order[i] for i in ids] == sorted(order[i] for i in set(ids))
    report = json.loads(run_cli(["report", str(out), "--json"]).stdout)
    assert report["status"] == {
        "succeeded": st.succeeded,
        "errored": st.errored,
        "pending": st.pending,
    }


def _wait_for_part_and_segment(out: Path, proc: subprocess.Popen[bytes]) -> None:
    """Until a part is committed and the next segment holds outcomes (a kill lands mid-run)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        parts = list((out / "parts").glob("part-*.parquet")) if (out / "parts").exists() else []
        segments = list((out / "journal").glob("seg-*.jsonl")) if parts else []
        if segments and any(s.stat().st_size > 0 for s in segments):
            return
        time.sleep(0.01)
    raise AssertionError(f"no part and segment before the run ended: {proc.poll()}")


def test_help_and_readme_name_every_format_and_option() -> None:
    """`export --help` lists the formats; README documents every option of both commands."""
    res = run_cli(["export", "--help"])
    for word in ("jsonl", "csv", "openai-batch", "anthropic-batch", "--output"):
        assert word in res.stdout
    assert run_cli(["export", ".", "--format", "xml"]).exit_code == 2
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Reports and exports") :]
    for name in ("report", "export"):
        command = main.get_command(click.Context(main), name)
        assert command is not None
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("-"):
                    assert f"`{opt}" in section or f" {opt}" in section, (name, opt)
        for fmt in ("jsonl", "csv", "openai-batch", "anthropic-batch"):
            assert f"--format {fmt}" in section
