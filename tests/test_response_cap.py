"""The response size cap (`--max-response-bytes`): decoded bytes, never read past it.

Pure tests of the bounded decoder, then whole runs against a hostile server on loopback
that sends oversized bodies, gzip bombs and endless streams to some rows: those rows error
as `response_too_large` after one attempt while the others succeed. A subprocess run with
a 100 MB answer shows the memory it takes stays near the cap.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from batchrunner.bodies import BodyDecoder, BodyTooLarge, too_large_by_length
from batchrunner.errors import RetryableError
from tests.helpers import TEST_KEY, read_results, run_cli, write_jsonl
from tests.hostile import HostileState, gzip_bomb, hostile_api

MB = 1_000_000


# --- the decoder ------------------------------------------------------------------------------


def test_identity_bodies_are_counted_and_stopped_past_the_cap() -> None:
    """Unencoded chunks pass through unchanged until their total passes the cap."""
    decoder = BodyDecoder("", 10)
    assert decoder.feed(b"12345") == [b"12345"]
    assert decoder.feed(b"67890") == [b"67890"]
    with pytest.raises(BodyTooLarge):
        decoder.feed(b"x")


def test_a_gzip_bomb_is_stopped_without_inflating_it() -> None:
    """20 MB of zeros in ~20 KB of gzip, fed as one chunk: at most cap + 1 bytes appear,
    in steps of at most 1 MiB."""
    bomb = gzip.compress(b"\0" * (20 * MB), 9)
    assert len(bomb) < 50_000
    decoder = BodyDecoder("gzip", 3 * MB)
    with pytest.raises(BodyTooLarge):
        decoder.feed(bomb)
    assert decoder.size == 3 * MB + 1
    pieces = BodyDecoder("gzip", 200 * MB).feed(gzip.compress(b"\0" * (5 * MB)))
    assert max(map(len, pieces)) <= BodyDecoder.STEP and sum(map(len, pieces)) == 5 * MB


@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS])
def test_deflate_with_and_without_the_zlib_header(wbits: int) -> None:
    """`deflate` is decoded whether the server sent the zlib wrapper or raw deflate."""
    payload = json.dumps({"text": "hello " * 1000}).encode()
    squeeze = zlib.compressobj(9, zlib.DEFLATED, wbits)
    data = squeeze.compress(payload) + squeeze.flush()
    decoder = BodyDecoder("deflate", 1 << 20)
    out = b"".join(b"".join(decoder.feed(data[i : i + 100])) for i in range(0, len(data), 100))
    assert out + decoder.flush() == payload


def test_gzip_in_small_chunks_round_trips() -> None:
    """A gzip body cut into 7-byte chunks decodes to the original bytes."""
    payload = b'{"a": "' + b"xyz" * 5000 + b'"}'
    data = gzip.compress(payload)
    decoder = BodyDecoder("GZIP", 1 << 20)
    out = b"".join(b"".join(decoder.feed(data[i : i + 7])) for i in range(0, len(data), 7))
    assert out + decoder.flush() == payload


@pytest.mark.parametrize("encoding", ["br", "zstd", "gzip, gzip", "compress"])
def test_encodings_not_asked_for_are_malformed_answers(encoding: str) -> None:
    """Only one layer of gzip or deflate was accepted; anything else is invalid_response."""
    with pytest.raises(RetryableError, match="unsupported Content-Encoding"):
        BodyDecoder(encoding, MB)


def test_corrupt_gzip_is_an_invalid_response() -> None:
    """Bytes that are not gzip under `Content-Encoding: gzip` are retryable, not a crash."""
    with pytest.raises(RetryableError, match="does not decode"):
        BodyDecoder("gzip", MB).feed(b"this is not gzip at all")


def test_content_length_over_the_cap_is_refused_before_reading() -> None:
    """Only an unencoded body's Content-Length says its decoded size."""
    assert too_large_by_length({"content-length": "2000001"}, 2 * MB)
    assert not too_large_by_length({"content-length": "2000000"}, 2 * MB)
    assert not too_large_by_length({"content-length": "9" * 9, "content-encoding": "gzip"}, MB)
    assert not too_large_by_length({"content-length": "junk"}, MB)


# --- whole runs -------------------------------------------------------------------------------


def _results(out: Path) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in read_results(out)}


