"""Read a run's story from the fake API's request log: refusals, early retries, the pace
and how many requests were in flight. Shared by the pacing tests and `bench/pacing.py`.

Each log entry has `t` (arrival) and `done` (answer sent), epoch seconds, the `prompt`
(one per row), the `status` and the `retry_after` the answer announced.
"""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict
from typing import Any

REFUSED = (429, 529)


def by_prompt(log: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each row's requests in arrival order."""
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in log:
        grouped[str(entry["prompt"])].append(entry)
    for entries in grouped.values():
        entries.sort(key=lambda e: float(e["t"]))
    return grouped


def refused(log: list[dict[str, Any]]) -> int:
    return sum(1 for e in log if e["status"] in REFUSED)


def early_retries(log: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(seconds between a refusal's answer and its row's next request, the Retry-After it
    announced) for every retry that came sooner than it was told."""
    early = []
    for entries in by_prompt(log).values():
        for before, after in itertools.pairwise(entries):
            wait = before.get("retry_after")
            if before["status"] in REFUSED and wait is not None:
                gap = float(after["t"]) - float(before["done"])
                if gap < float(wait):
                    early.append((gap, float(wait)))
    return early


def pace(log: list[dict[str, Any]]) -> float:
    """Answered requests per second, from the first arrival to the last (the
    rate-limit tests' measure)."""
    arrivals = [float(e["t"]) for e in log]
    ok = sum(1 for e in log if e["status"] == 200)
    return ok / (max(arrivals) - min(arrivals))


def in_flight_median(log: list[dict[str, Any]], *, step: float = 0.05) -> float:
    """The median number of requests the server held, sampled every `step` seconds from
    the first arrival until the last row's first request arrived (the tail, when too few
    rows are left to fill the slots, is left out)."""
    start = min(float(e["t"]) for e in log)
    end = max(float(entries[0]["t"]) for entries in by_prompt(log).values())
    spans = sorted((float(e["t"]), float(e["done"])) for e in log)
    samples = []
    t = start + step
    while t < end:
        samples.append(sum(1 for a, b in spans if a <= t < b))
        t += step
    return statistics.median(samples) if samples else 0.0
