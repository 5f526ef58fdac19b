"""Pace in proportion (issue 11): sporadic refusals must not stall a run, a real limit must
be learned without hammering it.

Every scenario is the real CLI in a child process against `fake-api` on loopback, judged
from the server's log (arrival and answer times, statuses, announced waits):

- noise: 1 000 rows at --concurrency 64, 1 s latency, every 429/529 with Retry-After 1 s.
  Wall time (process start to exit) with 5% random 529s, and with 5% random 429s, over the
  no-fault run of the same rows, medians of the rounds (goal <= 1.10). Run twice: with the
  fake's default, which answers a fault after the full latency (a faulted row then takes
  3 s instead of 1, whatever the client: the floor is ~1.17, see README "Pacing"), and with
  refusals answered at once, as a rate limiter or an overloaded front end answers them.
- sliding: 100 requests in any second, announced as 6 000/min, successes carrying no limit
  header and a per-minute `remaining`; 2 000 rows at --concurrency 256, 20 ms latency; and
  the same with no rate-limit headers at all. Goals: <= 5% refused, >= 90% of the limit.
- fixed: 100 requests per 60 s window, limit and remaining but no reset, the wait as
  `llm_provider-retry-after` (LiteLLM); 200 rows at --concurrency 32. Goal: <= 10% refused.
- bucket: the earlier acceptance, 100 req/s with honest headers, 2 000 rows at 256.
  Goals: >= 85% of the limit, <= 5% refused.
Every scenario also counts retries sent sooner than their Retry-After (goal: none) and the
most requests the server held at once (never above --concurrency).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests import serverlog
from tests.fakeserver import FakeServer

KEY = "bench-key"
NOISE = ("--latency", "1", "--fault-rate", "0.05", "--fault-retry-after", "1")
SLIDING = ("--rate-limit-mode", "sliding", "--rate-limit-rps", "100", "--latency", "0.02")
FIXED = ("--rate-limit-mode", "fixed", "--rate-limit-rpm", "100", "--latency", "0.02")


def _run(fake: tuple[str, ...], rows: int, concurrency: int, tmp: Path) -> dict[str, float]:
    """One run of `rows` rows against a fresh fake API; its figures."""
    src = tmp / f"in-{rows}.jsonl"
    if not src.exists():
        src.write_text("".join(json.dumps({"prompt": f"pacing {i}"}) + "\n" for i in range(rows)))
    out = tmp / f"run-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "batchrunner", "run", str(src), "-o", str(out), "-q"]
    with FakeServer(*fake, api_key=KEY) as server:
        cmd += ["--base-url", server.base_url, "--concurrency", str(concurrency)]
        started = time.monotonic()
        env = {**os.environ, "CAICAINI_API_KEY": KEY}
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        wall = time.monotonic() - started
        log, stats = server.log(), server.stats()
    return {
        "wall_s": wall,
        "requests": len(log),
        "refused": serverlog.refused(log),
        "refused_share": serverlog.refused(log) / len(log),
        "pace": serverlog.pace(log),
        "early": len(serverlog.early_retries(log)),
        "max_in_flight": stats["max_in_flight"],
    }


def _noise(tmp: Path, rounds: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {}
    kinds = {
        "none": ("--latency", "1"),
        "529": (*NOISE, "--faults", "529"),
        "429": (*NOISE, "--faults", "429"),
        "529_at_once": (*NOISE, "--faults", "529", "--refusals-at-once"),
        "429_at_once": (*NOISE, "--faults", "429", "--refusals-at-once"),
    }
    for _ in range(rounds):  # interleaved, so load on the machine hits every kind alike
        for name, fake in kinds.items():
            runs.setdefault(name, []).append(_run(fake, 1000, 64, tmp))
    base = statistics.median(r["wall_s"] for r in runs["none"])
    result: dict[str, Any] = {"no_fault_wall_s": base}
    for name, rs in runs.items():
        wall = statistics.median(r["wall_s"] for r in rs)
        result[name] = {
            "wall_s": wall,
            "ratio": wall / base,
            "early": sum(int(r["early"]) for r in rs),
            "max_in_flight": max(r["max_in_flight"] for r in rs),
        }
    return result


def main(rounds: int = 3) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        return {
            "noise": _noise(tmp, rounds),
            "sliding": _run(SLIDING, 2000, 256, tmp),
            "sliding_no_headers": _run((*SLIDING, "--no-rate-limit-headers"), 2000, 256, tmp),
            "fixed": _run(FIXED, 200, 32, tmp),
            "bucket": _run(("--rate-limit-rps", "100"), 2000, 256, tmp),
        }


def summary(res: dict[str, Any]) -> str:
    noise = res["noise"]
    lines = [f"pacing noise: no faults {noise['no_fault_wall_s']:.1f} s (c=64, 1 s, 1000 rows)"]
    for name in ("529", "429", "529_at_once", "429_at_once"):
        r = noise[name]
        lines.append(
            f"pacing noise: 5% {name.replace('_', ' ')}: {r['wall_s']:.1f} s = "
            f"{r['ratio']:.3f}x (goal <= 1.10); early retries {r['early']}; "
            f"server max in flight {r['max_in_flight']:.0f} (limit 64)"
        )
    for name, limit, goal in (
        ("sliding", 100, "<= 5% refused, >= 90% pace"),
        ("sliding_no_headers", 100, "<= 5% refused, >= 90% pace"),
        ("fixed", None, "<= 10% refused"),
        ("bucket", 100, "<= 5% refused, >= 85% pace"),
    ):
        r = res[name]
        pace = f"; pace {r['pace']:.1f} req/s = {100 * r['pace'] / limit:.1f}%" if limit else ""
        lines.append(
            f"pacing {name}: {r['refused']:.0f} of {r['requests']:.0f} refused "
            f"({100 * r['refused_share']:.1f}%){pace}; early retries {r['early']:.0f}; "
            f"wall {r['wall_s']:.1f} s (goal {goal})"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(main()))
