"""Helpers the tests share: the CLI in-process, run directories, child runs, fake-API bodies.

Fixtures live in conftest.py; what a test module imports lives here, once (pytest advises
against importing conftest). A helper only one test module needs stays in that module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
from click.testing import CliRunner
from click.testing import Result as CliResult

from batchrunner.cli import main
from batchrunner.records import Result
from batchrunner.rundir.journal import encode_result
from batchrunner.rundir.lines import parse_lines
from batchrunner.rundir.parts import write_part
from batchrunner.rundir.writer import RunDir

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from batchrunner.records import Status
    from batchrunner.rundir import parts as part_files

# The API key of every test run; tests check it never appears in any output.
TEST_KEY = "sk-test-0123456789-SECRET"
# The fingerprint of a test run directory, when the test does not care what it holds.
FP: dict[str, object] = {"input": {"size": 1}, "settings": {}}

# -- the CLI in-process, and its input files ---------------------------------------------


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write `rows` as UTF-8 JSON Lines, one object a line."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run_cli(
    args: Sequence[str], *, key: str | None = TEST_KEY, env: dict[str, str] | None = None
) -> CliResult:
    """Invoke `batchrunner ARGS` in-process with stdout and stderr kept apart."""
    full_env = {"CAICAINI_API_KEY": key or "", "CAICAINI_BASE": "http://127.0.0.1:9/v1"}
    full_env.update(env or {})
    return CliRunner().invoke(main, list(args), env=full_env, catch_exceptions=False)


# -- results and run directories -------------------------------------------------------


def make_result(i: int, status: Status = "succeeded", **fields: Any) -> Result:
    """Result of row `i` (id `r{i}`), completed `i` seconds after the epoch unless `fields` say."""
    values: dict[str, Any] = {"completed_at_us": 1_000_000 * i, "id": f"r{i}", **fields}
    return Result(index=i, status=status, **values)


def journal_lines(results: list[Result]) -> bytes:
    """The journal lines of `results`, in order."""
    return b"".join(encode_result(r) for r in results)


def make_part(tmp_path: Path, seq: int, results: list[Result]) -> part_files.PartOutcomes:
    """Write `results` as part `seq` under `tmp_path/parts`, as a commit would."""
    parts = tmp_path / "parts"
    parts.mkdir(exist_ok=True)
    table, warnings = parse_lines(journal_lines(results))
    assert warnings == []
    written = write_part(parts, seq, [table], run_dir=tmp_path)
    assert written is not None
    return written


def open_run(
    path: Path, total: int = 10, *, fingerprint: Mapping[str, object] = FP, **options: Any
) -> RunDir:
    """`RunDir.open` as a plain run opens it (no --retry-errors, process durability)."""
    settings: dict[str, Any] = {"retry_errors": False, "durability": "process", **options}
    return RunDir.open(path, fingerprint=fingerprint, total_rows=total, **settings)


def commit_all(rd: RunDir) -> None:
    """Seal what was recorded and commit it as a part."""
    sealed = rd.seal()
    assert sealed is not None
    rd.commit(sealed)


def read_results(out: Path) -> list[dict[str, Any]]:
    """The rows of `out/results.parquet`, in order."""
    rows: list[dict[str, Any]] = pq.read_table(out / "results.parquet").to_pylist()
    return rows


def status_json(out: Path) -> dict[str, Any]:
    """`batchrunner status OUT --json`, which must succeed."""
    res = run_cli(["status", str(out), "--json"])
    assert res.exit_code == 0, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return data


# -- input files and runs in a child process -------------------------------------------


def file_with_line_7(tmp_path: Path, line: str) -> Path:
    """A 21-row JSONL input whose 7th line is `line` and the rest valid prompts."""
    lines = [json.dumps({"id": f"r{i}", "prompt": f"valid prompt {i}"}) for i in range(21)]
    lines[6] = line
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return src


def start_run(src: Path | str, out: Path, base_url: str, *extra: str) -> subprocess.Popen[str]:
    """`python -m batchrunner run SRC -o OUT --base-url URL -q EXTRA` as a child process."""
    cmd = [sys.executable, "-m", "batchrunner", "run", str(src), "-o", str(out)]
    cmd += ["--base-url", base_url, "-q", *extra]
    env = {**os.environ, "CAICAINI_API_KEY": TEST_KEY}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_traffic(out: Path, proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    """Block until this runner has logged new attempts (so a kill lands mid-run), or ends."""
    log = out / "calls.log"
    before = log.stat().st_size if log.exists() else 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None or (log.exists() and log.stat().st_size > before):
            return
        time.sleep(0.02)
    raise AssertionError("the runner sent nothing within the timeout")


# -- requests to the fake API ----------------------------------------------------------

# Each convention's headers with the key "k" (a fake started without --api-key takes any key).
ANTHROPIC = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
OPENAI = {"Authorization": "Bearer k"}


def ask(prompt: str, **fields: Any) -> dict[str, Any]:
    """A `POST /v1/messages` body for one user prompt."""
    return {
        "model": "caicaini/auto",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": prompt}],
        **fields,
    }


def chat(prompt: str, **fields: Any) -> dict[str, Any]:
    """A `POST /v1/chat/completions` body for one user prompt."""
    return {"model": "caicaini/auto", "messages": [{"role": "user", "content": prompt}], **fields}


def sse_data(text: str) -> list[Any]:
    """The JSON payloads of every `data:` line (`[DONE]` kept as a string)."""
    lines = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    return [line if line == "[DONE]" else json.loads(line) for line in lines]
