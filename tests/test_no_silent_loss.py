"""Issue 9: no outcome is dropped on its way to results.parquet, whatever the server sends.

A small hostile server in this file (stdlib, 127.0.0.1) answers each row by its prompt:
a 5 MB text, token counts no int64 holds, a 3 MB tool_use input. The runner is the real
CLI, in-process; the run dir is real files.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
import pytest

from tests.helpers import TEST_KEY, run_cli, wait_for_traffic, write_jsonl

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

BIG_TEXT = "".join(f"{i:07d} lorem ipsum dolor sit amet, ä €\n" for i in range(125_000))  # 5 MB
TOOL_INPUT = {"rows": [{"n": i, "cell": "x" * 24} for i in range(90_000)]}  # ~3 MB of JSON
CARRIED = "é" * (1 << 20)  # 2 MiB as UTF-8
HUGE = {"1e30": 10**30, "2^63": 2**63}


def kill_answer(prompt: str) -> str:
    """The kill test's rows: every 20th answer is 1.1 MB (its journal line is over 2 MiB)."""
    n = int(prompt.split()[1])
    return f"{prompt}: " + ("x" * (1_100_000 + n) if n % 20 == 0 else "short")


def _message(prompt: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": f"answer to {prompt}"}]
    usage: dict[str, Any] = {"input_tokens": 11, "output_tokens": 7}
    if prompt.startswith("kill "):
        time.sleep(0.03)  # so that a kill lands while requests are in flight
        content = [{"type": "text", "text": kill_answer(prompt)}]
    elif prompt == "big":
        content = [{"type": "text", "text": BIG_TEXT}]
    elif prompt == "tool":
        content.append({"type": "tool_use", "id": "toolu_1", "name": "store", "input": TOOL_INPUT})
    elif prompt in HUGE:
        usage["input_tokens"] = HUGE[prompt]
    return {
        "id": f"msg_{prompt}",
        "type": "message",
        "role": "assistant",
        "model": "hostile-1",
        "content": content,
        "stop_reason": "end_turn",
        "usage": usage,
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms stalls

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest would show every request otherwise."""

    def _send(self, body: object) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send({"data": [{"id": "hostile-1", "type": "model"}]})

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self._send(_message(request["messages"][0]["content"]))


@pytest.fixture(scope="module")
def hostile() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def _run(tmp_path: Path, base_url: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "run"
    res = run_cli(["run", str(src), "-o", str(out), "--base-url", base_url, "-q"])
    assert res.exit_code == 0, res.stderr
    assert f"{len(rows)} rows: {len(rows)} succeeded, 0 errored" in res.stdout
    results: list[dict[str, Any]] = pq.read_table(out / "results.parquet").to_pylist()
    assert [r["id"] for r in results] == [r["id"] for r in rows]
    assert not list((out / "journal").iterdir())  # converted, and only then deleted
    return results


def test_a_5_mb_answer_is_kept_whole(tmp_path: Path, hostile: str) -> None:
    """3 rows, one answered with 5 MB of text: 3 rows in results.parquet, the text intact."""
    rows = [{"id": f"q{i}", "prompt": p} for i, p in enumerate(["small", "big", "small too"])]
    results = _run(tmp_path, hostile, rows)
    assert len(BIG_TEXT.encode()) > 5_000_000
    assert results[1]["text"] == BIG_TEXT
    assert json.loads(results[1]["response"])["content"][0]["text"] == BIG_TEXT
    assert results[0]["text"] == "answer to small" and results[2]["text"] == "answer to small too"


def test_token_counts_no_int64_holds_are_null_with_a_note(tmp_path: Path, hostile: str) -> None:
    """usage.input_tokens of 10^30 or 2^63: every row recorded, that count null, said why."""
    rows = [{"id": f"q{i}", "prompt": p} for i, p in enumerate(["a", "1e30", "2^63", "b"])]
    results = _run(tmp_path, hostile, rows)
    assert [r["input_tokens"] for r in results] == [11, None, None, 11]
    assert [r["output_tokens"] for r in results] == [7, 7, 7, 7]
    assert results[1]["error_message"] == (
        f"input_tokens {10**30} does not fit int64; stored as null"
    )
    assert results[2]["error_message"] == f"input_tokens {2**63} does not fit int64; stored as null"
    assert json.loads(results[1]["response"])["usage"]["input_tokens"] == 10**30  # exact
    assert results[0]["error_message"] is None and results[3]["error_message"] is None


def test_a_2_mb_carried_field_and_a_3_mb_tool_input_survive(tmp_path: Path, hostile: str) -> None:
    """A 2 MiB carried-through field and a ~3 MB tool_use input come out unchanged."""
    rows = [
        {"id": "carry", "prompt": "plain", "note": CARRIED},
        {"id": "tool", "prompt": "tool", "note": "short"},
        {"id": "third", "prompt": "plain again", "note": "short"},
    ]
    results = _run(tmp_path, hostile, rows)
    assert [r["note"] for r in results] == [CARRIED, "short", "short"]
    tool = json.loads(results[1]["response"])["content"][1]
    assert len(json.dumps(TOOL_INPUT)) > 3_000_000
    assert tool["type"] == "tool_use" and tool["input"] == TOOL_INPUT


@pytest.mark.crash
def test_kill_9_five_times_with_big_answers_keeps_every_id_once(
    tmp_path: Path, hostile: str
) -> None:
    """5 SIGKILLs at random moments while >1 MB answers are journaled: each id once, intact."""
    rng = random.Random(9)
    rows = [{"id": f"k{i:03d}", "prompt": f"kill {i}"} for i in range(250)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "batchrunner", "run", str(src), "-o", str(out)]
    cmd += ["--base-url", hostile, "--concurrency", "4", "-q"]
    env = {**os.environ, "CAICAINI_API_KEY": TEST_KEY}
    kills = 0
    for _ in range(5):
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        wait_for_traffic(out, proc)
        # At most 4 / 0.03 s = 133 rows/s: 5 runs of under 0.4 s cannot finish 250 rows.
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=60)
    final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert final.returncode == 0, final.stderr
    assert kills == 5, "every kill lands while the run is going"
    results = pq.read_table(out / "results.parquet").to_pylist()
    assert [r["id"] for r in results] == [r["id"] for r in rows]
    assert [r["text"] for r in results] == [kill_answer(r["prompt"]) for r in rows]
    assert not list(out.rglob("*.tmp"))
