"""Fault injection and rate limits of the fake API, observed with raw httpx requests."""

from __future__ import annotations

import email.utils
import json
import re
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from batchrunner.fakeapi import FakeOptions
from batchrunner.fakeapi.limits import RateLimits, go_duration, rfc3339
from tests.fakeserver import serve_in_thread
from tests.helpers import ANTHROPIC, OPENAI, ask, chat

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.fakeserver import ThreadServer


def always(kind: str, **options: Any) -> Any:
    """A server whose first request per content fails with `kind`, then answers."""
    return serve_in_thread(fault_rate=1.0, faults=(kind,), fault_max_per_prompt=1, **options)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def post_messages(http: httpx.Client, server: ThreadServer, body: dict[str, Any]) -> httpx.Response:
    return http.post(server.base_url + "/messages", json=body, headers=ANTHROPIC)


def post_chat(http: httpx.Client, server: ThreadServer, body: dict[str, Any]) -> httpx.Response:
    return http.post(server.base_url + "/chat/completions", json=body, headers=OPENAI)


# -- status faults ---------------------------------------------------------------------


def test_429_with_integer_and_fractional_retry_after(http: httpx.Client) -> None:
    """429 sends retry-after; a fractional value adds retry-after-ms (retry-after: its ceiling)."""
    with always("429") as server:
        response = post_messages(http, server, ask("a"))
        assert response.status_code == 429
        assert response.json()["error"]["type"] == "rate_limit_error"
        assert response.headers["retry-after"] == "1"
        assert "retry-after-ms" not in response.headers
        assert post_messages(http, server, ask("a")).status_code == 200
    with always("429", fault_retry_after=0.25) as server:
        response = post_chat(http, server, chat("a"))
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
        assert (response.headers["retry-after"], response.headers["retry-after-ms"]) == ("1", "250")
        assert server.state.log_list()[0]["retry_after"] == 0.25


def test_429_ms_and_429_date_variants(http: httpx.Client) -> None:
    """429-ms sends only retry-after-ms; 429-date sends retry-after as an HTTP-date."""
    with always("429-ms", fault_retry_after=1.5) as server:
        response = post_messages(http, server, ask("a"))
        assert response.headers["retry-after-ms"] == "1500"
        assert "retry-after" not in response.headers
    with always("429-date", fault_retry_after=30) as server:
        response = post_messages(http, server, ask("a"))
        when = email.utils.parsedate_to_datetime(response.headers["retry-after"])
        assert 20 < when.timestamp() - time.time() <= 32


@pytest.mark.parametrize(
    ("kind", "messages_type", "chat_type", "retry"),
    [
        ("500", "api_error", "server_error", False),
        ("503", "api_error", "service_unavailable_error", True),
        ("529", "overloaded_error", "server_error", True),
    ],
)
def test_json_status_faults(
    http: httpx.Client, kind: str, messages_type: str, chat_type: str, retry: bool
) -> None:
    """500/503/529 are JSON errors in each convention's shape; 503/529 carry retry-after."""
    with always(kind) as server:
        response = post_messages(http, server, ask("a"))
        assert response.status_code == int(kind)
        assert response.json()["error"]["type"] == messages_type
        assert response.json()["request_id"] == response.headers["request-id"]
        assert ("retry-after" in response.headers) is retry
        response = post_chat(http, server, chat("a"))
        assert response.status_code == int(kind)
        assert response.json()["error"]["type"] == chat_type
        assert server.state.fault_counts[kind] == 2


@pytest.mark.parametrize("kind", ["502", "504"])
def test_proxy_faults_send_html(http: httpx.Client, kind: str) -> None:
    """502/504 come with a non-JSON HTML page, the way a proxy sends them."""
    with always(kind) as server:
        response = post_chat(http, server, chat("a"))
        assert response.status_code == int(kind)
        assert response.headers["content-type"].startswith("text/html")
        assert response.text.startswith("<html>") and kind in response.text
        with pytest.raises(json.JSONDecodeError):
            response.json()


# -- transport faults ------------------------------------------------------------------


def test_reset_closes_the_connection_before_any_response(http: httpx.Client) -> None:
    """reset: the client sees a transport error, no status; the retry is answered."""
    with always("reset") as server:
        with pytest.raises(httpx.TransportError):
            post_messages(http, server, ask("a"))
        assert post_messages(http, server, ask("a")).status_code == 200
        first = server.state.log_list()[0]
        assert (first["fault"], first["status"]) == ("reset", None)
        assert server.state.stats()["status_counts"] == {"200": 1}


