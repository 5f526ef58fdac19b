"""Patience: over-cap asks counted by wave; when they persist, a reason naming the header."""

from __future__ import annotations

from batchrunner.patience import STRIKES_IN_ALL, Patience
from batchrunner.ratelimits import parse_rate_limit_headers

RETRY_FOREVER = {"retry-after": "1000000000"}
SPENT_FOR_1000H = {
    "x-ratelimit-limit-requests": "1",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "1000h",
}


def ask(p: Patience, *, now: float, sent_at: float | None, seconds: float) -> str | None:
    return p.observe(now=now, sent_at=sent_at, ask_s=seconds, source="retry-after: x", ok=False)


def test_asks_within_the_cap_never_count() -> None:
    """Waits up to the cap are ordinary pacing, however many."""
    p = Patience(60.0)
    assert all(ask(p, now=t, sent_at=t - 0.1, seconds=60.0) is None for t in range(100))
    assert (p.in_a_row, p.in_all) == (0, 0)


def test_one_wave_counts_once_and_the_next_wave_gives_up() -> None:
    """50 over-cap answers to attempts sent before the first counted one are one ask; an
    attempt sent after it that draws another gives up, naming the header and the wait."""
    p = Patience(60.0)
    assert ask(p, now=10.0, sent_at=9.9, seconds=1e9) is None
    for k in range(50):
        assert ask(p, now=10.0 + k / 100, sent_at=9.95, seconds=1e9) is None
    assert p.in_a_row == 1
    reason = ask(p, now=70.5, sent_at=70.0, seconds=1e9)
    assert reason is not None
    assert "twice in a row" in reason and "60 s cap" in reason
    assert "retry-after: x" in reason and "31.7 years" in reason


def test_without_dispatch_times_asks_a_second_apart_are_new_waves() -> None:
    """A ticketless ask (the preflight) counts; another within a second is the same wave."""
    p = Patience(1.0)
    assert ask(p, now=5.0, sent_at=None, seconds=5.0) is None
    assert ask(p, now=5.5, sent_at=None, seconds=5.0) is None
    assert ask(p, now=6.5, sent_at=None, seconds=5.0) is not None


def test_a_plain_success_ends_the_streak_but_the_run_total_still_counts() -> None:
    """Asks with successes between them never make two in a row, but five in all give up."""
    p = Patience(60.0)
    reasons = []
    for wave in range(STRIKES_IN_ALL):
        t = 100.0 * (wave + 1)
        reasons.append(ask(p, now=t, sent_at=t - 1, seconds=600.0))
        p.observe(now=t + 70, sent_at=t + 69, ask_s=0.0, source="", ok=True)
    assert reasons[:-1] == [None] * (STRIKES_IN_ALL - 1)
    assert reasons[-1] is not None and "5 times in this run" in reasons[-1]
    assert "10 min" in reasons[-1]


def test_judge_reads_retry_after_and_spent_budgets() -> None:
    """judge: a Retry-After over the cap, or a budget spent until a far reset, is an ask."""
    p = Patience(60.0)
    states = parse_rate_limit_headers(SPENT_FOR_1000H, now=0.0)
    first = p.judge(
        now=1.0,
        sent_at=0.5,
        ok=True,
        headers=SPENT_FOR_1000H,
        retry_after=None,
        states=states,
        cost=10,
    )
    assert first is None and p.in_a_row == 1
    second = p.judge(
        now=61.0,
        sent_at=60.5,
        ok=False,
        headers=RETRY_FOREVER,
        retry_after=1e9,
        states={},
        cost=10,
    )
    assert second is not None and "retry-after: 1000000000" in second


def test_judge_leaves_ordinary_limits_alone() -> None:
    """A per-minute budget at zero, or a short Retry-After, never counts."""
    p = Patience(60.0)
    minute = {
        "x-ratelimit-limit-requests": "100",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "59s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "1m",
    }
    states = parse_rate_limit_headers(minute, now=0.0)
    for t in range(10):
        verdict = p.judge(
            now=float(t),
            sent_at=t - 0.5,
            ok=True,
            headers=minute,
            retry_after=None,
            states=states,
            cost=5000,
        )
        assert verdict is None
        verdict = p.judge(
            now=t + 0.1,
            sent_at=t - 0.4,
            ok=False,
            headers={"retry-after": "30"},
            retry_after=30.0,
            states={},
            cost=0,
        )
        assert verdict is None
    assert p.in_all == 0
