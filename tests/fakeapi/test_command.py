"""`python -m batchrunner.fakeapi`: the command that serves the fake API."""

from __future__ import annotations

import re

import httpx

from tests.fakeserver import FakeServer
from tests.helpers import OPENAI, chat


def test_command_prints_base_url_first_and_stops_cleanly() -> None:
    """`python -m batchrunner.fakeapi --port 0` prints the URL first and exits 0 on SIGTERM."""
    with FakeServer("--latency", "0-0.01", api_key="sub-key") as server:
        assert re.fullmatch(r"listening on http://127\.0\.0\.1:\d+/v1", server.first_line)
        assert not server.base_url.endswith(":0/v1")
        with httpx.Client(base_url=server.base_url) as http:
            ok = http.post(
                "/chat/completions",
                json=chat("hi"),
                headers={"Authorization": "Bearer sub-key"},
            )
            denied = http.post("/chat/completions", json=chat("hi"), headers=OPENAI)
        assert (ok.status_code, denied.status_code) == (200, 401)
        assert server.stats()["status_counts"] == {"200": 1, "401": 1}
        assert [entry["prompt"] for entry in server.log()] == ["hi", "hi"]
        server.reset()
        assert server.stats()["requests_total"] == 0
    assert server.returncode == 0


def test_command_rejects_bad_options() -> None:
    """Unknown fault kinds and malformed latency are usage errors (exit 2)."""
    from click.testing import CliRunner

    from batchrunner.fakeapi.command import fake_api

    runner = CliRunner()
    result = runner.invoke(fake_api, ["--faults", "500,boom"])
    assert result.exit_code == 2 and "boom" in result.stderr
    result = runner.invoke(fake_api, ["--latency", "fast"])
    assert result.exit_code == 2 and "latency" in result.stderr
