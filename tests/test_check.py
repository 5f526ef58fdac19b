"""`check` against the fake API: one line each for the base URL, the key and the model;
exit 3 when one fails, with messages about `check` (never `run`'s "resume" advice)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.helpers import TEST_KEY, run_cli
from tests.hostile import web_server

if TYPE_CHECKING:
    from click.testing import Result

    from tests.fakeserver import FakeServer


def _lines(res: Result) -> dict[str, tuple[str, str]]:
    """{fact: (state, detail)} from check's three lines."""
    out = {}
    for line in res.stdout.splitlines():
        name, state, detail = line[:9].strip(), line[10:17].strip(), line[18:]
        out[name] = (state, detail)
    assert list(out) == ["base URL", "key", "model"], res.stdout
    return out


def _about_check(res: Result) -> None:
    assert "resume" not in res.output and "Traceback" not in res.output
    assert TEST_KEY not in res.output


def test_all_three_hold(shared_api: FakeServer) -> None:
    """Good URL, good key, a listed model (the default and one named): exit 0, three oks."""
    for extra in ([], ["--model", "caicaini/large"]):
        res = run_cli(["check", "--base-url", shared_api.base_url, *extra])
        assert res.exit_code == 0, res.output
        facts = _lines(res)
        assert facts["base URL"] == ("ok", f"{shared_api.base_url} answers (GET /models: HTTP 200)")
        assert facts["key"] == ("ok", "accepted")
        assert facts["model"] == ("ok", f"{extra[1] if extra else 'caicaini/auto'} is listed")
        assert res.stderr == ""
    assert shared_api.log() == []  # no generation was sent


def test_a_refused_key(shared_api: FakeServer) -> None:
    """A key the server refuses: the URL answers, the key FAILs, the model is not asked."""
    res = run_cli(["check", "--base-url", shared_api.base_url], key="sk-not-the-right-one")
    assert res.exit_code == 3
    facts = _lines(res)
    assert facts["base URL"][0] == "ok" and "HTTP 401" in facts["base URL"][1]
    assert facts["key"][0] == "FAIL" and "check CAICAINI_API_KEY" in facts["key"][1]
    assert facts["model"][0] == "skipped"
    assert res.stderr == "Error: check failed (key): fix it, then run check again\n"
    _about_check(res)


def test_an_unknown_model(shared_api: FakeServer) -> None:
    """A model the API does not list: URL and key ok, the model FAILs naming what is listed."""
    res = run_cli(["check", "--base-url", shared_api.base_url, "--model", "nope"])
    assert res.exit_code == 3
    facts = _lines(res)
    assert facts["base URL"][0] == facts["key"][0] == "ok"
    state, detail = facts["model"]
    assert state == "FAIL" and detail.startswith("nope is not listed (the API lists 3: ")
    assert "caicaini/auto" in detail and "--model" in detail
    assert res.stderr == "Error: check failed (model): fix it, then run check again\n"
    _about_check(res)


def test_no_answer_and_no_api() -> None:
    """Nothing listening, or a web server that is no API: the URL FAILs, the rest skipped."""
    res = run_cli(["check", "--base-url", "http://127.0.0.1:9/v1"])
    assert res.exit_code == 3
    facts = _lines(res)
    assert (
        facts["base URL"][0] == "FAIL"
        and "no answer from http://127.0.0.1:9/v1" in (facts["base URL"][1])
    )
    assert facts["key"][0] == facts["model"][0] == "skipped"
    with web_server("html") as server:
        page = run_cli(["check", "--base-url", server.base_url])
    assert page.exit_code == 3
    state, detail = _lines(page)["base URL"]
    assert state == "FAIL" and "does not answer like the Caicaini API" in detail
    _about_check(res)
    _about_check(page)
