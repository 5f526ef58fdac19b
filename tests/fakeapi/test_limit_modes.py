"""The fake API's rate-limit modes: a sliding second announced per minute, a fixed window
with LiteLLM's headers, no rate-limit headers at all, and refusals answered at once."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from batchrunner.fakeapi import FakeOptions
from batchrunner.fakeapi.limits import RateLimits
from tests.fakeserver import serve_in_thread
from tests.helpers import ANTHROPIC, OPENAI, ask, chat


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def limits(clock: Clock, **options: Any) -> RateLimits:
    return RateLimits(FakeOptions(**options), clock=clock)


def test_sliding_admits_n_in_any_second_and_announces_a_minute() -> None:
    """3 per sliding second: the 4th within a second waits for the oldest to leave; the
    headers name a per-minute limit (refusals only) and a per-minute remaining."""
    clock = Clock()
    sliding = limits(clock, rate_limit_mode="sliding", rate_limit_rps=3)
    for step in (0.0, 0.3, 0.3):
        clock.now += step
        assert sliding.admit() is None
    clock.now += 0.1  # 0.7 s after the first
    assert sliding.admit() == pytest.approx(0.3)
    assert sliding.headers() == {"x-ratelimit-remaining-requests": "177"}
    assert sliding.headers(refused=True) == {
        "x-ratelimit-remaining-requests": "177",
        "x-ratelimit-limit-requests": "180",
    }
    assert sliding.refusal(0.3) == ({"retry-after": "1"}, 1.0)
    clock.now += 0.31  # the first admission left the window; the second is 0.7 s old
    assert sliding.admit() is None
    assert sliding.admit() == pytest.approx(0.29)
    clock.now += 60
    assert sliding.headers()["x-ratelimit-remaining-requests"] == "180"


def test_fixed_window_counts_per_window_and_gives_no_reset() -> None:
    """2 per 5 s window: limit and remaining but no reset; the refusal waits for the next
    window and says so only as llm_provider-retry-after."""
    clock = Clock()
    fixed = limits(clock, rate_limit_mode="fixed", rate_limit_rpm=2, rate_limit_window=5)
    assert fixed.admit() is None
    assert fixed.headers() == {
        "x-ratelimit-limit-requests": "2",
        "x-ratelimit-remaining-requests": "1",
    }
    clock.now += 1.0
    assert fixed.admit() is None
    assert fixed.admit() == pytest.approx(4.0)
    assert fixed.refusal(3.2) == ({"llm_provider-retry-after": "4"}, 4.0)
    clock.now += 4.0  # the next window
    assert fixed.headers()["x-ratelimit-remaining-requests"] == "2"
    assert fixed.admit() is None


def test_modes_need_their_limit() -> None:
    """A mode without its limit, or an unknown mode, is refused by name."""
    with pytest.raises(ValueError, match="sliding rate limit needs"):
        FakeOptions(rate_limit_mode="sliding")
    with pytest.raises(ValueError, match="fixed rate limit needs"):
        FakeOptions(rate_limit_mode="fixed", rate_limit_rps=5)
    with pytest.raises(ValueError, match="unknown rate limit mode 'leaky'"):
        FakeOptions(rate_limit_mode="leaky")
    with pytest.raises(ValueError, match="window must be > 0"):
        FakeOptions(rate_limit_rpm=5, rate_limit_window=0)


def test_the_sliding_mode_over_http() -> None:
    """Successes carry only a misleading remaining; the 429 names the per-minute limit."""
    with (
        serve_in_thread(rate_limit_mode="sliding", rate_limit_rps=2) as server,
        httpx.Client(base_url=server.base_url, timeout=10) as http,
    ):
        answers = [http.post("/messages", json=ask(f"s{i}"), headers=ANTHROPIC) for i in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert "x-ratelimit-limit-requests" not in answers[0].headers
    assert "anthropic-ratelimit-requests-limit" not in answers[0].headers
    assert answers[1].headers["x-ratelimit-remaining-requests"] == "118"
    refused = answers[2].headers
    assert (refused["x-ratelimit-limit-requests"], refused["retry-after"]) == ("120", "1")
    assert server.state.log_list()[-1]["retry_after"] == 1.0


def test_the_fixed_mode_over_http_and_without_headers() -> None:
    """LiteLLM-like: the 429 has llm_provider-retry-after and no retry-after; with the
    headers switched off no response has a rate-limit header, the 429 keeps its wait."""
    options: dict[str, Any] = {"rate_limit_mode": "fixed", "rate_limit_rpm": 1}
    for with_headers in (True, False):
        with (
            serve_in_thread(**options, rate_limit_headers=with_headers) as server,
            httpx.Client(base_url=server.base_url, timeout=10) as http,
        ):
            ok = http.post("/chat/completions", json=chat("f0"), headers=OPENAI)
            refused = http.post("/chat/completions", json=chat("f1"), headers=OPENAI)
            models = http.get("/models", headers=OPENAI)
        assert (ok.status_code, refused.status_code) == (200, 429)
        assert "retry-after" not in refused.headers
        assert 55 <= int(refused.headers["llm_provider-retry-after"]) <= 60
        named = [{k for k in r.headers if "ratelimit" in k.lower()} for r in (ok, refused, models)]
        if with_headers:
            assert named[0] == {"x-ratelimit-limit-requests", "x-ratelimit-remaining-requests"}
            assert ok.headers["x-ratelimit-remaining-requests"] == "0"
        else:
            assert named == [set(), set(), set()]


def test_refusals_at_once_skip_the_latency_and_the_log_has_answer_times() -> None:
    """With refusals_at_once a 529 fault comes back before --latency; successes still wait.
    Each log entry says when its answer went out."""
    options: dict[str, Any] = {"fault_rate": 1.0, "faults": ("529",), "fault_max_per_prompt": 1}
    with (
        serve_in_thread(latency=(0.5, 0.5), refusals_at_once=True, **options) as server,
        httpx.Client(base_url=server.base_url, timeout=10) as http,
    ):
        started = time.monotonic()
        assert http.post("/messages", json=ask("x"), headers=ANTHROPIC).status_code == 529
        refused_in = time.monotonic() - started
        assert http.post("/messages", json=ask("x"), headers=ANTHROPIC).status_code == 200
        answered_in = time.monotonic() - started - refused_in
        log = server.state.log_list()
    assert refused_in < 0.5 <= answered_in
    assert [e["done"] - e["t"] >= 0.5 for e in log] == [False, True]
