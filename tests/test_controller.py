"""The controller: sporadic refusals are noise, a limit shows in the evidence, and the pace
it teaches is a margin below what the server admitted, probed upward while clean."""

from __future__ import annotations

import math
import random
import re

import pytest

from batchrunner.controller import (
    CUT,
    LIMIT_SHARE,
    MARGIN,
    MIN_RATE,
    PROBE_STEP,
    RUN,
    WINDOW,
    Controller,
    Decision,
    Meter,
)


def refuse(
    c: Controller,
    now: float,
    *,
    sent_at: float | None = None,
    status: int = 429,
    retry_after: float | None = 1.0,
    spent: bool = False,
) -> Decision | None:
    """A refusal answered at `now` for an attempt sent at `sent_at` (default: `now`)."""
    return c.refused(
        now,
        sent_at=now if sent_at is None else sent_at,
        status=status,
        retry_after=retry_after,
        spent=spent,
    )


@pytest.mark.parametrize("share", [0.05, 0.10])
def test_random_refusals_at_5_and_10_percent_are_noise(share: float) -> None:
    """20 000 answers with 5% or 10% refused at random: not one decision."""
    rng = random.Random(11)
    c = Controller()
    decisions = []
    for i in range(20_000):
        now = i * 0.01
        c.sent(now)
        if rng.random() < share:
            decisions.append(refuse(c, now + 0.005, sent_at=now))
        else:
            c.served(now + 0.005)
    assert [d for d in decisions if d is not None] == []
    assert c.rate is None


