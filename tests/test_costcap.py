"""--max-cost: the gate alone (reserve, wait, settle, refuse), and whole runs against the fake
API that stop at the cap with rows pending and resume with a higher one, sending nothing twice.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from batchrunner.admission import AdmissionClosedError
from batchrunner.costcap import CostCap
from batchrunner.records import Completion, Request
from batchrunner.spec import PricingSpec
from tests.helpers import TEST_KEY, run_cli, status_json, write_jsonl

if TYPE_CHECKING:
    from pathlib import Path

    from tests.fakeserver import FakeServer

# $1 per million input tokens, $1 000 per million output tokens: a worst case of 100 output
# tokens is $0.1, so the cases below speak in whole tenths.
PRICES = PricingSpec(input_per_mtok=1.0, output_per_mtok=1000.0)


def _request(est: int = 0, max_tokens: int = 100, **body: Any) -> Request:
    return Request(
        row_index=0,
        row_id="r0",
        api="messages",
        path="/messages",
        body=body,
        est_input_tokens=est,
        max_tokens=max_tokens,
    )


def _answer(input_tokens: int | None, output_tokens: int | None) -> Completion:
    return Completion(
        response_id="msg_1",
        model="m",
        text="",
        stop_reason="end_turn",
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


def test_the_worst_case_is_the_input_estimate_plus_max_tokens_times_choices() -> None:
    """Input estimate at the input rate plus max_tokens (times chat's `n`) at the output rate."""
    cap = CostCap(1.0, PRICES)
    assert cap.worst(_request(est=1000, max_tokens=100)) == pytest.approx(0.001 + 0.1)
    assert cap.worst(_request(est=0, max_tokens=100, n=3)) == pytest.approx(0.3)
    assert cap.worst(_request(est=0, max_tokens=100, n=True)) == pytest.approx(0.1)


@pytest.mark.anyio
async def test_admit_reserves_and_settle_records_what_the_answer_cost() -> None:
    """Reservations add up in flight; settling replaces one with the answer's real cost."""
    cap = CostCap(1.0, PRICES, recorded_usd=0.25)
    held = await cap.admit(_request())
    assert held == pytest.approx(0.1)
    assert cap.out == 1 and cap.reserved == pytest.approx(0.1)
    cap.settle(held, _request(), _answer(0, 30))
    assert (cap.out, cap.reserved) == (0, 0.0)
    assert cap.recorded == pytest.approx(0.25 + 0.03)
    held = await cap.admit(_request())
    cap.settle(held, _request(), None)  # a failed attempt: no usage, nothing recorded
    assert cap.recorded == pytest.approx(0.28)


@pytest.mark.anyio
async def test_an_attempt_that_does_not_fit_waits_for_one_in_flight_to_settle() -> None:
    """Recorded 0.75 + 0.1 in flight: a second 0.1 waits (0.95 > 0.9 cap); when the first
    settles for 0.02 it goes, and the progress line said why it waited meanwhile."""
    cap = CostCap(0.9, PRICES, recorded_usd=0.75)
    first = await cap.admit(_request())
    admitted: list[float] = []

    async def second() -> None:
        admitted.append(await cap.admit(_request()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(second)
        await anyio.wait_all_tasks_blocked()
        assert admitted == [] and cap.waiters == 1
        assert "1 requests in flight to settle under --max-cost $0.9" in (cap.waiting() or "")
        cap.settle(first, _request(), _answer(0, 20))
    assert admitted == [pytest.approx(0.1)]
    assert cap.recorded == pytest.approx(0.77) and cap.waiting() is None


@pytest.mark.anyio
async def test_with_nothing_in_flight_an_attempt_that_does_not_fit_stops_the_run() -> None:
    """Nothing in flight could make room: `on_refused` hears the spend and the cap, and the
    attempt is refused (AdmissionClosedError: its row stays pending)."""
    told: list[str] = []
    cap = CostCap(0.3, PRICES, recorded_usd=0.25, on_refused=told.append)
    with pytest.raises(AdmissionClosedError):
        await cap.admit(_request())
    assert told == [
        "the cost cap would be passed: $0.2500 recorded of --max-cost $0.3, and the next "
        "request could cost up to $0.1000 (its input estimate plus max_tokens at the [pricing] "
        "rates): raise --max-cost (or [limits] max_cost in the job file) and run the same "
        "command again to resume"
    ]


@pytest.mark.anyio
async def test_input_counted_above_the_estimate_raises_later_worst_cases() -> None:
    """An answer that counted 3x the estimated input tokens makes every later estimate 3x."""
    cap = CostCap(10.0, PricingSpec(input_per_mtok=1000.0, output_per_mtok=0.0))
    request = _request(est=100, max_tokens=1)
    held = await cap.admit(request)
    assert held == pytest.approx(0.1)
    cap.settle(held, request, _answer(300, 1))
    assert cap.ratio == 3.0
    assert cap.worst(request) == pytest.approx(0.3)


# -- whole runs ----------------------------------------------------------------------------

ROWS = 300


def _job(tmp_path: Path, *, max_cost: float | None = None, pricing: bool = True) -> Path:
    rows = [{"id": f"r{i}", "prompt": f"question number {i}"} for i in range(ROWS)]
    write_jsonl(tmp_path / "in.jsonl", rows)
    text = '[job]\ninput = "in.jsonl"\noutput = "run"\n[request]\nmax_tokens = 64\n'
    text += "[limits]\nconcurrency = 16\n" + (f"max_cost = {max_cost}\n" if max_cost else "")
    if pricing:
        text += "[pricing]\ninput_per_mtok = 3.0\noutput_per_mtok = 15.0\n"
    job = tmp_path / "job.toml"
    job.write_text(text, encoding="utf-8")
    return job


def _recorded_usd(out: Path, job: Path) -> float:
    res = run_cli(["report", str(out), "--job", str(job), "--json"])
    assert res.exit_code == 0, res.stderr
    cost: float = json.loads(res.stdout)["cost"]["usd"]
    return cost


@pytest.mark.slow
def test_the_cap_stops_with_rows_pending_and_a_higher_cap_resumes_sending_nothing_twice(
    tmp_path: Path,
) -> None:
    """`[limits] max_cost = 0.05`: exit 3 with rows pending, the spend in the message and a
    recorded cost within the cap, though 16 requests with 20-60 ms answers were in flight.
    The same command with `--max-cost 10` completes, and the fake API answered each row once."""
    from tests.fakeserver import FakeServer

    job = _job(tmp_path, max_cost=0.05)
    out = tmp_path / "run"
    with FakeServer("--latency", "0.02-0.06", api_key=TEST_KEY) as server:
        args = ["run", "--job", str(job), "--base-url", server.base_url, "-q"]
        capped = run_cli(args)
        assert capped.exit_code == 3, capped.output
        assert "the cost cap would be passed: $0.04" in capped.stderr, capped.stderr
        assert "recorded of --max-cost $0.05" in capped.stderr
        assert "raise --max-cost" in capped.stderr and "Traceback" not in capped.stderr
        st = status_json(out)
        assert st["errored"] == 0 and 0 < st["succeeded"] < ROWS
        assert st["pending"] == ROWS - st["succeeded"]
        spent = _recorded_usd(out, job)
        assert 0.04 < spent <= 0.05, spent
        resumed = run_cli([*args, "--max-cost", "10"])
        answered = Counter(entry["prompt"] for entry in server.log())
        answers = server.stats()["answers_total"]
    assert resumed.exit_code == 0, resumed.output
    assert f"{ROWS} rows: {ROWS} succeeded" in resumed.stdout
    assert answers == ROWS and len(answered) == ROWS and set(answered.values()) == {1}
    assert _recorded_usd(out, job) <= 10


def test_a_cap_below_one_request_stops_before_sending_anything(
    tmp_path: Path, shared_api: FakeServer
) -> None:
    """--max-cost below one request's worst case: exit 3, nothing sent, every row pending."""
    job = _job(tmp_path)
    args = ["run", "--job", str(job), "--base-url", shared_api.base_url, "-q"]
    res = run_cli([*args, "--max-cost", "0.0001"])
    assert res.exit_code == 3, res.output
    assert "$0.0000 recorded of --max-cost $0.0001" in res.stderr, res.stderr
    assert shared_api.log() == []
    assert status_json(tmp_path / "run")["pending"] == ROWS


def test_max_cost_without_pricing_is_refused_before_sending(
    tmp_path: Path, shared_api: FakeServer
) -> None:
    """No [pricing]: exit 2 naming what is missing; not even the preflight is sent."""
    job = _job(tmp_path, pricing=False)
    res = run_cli(["run", "--job", str(job), "--base-url", shared_api.base_url, "--max-cost", "5"])
    assert res.exit_code == 2, res.output
    assert "--max-cost (or [limits] max_cost) needs a [pricing] section" in res.stderr
    assert shared_api.stats()["requests_total"] == 0