@pytest.mark.parametrize("stream", [False, True])
def test_oversized_answers_error_their_rows_and_the_rest_succeed(
    tmp_path: Path, stream: bool
) -> None:
    """With a 1 MB cap, 5 MB bodies (chunked, with Content-Length, a gzip bomb of a few KB,
    a 5 MB stream) error as response_too_large after one attempt; the other rows succeed."""
    kinds = ["big-chunked", "big-length", "gzip-bomb"] + (["big-stream"] if stream else [])
    rows = [{"id": kind, "prompt": f"{kind} please"} for kind in kinds]
    rows += [{"id": f"ok{i}", "prompt": f"question {i}"} for i in range(4)]
    rows += [{"id": "gz", "prompt": "gzip-ok please"}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "run"
    with hostile_api(HostileState(big_bytes=5 * MB)) as server:
        assert len(gzip_bomb(5 * MB)) < 20_000  # a few KB on the wire
        res = run_cli(
            [
                "run", str(src), "-o", str(out), "--base-url", server.base_url, "-q",
                "--max-response-bytes", str(MB), "--stream" if stream else "--no-stream",
            ]
        )  # fmt: skip
        prompts = server.state.prompts
    assert res.exit_code == 1, res.output
    results = _results(out)
    for kind in kinds:
        row = results[kind]
        assert (row["status"], row["error_type"], row["attempts"]) == (
            "errored",
            "response_too_large",
            1,
        ), row
        assert row["http_status"] == 200 and "1,000,000 bytes" in row["error_message"]
        assert prompts[f"{kind} please"] == 1  # permanent: never sent again
    for i in range(4):
        assert results[f"ok{i}"]["status"] == "succeeded"
        assert results[f"ok{i}"]["text"] == f"answer to question {i}"
    assert results["gz"]["text"] == "answer in gzip"  # a small gzip answer decodes


def test_an_oversized_error_body_keeps_its_status_meaning(tmp_path: Path) -> None:
    """A 503 with a 5 MB page is not read past the cap and stays a retried api_error."""
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "e", "prompt": "big-error now"}])
    out = tmp_path / "run"
    with hostile_api(HostileState(big_bytes=5 * MB)) as server:
        res = run_cli(
            [
                "run", str(src), "-o", str(out), "--base-url", server.base_url, "-q",
                "--max-response-bytes", str(MB), "--max-attempts", "2",
            ]
        )  # fmt: skip
        sent = server.state.prompts["big-error now"]
    assert res.exit_code == 1, res.output
    row = _results(out)["e"]
    assert (row["error_type"], row["http_status"], row["attempts"]) == ("api_error", 503, 2)
    assert "not read" in row["error_message"] and sent == 2


def test_the_job_file_sets_the_cap_and_bad_values_are_refused(tmp_path: Path) -> None:
    """`[limits] max_response_bytes` works like the flag; a non-positive value is exit 2."""
    write_jsonl(tmp_path / "in.jsonl", [{"id": "b", "prompt": "big-chunked"}])
    job = tmp_path / "job.toml"
    job.write_text(
        '[job]\ninput = "in.jsonl"\noutput = "run"\n[limits]\nmax_response_bytes = 100000\n',
        encoding="utf-8",
    )
    with hostile_api(HostileState(big_bytes=200_000)) as server:
        res = run_cli(["run", "--job", str(job), "--base-url", server.base_url, "-q"])
    assert res.exit_code == 1, res.output
    assert _results(tmp_path / "run")["b"]["error_type"] == "response_too_large"
    job.write_text(job.read_text().replace("100000", "0"), encoding="utf-8")
    res = run_cli(["run", "--job", str(job), "-q"])
    assert res.exit_code == 2 and "max_response_bytes must be" in res.stderr


# Runs the CLI and writes its peak RSS (VmHWM, KiB) to argv[1] at exit. Not ru_maxrss from
# wait4: that also counts the parent's pages, which a forked child maps until its exec.
_PEAK_WRAPPER = """
import atexit, runpy, sys
out = sys.argv.pop(1)
def peak():
    with open("/proc/self/status") as status, open(out, "w") as sink:
        sink.write(next(x for x in status if x.startswith("VmHWM:")).split()[1])
atexit.register(peak)
runpy.run_module("batchrunner", run_name="__main__")
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_peak_memory_of_a_100_mb_answer_stays_near_the_default_cap(tmp_path: Path) -> None:
    """A run meeting a 100 MB chunked answer (no Content-Length) at the default 64 MiB cap
    peaks far below the ~850 MB the whole-body read took; the row is response_too_large."""
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "big", "prompt": "big-chunked"}])
    out, peak = tmp_path / "run", tmp_path / "peak"
    with hostile_api(HostileState(big_bytes=100 * MB)) as server:
        args = ["run", str(src), "-o", str(out), "-q", "--base-url", server.base_url]
        done = subprocess.run(
            [sys.executable, "-c", _PEAK_WRAPPER, str(peak), *args],
            env={**os.environ, "CAICAINI_API_KEY": TEST_KEY},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 1, done.stderr[-2000:]
    peak_mb = int(peak.read_text()) / 1024
    # The interpreter with pyarrow and aiohttp loaded is ~115 MB; the cap adds 64 MiB.
    assert peak_mb < 300, peak_mb
    assert _results(out)["big"]["error_type"] == "response_too_large"
