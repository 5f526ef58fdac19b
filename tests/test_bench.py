"""`make bench` scenarios at toy scale: each runs end to end and reports sane figures.

The references run on this venv's interpreter (it holds aiohttp, openai and uvloop), so no
bench venv is installed here. Each scenario checks on its own that every row was answered
or recorded, and raises otherwise; these tests check the figures are there and plausible.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import pytest

from bench import assembly, cpu, littles_law, memory, resume_startup, run
from bench import validation as bench_validation

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _references_here(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The reference scripts run on this interpreter instead of a freshly installed venv."""
    monkeypatch.setenv("BENCH_REFERENCE_PYTHON", sys.executable)
    yield


def test_cpu_measures_every_client_and_the_sdk_costs_more_than_bare_aiohttp() -> None:
    """The four clients each answer every row; the SDK script spends more CPU than aiohttp."""
    res = cpu.main(rounds=1, rows=60)
    for client in cpu.CLIENTS:
        assert res[client]["cpu_ms"] > 0 and res[client]["rss_mib"] > 10, client
    assert res["sdk"]["cpu_ms"] > res["aiohttp"]["cpu_ms"]
    text = cpu.summary(res)
    assert "ours/this" in text and "official SDK" in text


def test_littles_law_rates_stay_under_the_limit_and_ours_keeps_the_cap() -> None:
    """Rates are positive and at most C/L (plus clock slack); ours never exceeds C in flight."""
    res = littles_law.main(rounds=1, rows=40, concurrency=8, latency=0.2)
    for client in littles_law.CLIENTS:
        assert 0 < res[client]["req_s"] <= 1.05 * res["limit_req_s"], client
    assert 0 < res["max_in_flight"] <= 8
    assert "ours/this" in littles_law.summary(res)


def test_memory_reports_peak_rss_above_the_imports_alone() -> None:
    """A whole run's peak RSS is above what its imports alone take."""
    res = memory.main(rounds=1, row_counts=(40,))
    assert res["sizes"][40]["rss_mib"] > res["imports_mib"] > 10
    assert "skipped" in memory.summary(res)


def test_resume_and_assembly_work_on_a_synthetic_run_dir() -> None:
    """The synthetic run dir resumes sending only its pending rows, and assembles."""
    res = resume_startup.main(rounds=1, recorded=5000)
    assert 0 < res["resume_first_s"] < res["resume_total_s"]
    assert "resume: first request" in resume_startup.summary(res)
    built = assembly.main(rounds=1, recorded=5000)
    assert built["parts"] == 4  # the CLI's part, then 2 000-row parts from row 10 on
    assert built["finalize"]["rss_mib"] > 10 and built["floor"]["work_s"] > 0
    assert "floor" in assembly.summary(built)


def test_validation_times_every_way() -> None:
    """validate(), the CLI and the floor all see every row of both formats."""
    res = bench_validation.main(rounds=1, rows=200)
    assert set(res) == {"jsonl", "parquet"}
    assert all(res[fmt]["cli_s"] > 0 for fmt in res)


def test_only_selects_scenarios_in_order_and_refuses_unknown_names() -> None:
    """`--only littles,cpu` runs cpu then littles; an unknown name stops with the known ones."""
    assert run.selected("littles,cpu") == ["cpu", "littles"]
    assert run.selected(None) == list(run.SCENARIOS)
    with pytest.raises(SystemExit, match="known: cpu"):
        run.selected("cpu,nope")