def test_truncate_sends_half_the_announced_body(http: httpx.Client) -> None:
    """truncate: Content-Length announced, half sent, connection closed."""
    with always("truncate") as server:
        with pytest.raises(httpx.RemoteProtocolError, match=r"incomplete|complete message body"):
            post_chat(http, server, chat("a"))
        assert post_chat(http, server, chat("a")).status_code == 200


def test_badjson_is_a_200_with_invalid_json(http: httpx.Client) -> None:
    """badjson: status 200, JSON content type, a body that does not parse."""
    with always("badjson") as server:
        response = post_messages(http, server, ask("a"))
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        with pytest.raises(json.JSONDecodeError):
            response.json()
        assert server.state.answers_total == 0


def test_hang_never_answers(http: httpx.Client) -> None:
    """hang: the request gets no answer at all (the client's read timeout fires)."""
    with always("hang") as server:
        with pytest.raises(httpx.ReadTimeout):
            http.post(server.base_url + "/messages", json=ask("a"), headers=ANTHROPIC, timeout=0.3)
        assert post_messages(http, server, ask("a")).status_code == 200


def test_stream_error_after_some_deltas(http: httpx.Client) -> None:
    """stream-error: an error event (messages) / error chunk (chat) follows some deltas."""
    with always("stream-error") as server:
        text = post_messages(http, server, ask("a", stream=True)).text
        assert "event: content_block_delta" in text
        assert text.endswith(
            'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
            '"message":"Overloaded"}}\n\n'
        )
        assert "message_stop" not in text
        text = post_chat(http, server, chat("a", stream=True)).text
        last = text.strip().splitlines()[-1]
        assert json.loads(last.removeprefix("data: "))["error"]["type"] == "server_error"
        assert '"content":' in text and "[DONE]" not in text
        assert server.state.answers_total == 0
        assert "message_stop" in post_messages(http, server, ask("a", stream=True)).text


def test_stream_cut_closes_mid_stream(http: httpx.Client) -> None:
    """stream-cut: the connection closes after some deltas, before message_stop."""
    with always("stream-cut") as server:
        received: list[str] = []
        with (
            pytest.raises(httpx.RemoteProtocolError),
            http.stream(
                "POST", server.base_url + "/messages", json=ask("a", stream=True), headers=ANTHROPIC
            ) as response,
        ):
            assert response.status_code == 200
            received.extend(response.iter_lines())
        assert any(line == "event: content_block_delta" for line in received)
        assert "event: message_stop" not in received


def test_stream_and_plain_kinds_apply_to_their_own_requests(http: httpx.Client) -> None:
    """Plain requests never get stream faults; streamed ones get stream faults and, like a
    real service, status faults before the stream starts, but never plain-body faults."""
    with serve_in_thread(fault_rate=1.0, faults=("500", "stream-error")) as server:
        assert post_messages(http, server, ask("a")).status_code == 500
        kinds = set()
        for i in range(40):
            streamed = post_messages(http, server, ask(f"b{i}", stream=True))
            if streamed.status_code == 500:
                kinds.add("500")
            else:
                assert streamed.status_code == 200 and "event: error" in streamed.text
                kinds.add("stream-error")
        assert kinds == {"500", "stream-error"}
    with serve_in_thread(fault_rate=1.0, faults=("badjson", "truncate")) as server:
        streamed = post_messages(http, server, ask("c", stream=True))
        assert streamed.status_code == 200 and "message_stop" in streamed.text
    with serve_in_thread(fault_rate=1.0, faults=("stream-cut",)) as server:
        assert post_messages(http, server, ask("a")).status_code == 200
        assert server.state.fault_counts == {}


# -- the fault plan ---------------------------------------------------------------------


def test_fault_max_per_prompt_then_answered(http: httpx.Client) -> None:
    """Each content fails at most --fault-max-per-prompt times, then is always answered."""
    with serve_in_thread(fault_rate=1.0, faults=("500", "503"), fault_max_per_prompt=2) as server:
        statuses = {
            prompt: [post_messages(http, server, ask(prompt)).status_code for _ in range(4)]
            for prompt in ("p1", "p2", "p3")
        }
        for codes in statuses.values():
            assert codes[2:] == [200, 200]
            assert all(code in (500, 503) for code in codes[:2])
        http.post(server.root + "/_fake/reset")
        assert post_messages(http, server, ask("p1")).status_code in (500, 503)


