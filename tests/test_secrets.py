"""The key is nowhere: not in the run directory (run.json included), not on stdout or
stderr, not in a traceback; with `-v`, with a refused key, and against a server that
echoes the Authorization header into its error bodies. And plain http:// to a host that
is not loopback gets a warning before the key is sent.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
import pytest
from aiohttp import web

from batchrunner.config import plain_http_warning
from tests.fakeserver import FakeServer, serve_on_thread
from tests.helpers import TEST_KEY, run_cli, write_jsonl

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from click.testing import Result

    from tests.fakeserver import Stop

SENTINEL = "sk-SENTINEL-4b9e2f7a1c3d"


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _assert_nowhere(out: Path, *results: Result) -> None:
    """Not in any byte of any file under `out`, any decoded Parquet value, or any output."""
    for res in results:
        assert SENTINEL not in res.stdout + res.stderr
        assert "Traceback" not in res.stderr
    files = [path for path in out.rglob("*") if path.is_file()]
    assert any(path.name == "run.json" for path in files)
    for path in files:
        assert SENTINEL.encode() not in path.read_bytes(), path
        if path.suffix == ".parquet":
            for text in _strings(pq.read_table(path).to_pylist()):
                assert SENTINEL not in text, (path, text)


def _rows(*prompts: str) -> list[dict[str, str]]:
    return [{"id": f"r{i}", "prompt": prompt} for i, prompt in enumerate(prompts)]


def test_a_good_run_leaves_the_key_nowhere(tmp_path: Path) -> None:
    """A plain successful run with -v: the key is in no file and no output."""
    src = write_jsonl(tmp_path / "in.jsonl", _rows(*(f"question {i}" for i in range(6))))
    out = tmp_path / "run"
    with FakeServer() as server:  # accepts any key
        res = run_cli(
            ["run", str(src), "-o", str(out), "--base-url", server.base_url, "-v"], key=SENTINEL
        )
        checked = run_cli(["check", "--base-url", server.base_url], key=SENTINEL)
    assert res.exit_code == 0, res.stderr
    assert checked.exit_code == 0, checked.output
    _assert_nowhere(out, res, checked)


def test_a_refused_key_with_verbose_leaves_it_nowhere(tmp_path: Path) -> None:
    """The server refuses the key (401): the run stops (exit 3) and says so with -v, and
    neither the stop message, the summary, calls.log nor run.json holds the key."""
    src = write_jsonl(tmp_path / "in.jsonl", _rows("a", "b"))
    out = tmp_path / "run"
    with FakeServer(api_key=TEST_KEY) as server:
        res = run_cli(
            ["run", str(src), "-o", str(out), "--base-url", server.base_url, "-v"], key=SENTINEL
        )
        checked = run_cli(["check", "--base-url", server.base_url], key=SENTINEL)
    assert res.exit_code == 3 and "the API key was refused" in res.stderr
    assert checked.exit_code == 3 and "key       FAIL    refused (HTTP 401" in checked.stdout
    _assert_nowhere(out, res, checked)


def _echo_app() -> web.Application:
    """A server that puts the Authorization header it got into every error it sends: the
    message, the type, a request-id header; `ok` prompts get a normal answer."""

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "caicaini/auto"}]})

    async def messages(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        prompt = (await request.json())["messages"][0]["content"]
        if prompt == "ok":
            answer = {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "caicaini/auto",
                "content": [{"type": "text", "text": "fine"}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 1, "output_tokens": 1},
            }
            return web.json_response(answer)
        status, kind = (529, "overloaded_error") if prompt == "busy" else (400, prompt)
        error = {"type": kind, "message": f"bad header Authorization: {auth} (got {auth!r})"}
        body = {"type": "error", "error": error, "echo": {"authorization": auth}}
        return web.json_response(body, status=status, headers={"request-id": f"req {auth}"})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/messages", messages)
    return app


def _serve_echo() -> Any:
    async def start() -> tuple[int, Stop]:
        runner = web.AppRunner(_echo_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner.addresses[0][1], runner.cleanup

    return serve_on_thread(start, name="echo")


def test_a_server_echoing_the_authorization_header_gets_it_nowhere(tmp_path: Path) -> None:
    """Errors that quote `Authorization: Bearer <key>` (message, request id, a field of the
    body; a 400 and a retried 529): recorded and shown with -v, the key redacted away."""
    src = write_jsonl(tmp_path / "in.jsonl", _rows("ok", "invalid_request_error", "busy", "ok"))
    out = tmp_path / "run"
    with _serve_echo() as port:
        base = f"http://127.0.0.1:{port}/v1"
        args = ["run", str(src), "-o", str(out), "--base-url", base, "-v", "--max-attempts", "2"]
        res = run_cli(args, key=SENTINEL)
    assert res.exit_code == 1, res.output  # the two echoing rows errored
    assert "errors this run: invalid_request_error 1, overloaded_error 1" in res.stdout
    rows = {r["id"]: r for r in pq.read_table(out / "results.parquet").to_pylist()}
    assert "[redacted]" in rows["r1"]["error_message"]
    assert rows["r2"]["attempts"] == 2  # the 529 was retried, and echoed twice
    _assert_nowhere(out, res)


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("https://api.example.com/v1", False),
        ("http://127.0.0.1:8765/v1", False),
        ("http://127.8.9.10/v1", False),
        ("http://localhost:8080/v1", False),
        ("http://proxy.localhost/v1", False),
        ("http://[::1]:8080/v1", False),
        ("http://[::ffff:127.0.0.1]:8080/v1", False),
        ("http://api.example.com/v1", True),
        ("http://10.0.0.5:4000/v1", True),
        ("http://[2001:db8::1]/v1", True),
        ("HTTP://Api.Example.com/v1", True),
    ],
)
def test_plain_http_to_a_host_that_is_not_loopback_is_warned(url: str, warned: bool) -> None:
    """Only http:// to a host that is not this machine carries the key in the clear."""
    message = plain_http_warning(url)
    assert (message is not None) is warned
    if message is not None:
        assert "sent unencrypted" in message and "use https://" in message


def test_a_run_warns_before_sending_the_key_over_plain_http(
    tmp_path: Path, shared_api: FakeServer
) -> None:
    """The warning is on stderr and in run.json's warnings. (Shown on a resume of a
    finished run, which sends nothing, so no test traffic leaves loopback.)"""
    src = write_jsonl(tmp_path / "in.jsonl", _rows("a"))
    out = tmp_path / "run"
    done = run_cli(["run", str(src), "-o", str(out), "--base-url", shared_api.base_url, "-q"])
    assert done.exit_code == 0 and "unencrypted" not in done.stderr
    far = run_cli(["run", str(src), "-o", str(out), "--base-url", "http://198.51.100.7/v1", "-q"])
    assert far.exit_code == 0, far.stderr
    assert far.stderr.startswith("warning: the API key will be sent unencrypted: ")
    assert "http://198.51.100.7 is plain http://" in far.stderr
    history = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert "unencrypted" in history["invocations"][-1]["warnings"][0]
    assert len(shared_api.log()) == 1


def test_check_warns_about_plain_http_too(
    shared_api: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`check` gives the same warning before it sends the key (the judgement itself is
    tested above; here a loopback URL stands in, so nothing leaves the machine)."""
    monkeypatch.setattr("batchrunner.cli.plain_http_warning", lambda url: f"plain {url}")
    res = run_cli(["check", "--base-url", shared_api.base_url])
    assert res.exit_code == 0, res.output
    assert res.stderr == f"warning: plain {shared_api.base_url}\n"
