"""A base URL that is not the API stops at the preflight: no row is sent, none is errored.

Whole runs (CLI in-process) against real sockets on loopback: `https://` to the plain fake
API's port (the TLS handshake fails), a web server answering 404 (or a page) to
everything, and a server that does not speak HTTP at all. Each run stops after at most the
one GET /models, every row pending, with a message naming the URL; `check` says the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from batchrunner.errors import RunAbortedError
from tests.helpers import TEST_KEY, run_cli, status_json, write_jsonl
from tests.hostile import not_http_server, web_server

if TYPE_CHECKING:
    from pathlib import Path

    from click.testing import Result

    from tests.fakeserver import FakeServer

ROWS = 40


def _run(tmp_path: Path, base_url: str, key: str = TEST_KEY) -> tuple[Result, Path]:
    src = write_jsonl(
        tmp_path / "in.jsonl", [{"id": f"r{i}", "prompt": f"q{i}"} for i in range(ROWS)]
    )
    out = tmp_path / "run"
    args = ["run", str(src), "-o", str(out), "--base-url", base_url, "--concurrency", "8", "-q"]
    return run_cli(args, key=key), out


def _assert_stopped(res: Result, out: Path, url: str) -> None:
    assert res.exit_code == RunAbortedError.exit_code, res.output
    assert url in res.stderr and "does not answer like the Caicaini API" in res.stderr
    assert "--base-url" in res.stderr and "Traceback" not in res.output
    st = status_json(out)
    assert (st["total"], st["pending"], st["errored"], st["succeeded"]) == (ROWS, ROWS, 0, 0)
    assert not (out / "results.parquet").exists()


def test_https_to_a_plain_http_port_stops_at_the_handshake(
    tmp_path: Path, shared_api: FakeServer
) -> None:
    """https:// to the plain fake API: the TLS failure is named and no request arrives."""
    url = shared_api.base_url.replace("http://", "https://")
    res, out = _run(tmp_path, url)
    _assert_stopped(res, out, url)
    assert "TLS handshake failed" in res.stderr
    assert shared_api.stats()["requests_total"] == 0


@pytest.mark.parametrize("kind", ["404", "html"])
def test_a_web_server_that_is_no_api_stops_after_one_request(tmp_path: Path, kind: str) -> None:
    """A server answering 404 (or a 200 HTML page) to every path: one GET /models, no row."""
    with web_server(kind) as server:
        res, out = _run(tmp_path, server.base_url)
        paths = list(server.state.paths)
    _assert_stopped(res, out, server.base_url)
    assert paths == ["/v1/models"]
    assert ("HTTP 404" if kind == "404" else "not a JSON object (text/html)") in res.stderr


def test_a_server_that_does_not_speak_http_stops_without_a_traceback(tmp_path: Path) -> None:
    """Bytes that are not HTTP (echoing the key back) stop the run, the key redacted."""
    key = "sk-ECHOED-0123456789abcdef"
    with not_http_server() as server:
        res, out = _run(tmp_path, server.base_url, key=key)
        paths = list(server.state.paths)
    _assert_stopped(res, out, server.base_url)
    assert "not HTTP" in res.stderr and len(paths) <= 2
    assert key not in res.output


def test_check_names_the_url_of_a_web_server(tmp_path: Path) -> None:
    """`batchrunner check` against a plain web server says it is no API, with the URL."""
    with web_server("404") as server:
        res = run_cli(["check", "--base-url", server.base_url])
    assert res.exit_code == RunAbortedError.exit_code, res.output
    url_line = res.stdout.splitlines()[0]
    assert url_line.startswith("base URL  FAIL")
    assert server.base_url in url_line and "HTTP 404" in url_line
    assert "resume" not in res.output and "check failed (base URL)" in res.stderr


def test_a_refused_connection_is_left_to_the_retries(tmp_path: Path) -> None:
    """Nothing listening is no proof of a wrong URL (the API may be restarting): the
    preflight lets the rows' retries meet it, and the failure breaker keeps them pending."""
    job = tmp_path / "job.toml"
    write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "prompt": f"q{i}"} for i in range(ROWS)])
    job.write_text(
        '[job]\ninput = "in.jsonl"\noutput = "run"\n'
        "[limits]\nconcurrency = 2\nmax_attempts = 2\nbreaker_window = 4\n",
        encoding="utf-8",
    )
    res = run_cli(["run", "--job", str(job), "--base-url", "http://127.0.0.1:9/v1", "-q"])
    assert res.exit_code == RunAbortedError.exit_code, res.output
    assert "last 4 rows all failed" in res.stderr and "connection" in res.stderr
    st = status_json(tmp_path / "run")
    assert (st["pending"], st["errored"]) == (ROWS, 0)