def fault_trace(seed: int, rate: float) -> list[str | None]:
    """The fault kinds 40 prompts x 2 attempts meet on a fresh server."""
    with serve_in_thread(seed=seed, fault_rate=rate, faults=("500", "429")) as server:
        with httpx.Client(base_url=server.base_url) as client:
            for _attempt in range(2):
                for i in range(40):
                    client.post("/messages", json=ask(f"row {i}"), headers=ANTHROPIC)
        return [entry["fault"] for entry in server.state.log_list()]


def test_faults_are_deterministic_per_seed() -> None:
    """The same seed replays the same faults; another seed gives another plan."""
    first = fault_trace(7, 0.4)
    assert first == fault_trace(7, 0.4)
    assert first != fault_trace(8, 0.4)
    faulted = sum(kind is not None for kind in first)
    assert 10 <= faulted <= 55
    assert {kind for kind in first if kind} == {"500", "429"}


def test_latency_delays_answers() -> None:
    """--latency holds each answer at least that long before it is sent."""
    with serve_in_thread(latency=(0.2, 0.2)) as server, httpx.Client() as client:
        started = time.monotonic()
        client.post(server.base_url + "/messages", json=ask("slow"), headers=ANTHROPIC)
        assert time.monotonic() - started >= 0.2


# -- server-side rate limit -------------------------------------------------------------


def test_rate_limit_refuses_over_the_limit_with_headers(http: httpx.Client) -> None:
    """Over --rate-limit-rpm: 429 with retry-after(-ms) and both header families."""
    with serve_in_thread(rate_limit_rpm=2) as server:
        first = post_messages(http, server, ask("a"))
        assert first.headers["anthropic-ratelimit-requests-limit"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert post_chat(http, server, chat("b")).status_code == 200
        refused = post_messages(http, server, ask("c"))
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert 25 <= int(refused.headers["retry-after"]) <= 30
        assert 25_000 <= int(refused.headers["retry-after-ms"]) <= 30_000
        assert refused.headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert re.fullmatch(r"\d+(\.\d+)?s", refused.headers["x-ratelimit-reset-requests"])
        refused = post_chat(http, server, chat("d"))
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert server.state.log_list()[-1]["retry_after"] > 25
        assert http.get(server.base_url + "/models", headers=OPENAI).status_code == 200


def test_rate_limits_report_the_most_depleted_bucket() -> None:
    """With rps and rpm both set, admission needs both and headers show the emptier one."""
    now = [100.0]
    limits = RateLimits(FakeOptions(rate_limit_rps=1, rate_limit_rpm=100), clock=lambda: now[0])
    assert limits.admit() is None
    assert limits.admit() == pytest.approx(1.0)
    headers = limits.headers()
    assert headers["x-ratelimit-limit-requests"] == "1"
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "1s"
    now[0] += 0.25
    assert limits.admit() == pytest.approx(0.75)
    now[0] += 0.75
    assert limits.admit() is None
    assert limits.headers()["x-ratelimit-remaining-requests"] == "0"
    unlimited = RateLimits(FakeOptions(), clock=lambda: now[0])
    assert all(unlimited.admit() is None for _ in range(1000))
    assert int(unlimited.headers()["x-ratelimit-remaining-requests"]) >= 999_000


def test_header_formats() -> None:
    """Go durations and RFC 3339 instants are spelled the way the services spell them."""
    assert [go_duration(s) for s in (0, 0.02, 1, 1.5, 360, 3723.25)] == [
        "0s",
        "20ms",
        "1s",
        "1.5s",
        "6m0s",
        "1h2m3.25s",
    ]
    assert rfc3339(0.2) == "1970-01-01T00:00:01Z"


def test_options_reject_nonsense() -> None:
    """FakeOptions names every problem in one ValueError."""
    with pytest.raises(ValueError, match=r"latency.*fault rate.*unknown fault kind\(s\) boom"):
        FakeOptions(latency=(2, 1), fault_rate=3, faults=("boom",))