def test_a_third_of_the_recent_answers_refused_is_a_limit_and_teaches_a_pace() -> None:
    """100 requests admitted in the last second, then two refusals to one success: the
    22nd refusal among the last 64 answers pauses everyone for the Retry-After and paces
    to 92 req/s."""
    c = Controller()
    for i in range(100):
        c.sent(10.0 + i * 0.009)
        c.served(10.0 + i * 0.009 + 0.001)
    needed = math.ceil(LIMIT_SHARE * WINDOW)
    decisions: list[Decision | None] = []
    t = 10.9
    while not any(decisions):
        for refused in (True, True, False):
            t += 0.001
            c.sent(t)
            decisions.append(refuse(c, t, retry_after=0.7) if refused else c.served(t))
    decision = decisions[-1] or decisions[-2]
    assert decision is not None and sum(d is not None for d in decisions) == 1
    assert decision.pause_s == 0.7
    assert decision.rate == pytest.approx((100 + needed // 2) * MARGIN, rel=0.02)
    assert not decision.cut_slots and decision.distrust_headers
    assert decision.why.startswith(f"HTTP 429: {needed} of the last 64 answers refused: pace")
    assert c.rate == decision.rate
    # Refusals of attempts sent before the decision were acted on already.
    assert refuse(c, t + 0.01, sent_at=t - 0.01) is None


def test_eight_refusals_in_a_row_are_a_limit() -> None:
    """Eight answers refused in a row (5% noise does that once in 10^10): a limit."""
    c = Controller()
    for i in range(40):
        c.served(i * 0.01)
    decisions = [refuse(c, 1 + i * 0.01) for i in range(RUN)]
    assert decisions[:-1] == [None] * (RUN - 1)
    assert decisions[-1] is not None
    assert decisions[-1].why.startswith(f"HTTP 429: the last {RUN} answers refused: pace")


def test_the_admitted_rate_is_measured_over_the_retry_after() -> None:
    """A window longer than a second shows in the Retry-After: 50 admitted in the last 5 s
    and a 5 s Retry-After make 10 req/s, paced at 9.2."""
    c = Controller()
    for i in range(50):
        c.sent(i * 0.1)
        c.served(i * 0.1)
    for _ in range(RUN):
        c.sent(5.0)
    decisions = [refuse(c, 5.0 + i * 0.001, sent_at=5.0, retry_after=5.0) for i in range(RUN)]
    assert decisions[-1] is not None and decisions[-1].rate == pytest.approx(10 * MARGIN, rel=0.05)


def test_a_spent_budget_is_a_limit_without_a_learned_pace() -> None:
    """The headers saw it coming (remaining 0): pause for the Retry-After, keep no pace."""
    c = Controller()
    decision = refuse(c, 1.0, spent=True, retry_after=None)
    assert decision is not None
    assert (decision.pause_s, decision.rate, decision.distrust_headers) == (1.0, None, False)
    assert "the rate-limit headers say the budget is spent" in decision.why


def test_a_spent_budget_far_larger_than_what_we_sent_teaches_a_pace() -> None:
    """ "0 of 6000 left" after 200 requests this minute: the budget is counted over a longer
    window than the server enforces, so the refusal teaches a pace after all."""
    c = Controller()
    for i in range(200):
        c.sent(i * 0.005)
        c.served(i * 0.005)
    c.sent(1.0)
    decision = c.refused(1.0, sent_at=1.0, status=429, retry_after=1.0, spent=True, used=6000)
    assert decision is not None and decision.rate is not None and decision.pause_s == 1.0
    c2 = Controller()
    for i in range(100):
        c2.sent(i * 0.005)
    d2 = c2.refused(1.0, sent_at=1.0, status=429, retry_after=1.0, spent=True, used=100)
    assert d2 is not None and d2.rate is None  # 100 used, 100 sent: the headers are ours


def test_a_crowd_of_529s_halves_the_slots_and_learns_no_pace() -> None:
    """Overload is answered with fewer requests in flight, not a pace."""
    c = Controller()
    decisions = [refuse(c, i * 0.01, status=529) for i in range(RUN)]
    last = decisions[-1]
    assert decisions[:-1] == [None] * (RUN - 1) and last is not None
    assert last.cut_slots and last.rate is None and last.pause_s == 1.0
    assert "fewer requests in flight" in last.why


def test_probing_raises_a_binding_pace_and_refusals_beyond_the_noise_cut_it() -> None:
    """Each clean second at a pace that binds raises it 2%; a second with two refusals (no
    noise) cuts it to MARGIN of the admitted rate, with no pause, when it ends."""
    c = Controller()
    c.rate = 50.0
    t, rates = 0.0, []
    while t < 2.5:
        c.sent(t)
        assert c.served(t) is None
        rates.append(c.rate)
        t += 0.02  # 50 req/s: the pace binds
    assert sorted(set(rates)) == pytest.approx([50 * (1 + PROBE_STEP) ** k for k in (0, 1, 2)])
    for dt in (0.0, 0.01):
        c.sent(t + dt)
        assert refuse(c, t + dt, retry_after=None) is None  # judged when the second ends
    decisions = []
    while t < 3.5:
        c.sent(t)
        decisions.append(c.served(t))
        t += 0.02
    decision = next(d for d in decisions if d is not None)
    assert decision.pause_s == 0 and not decision.cut_slots  # a probe's refusals: no pause
    assert decision.rate == pytest.approx(50 * MARGIN, rel=0.05)
    assert re.search(r"HTTP 429: 2 of \d+ answers refused, more than the noise", decision.why)


def test_a_cut_that_does_not_lower_the_refusals_is_undone_and_sets_the_noise() -> None:
    """A pace found with no noise measured, then 10% refused at any pace: the first cut
    is undone when the refusals stay, and that share becomes the noise level."""
    c = Controller()
    c.rate = 50.0
    rng = random.Random(5)
    decisions = []
    for i in range(1000):  # 20 s at 50 answers a second
        t = i * 0.02
        c.sent(t)
        if rng.random() < 0.1:
            decisions.append(refuse(c, t))
        else:
            decisions.append(c.served(t))
    cuts = [d for d in decisions if d is not None]
    assert 1 <= len(cuts) <= 2
    assert 0.06 < c.noise <= 0.15
    assert c.rate >= 50


def test_a_pace_is_raised_through_steady_noise_once_the_noise_is_known() -> None:
    """10% of answers refused at any pace, measured as the noise level before a limit was
    found: a pace found later is raised through that noise (cut once at the most: three
    standard deviations of 30 periods)."""
    c = Controller()
    rng = random.Random(3)
    decisions = []
    for i in range(2000):  # 40 s at 50 answers a second; a pace from the 10th second
        t = i * 0.02
        if i == 500:
            c.rate = 50.0
        c.sent(t)
        if rng.random() < 0.1:
            decisions.append(refuse(c, t))
        else:
            decisions.append(c.served(t))
    assert len([d for d in decisions if d is not None]) <= 1
    assert 0.07 < c.noise < 0.13
    assert c.rate is not None and c.rate > 50 * 1.2  # raised through the noise


def test_a_pace_that_does_not_bind_is_not_raised() -> None:
    """Sending at a fifth of the pace (the in-flight limit holds the run back): no raise."""
    c = Controller()
    c.rate = 100.0
    for t in range(100):
        c.sent(t / 20)
        assert c.served(t / 20) is None
    assert c.rate == 100.0


def test_cuts_are_at_most_cut_deep_and_never_below_the_floor() -> None:
    """With nothing admitted, each new wave of refusals cuts by CUT, down to MIN_RATE."""
    c = Controller()
    c.rate = 10.0
    c._recent.extend([True] * WINDOW)
    rates = []
    for wave in range(30):
        d = refuse(c, 100.0 + wave, sent_at=100.0 + wave)
        assert d is not None and d.rate is not None
        rates.append(d.rate)
    assert rates[0] == pytest.approx(10 * CUT)
    assert rates[1] == pytest.approx(10 * CUT * CUT)
    assert rates[-1] == MIN_RATE


def test_unknown_dispatch_times_make_one_decision_a_second() -> None:
    """Without a dispatch time, refusals within a second of a decision are its wave."""
    c = Controller()
    c._recent.extend([True] * WINDOW)
    assert c.refused(5.0, sent_at=None, status=529, retry_after=None, spent=False) is not None
    assert c.refused(5.5, sent_at=None, status=529, retry_after=None, spent=False) is None
    assert c.refused(6.1, sent_at=None, status=529, retry_after=None, spent=False) is not None


def test_the_meter_counts_by_dispatch_tick_over_the_last_minute() -> None:
    """Sent and refused per 10 ms tick; older than a minute is forgotten."""
    m = Meter()
    for i in range(10):
        m.sent(1.0 + i * 0.05)
    m.refused(1.2)
    m.refused(1.25)
    assert m.count(1.0, 1.5) == 10
    assert m.count(1.0, 1.5, admitted=True) == 8
    assert m.count(1.0, 1.2) == 4
    m.sent(62.0)
    assert m.count(0.0, 62.01) == 1  # the ticks of a minute ago were reused or are too old
    m.refused(1.995)  # sent over a minute ago: its tick's slot now holds 62.0's count
    assert m.count(61.9, 62.1, admitted=True) == 1
