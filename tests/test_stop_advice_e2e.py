"""Every run-level stop quotes the server's last error and gives advice that works: each test
stops a run, checks the message, then does literally what it says and sees the run complete.

Stops covered here: a refused key, an unknown model (with nothing recorded, and with rows
recorded), an exhausted quota, the failure breaker (a LiteLLM-style 400 for a bad model).
The cost cap's is in test_costcap.py. Cancelled attempts are logged as such in calls.log.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.fakeserver import FakeServer, serve_on_thread
from tests.helpers import TEST_KEY, run_cli, status_json, write_jsonl
from tests.hostile import HostileState, hostile_api, message

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.fakeserver import Stop

ROWS = 40


def _input(tmp_path: Path, n: int = ROWS) -> Path:
    rows = [{"id": f"r{i}", "prompt": f"question {i}"} for i in range(n)]
    return write_jsonl(tmp_path / "in.jsonl", rows)


def _calls(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "calls.log").read_text().splitlines()]


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_a_refused_key_quotes_the_server_and_the_same_command_with_the_key_completes(
    tmp_path: Path,
) -> None:
    """Wrong key: exit 3 quoting the server's 401 and naming CAICAINI_API_KEY; with the key
    fixed, the same command completes."""
    out = tmp_path / "run"
    wrong = "sk-wrong-9876543210-OTHER"
    with FakeServer(api_key=TEST_KEY) as server:
        args = ["run", str(_input(tmp_path)), "-o", str(out), "--base-url", server.base_url, "-q"]
        refused = run_cli(args, key=wrong)
        assert refused.exit_code == 3, refused.output
        error = _error_line(refused.stderr)
        assert '(HTTP 401 invalid_request_error: "Incorrect API key provided")' in error, error
        assert "check CAICAINI_API_KEY, then run the same command again to resume" in error
        assert wrong not in refused.output
        fixed = run_cli(args)  # CAICAINI_API_KEY checked and fixed; the same command
    assert fixed.exit_code == 0, fixed.output
    assert status_json(out)["succeeded"] == ROWS


def test_an_unknown_model_then_the_same_command_with_model_completes(tmp_path: Path) -> None:
    """--model nope/none: exit 3 quoting the 404 and saying to use --model and run the same
    command again; doing so (nothing was recorded) completes, with a warning naming the
    change. Attempts the stop cancelled on the wire are `cancelled` in calls.log, and no
    line there is all nulls."""
    out = tmp_path / "run"
    with FakeServer("--latency", "0.05-0.2", api_key=TEST_KEY) as server:
        args = ["run", str(_input(tmp_path)), "-o", str(out), "--base-url", server.base_url]
        args += ["--concurrency", "8", "-q"]
        stopped = run_cli([*args, "--model", "nope/none"])
        assert stopped.exit_code == 3, stopped.output
        error = _error_line(stopped.stderr)
        assert "unknown model 'nope/none' (HTTP 404 not_found_error: \"model: nope/none\")" in error
        assert "use --model (or `model` in the job file)" in error
        assert "then run the same command again to resume" in error
        calls = _calls(out)
        resumed = run_cli([*args, "--model", "caicaini/auto"])
        answered = Counter(entry["prompt"] for entry in server.log() if entry["status"] == 200)
    assert resumed.exit_code == 0, resumed.output
    assert "takes this command's input and settings" in resumed.stderr
    assert "settings.request.model: nope/none -> caicaini/auto" in resumed.stderr
    assert status_json(out)["succeeded"] == ROWS and len(answered) == ROWS
    assert {c["error_type"] for c in calls} <= {"not_found_error", "cancelled"}
    # Whether any attempt was on the wire when the 404 came depends on the pacer (its
    # first answers come before the others leave); the stall test covers `cancelled`.
    assert all(c["error_type"] is not None or c["http_status"] is not None for c in calls)


def test_an_unknown_model_with_rows_recorded_says_new_directory_and_that_completes(
    tmp_path: Path,
) -> None:
    """Rows recorded with model old-1, then the API stops serving it: the stop says to name
    a served model in a new run directory (a resume here must keep the model); doing that
    completes, and the first directory kept its rows."""
    src = _input(tmp_path)
    out, new = tmp_path / "run", tmp_path / "run-2"
    with FakeServer("--models", "old-1,caicaini/auto", api_key=TEST_KEY) as server:
        first = ["run", str(src), "-o", str(out), "--model", "old-1", "--limit", "5", "-q"]
        assert run_cli([*first, "--base-url", server.base_url]).exit_code == 0
    with FakeServer("--models", "caicaini/auto", api_key=TEST_KEY) as server:
        args = ["run", str(src), "-o", str(out), "--model", "old-1", "-q"]
        stopped = run_cli([*args, "--base-url", server.base_url])
        assert stopped.exit_code == 3, stopped.output
        error = _error_line(stopped.stderr)
        assert "unknown model 'old-1' (HTTP 404 not_found_error: \"model: old-1\")" in error
        assert "name a model the API serves with --model" in error
        assert "and a new run directory (-o NEW_DIR)" in error
        followed = ["run", str(src), "-o", str(new), "--model", "caicaini/auto", "-q"]
        done = run_cli([*followed, "--base-url", server.base_url])
    assert done.exit_code == 0, done.output
    assert status_json(new)["succeeded"] == ROWS
    assert status_json(out)["succeeded"] == 5


def test_an_exhausted_quota_quotes_the_server_and_completes_once_credit_is_added(
    tmp_path: Path,
) -> None:
    """A 429 insufficient_quota: exit 3 quoting it and saying to add credit; once the account
    has credit again, the same command completes."""
    quota = {
        "error": {
            "message": "You exceeded your current quota, please check your plan",
            "type": "insufficient_quota",
            "code": "insufficient_quota",
        }
    }
    out = tmp_path / "run"
    with hostile_api(HostileState(fail_status=429, fail_body=quota)) as server:
        args = ["run", str(_input(tmp_path)), "-o", str(out), "--base-url", server.base_url, "-q"]
        stopped = run_cli(args)
        assert stopped.exit_code == 3, stopped.output
        error = _error_line(stopped.stderr)
        assert '"You exceeded your current quota, please check your plan"' in error, error
        assert "add credit or raise the spend limit" in error
        assert "then run the same command again to resume" in error
        server.state.fail_status = None  # credit added
        done = run_cli(args)
    assert done.exit_code == 0, done.output
    assert status_json(out)["succeeded"] == ROWS


@dataclass
class _Proxy:
    """A LiteLLM-like proxy: a model it does not know is a 400, not a 404."""

    models: list[str] = field(default_factory=lambda: ["caicaini/auto"])
    seen: Counter[str] = field(default_factory=Counter)


@contextlib.contextmanager
def _litellm_like() -> Iterator[tuple[str, _Proxy]]:
    proxy = _Proxy()

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": m} for m in proxy.models]})

    async def messages(request: web.Request) -> web.Response:
        body = await request.json()
        proxy.seen[body["model"]] += 1
        if body["model"] not in proxy.models:
            text = f"Invalid model name passed in model={body['model']}"
            error = {"type": "error", "error": {"type": "invalid_request_error", "message": text}}
            return web.json_response(error, status=400)
        return web.json_response(message(f"answer to {body['messages'][0]['content']}"))

    async def start() -> tuple[int, Stop]:
        app = web.Application()
        app.router.add_get("/v1/models", models)
        app.router.add_post("/v1/messages", messages)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner.addresses[0][1], runner.cleanup

    with serve_on_thread(start, name="litellm") as port:
        yield f"http://127.0.0.1:{port}/v1", proxy


def test_the_breaker_quotes_the_last_error_points_to_report_and_the_fix_completes(
    tmp_path: Path,
) -> None:
    """The issue's case: a proxy answers 400 "Invalid model name passed in model=nope" to
    every row. The breaker's message quotes it and names `batchrunner report DIR`; that
    report shows the error; the fix (the job file's model) and the same command complete."""
    write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "prompt": f"q {i}"} for i in range(ROWS)])
    job = tmp_path / "job.toml"
    settings = '[job]\ninput = "in.jsonl"\noutput = "run"\n[limits]\nbreaker_window = 10\n'
    job.write_text(settings + '[request]\nmodel = "nope"\n', encoding="utf-8")
    out = tmp_path / "run"
    with _litellm_like() as (base_url, proxy):
        args = ["run", "--job", str(job), "--base-url", base_url, "-q"]
        tripped = run_cli(args)
        assert tripped.exit_code == 3, tripped.output
        error = _error_line(tripped.stderr)
        assert "the last 10 rows all failed" in error
        assert "Invalid model name passed in model=nope" in error, error
        command = re.search(r"`(batchrunner report [^`]+)`", error)
        assert command is not None and command.group(1) == f"batchrunner report {out}"
        report = run_cli(shlex.split(command.group(1))[1:])  # what the message says to run
        assert report.exit_code == 0, report.output
        assert 'invalid_request_error: "Invalid model name passed in model=nope"' in report.stdout
        assert status_json(out)["pending"] == ROWS
        job.write_text(settings + '[request]\nmodel = "caicaini/auto"\n', encoding="utf-8")
        fixed = run_cli(args)  # the cause fixed; the same command
    assert fixed.exit_code == 0, fixed.output
    assert status_json(out)["succeeded"] == ROWS
    assert proxy.seen["caicaini/auto"] == ROWS
