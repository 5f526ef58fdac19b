"""Peak RSS of a whole run at 10 k, 100 k and (opt-in) 1 M rows: flat memory or not.

Each size is one real CLI run (messages, c=256, no latency: as fast as the fake API
answers) in its own process, its peak RSS (ru_maxrss from wait4) taken through a small
launcher so that nothing of this process counts. The reference is the same interpreter
importing what `run` imports and nothing else: the floor any run starts from. The 1 M-row
run takes ~6 minutes on the 2-core machine, so it runs only with BENCH_RSS_1M=1.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import harness
from tests.fakeserver import FakeServer

SIZES = (10_000, 100_000)
BIG = 1_000_000
CONCURRENCY = 256
IMPORTS = harness.CLI_IMPORTS
GOAL_10K_MIB = 150.0  # issue 16: the 10 k-row run <= 150 MB; 1 M rows <= 1.3x that


def sizes() -> tuple[int, ...]:
    """The row counts to run: SIZES, plus 1 M when BENCH_RSS_1M=1."""
    return (*SIZES, BIG) if os.environ.get("BENCH_RSS_1M") == "1" else SIZES


def run_once(server: FakeServer, tmp: Path, rows: int, tag: str) -> harness.Usage:
    """One CLI run over `rows` fresh rows; checks every row succeeded."""
    src = tmp / f"in-{rows}.jsonl"
    if not src.exists():
        harness.write_input(src, rows)
    out = tmp / f"run-{rows}-{tag}"
    extra = ("--concurrency", str(CONCURRENCY))
    usage = harness.measure(harness.ours_command(src, out, server.base_url, *extra))
    if f"{rows} rows: {rows} succeeded, 0 errored" not in usage.stdout:
        raise RuntimeError(f"{rows}-row run said {usage.stdout[-500:]!r}")
    return usage


def main(rounds: int = 3, row_counts: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Peak RSS MiB and wall seconds per size (medians; the 10 k run gets `rounds`)."""
    counts = row_counts or sizes()
    res: dict[str, Any] = {"sizes": {}}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp_name:
        tmp = Path(tmp_name)
        imports = [
            harness.measure([sys.executable, "-c", IMPORTS]).maxrss_mib for _ in range(rounds)
        ]
        res["imports_mib"] = harness.median(imports)
        with FakeServer(api_key=harness.KEY) as server:
            for rows in counts:
                # the smallest run is cheap: several rounds; the big ones once
                n = rounds if rows == counts[0] else 1
                runs = [run_once(server, tmp, rows, str(r)) for r in range(n)]
                server.reset()  # the request log is capped, but don't carry it across sizes
                res["sizes"][rows] = {
                    "rss_mib": harness.median([u.maxrss_mib for u in runs]),
                    "rss_rounds": [u.maxrss_mib for u in runs],
                    "wall_s": harness.median([u.wall_s for u in runs]),
                    "cpu_ms": 1000 * harness.median([u.cpu_s for u in runs]) / rows,
                }
    return res


def summary(res: dict[str, Any]) -> str:
    """The lines `make bench` prints."""
    sizes_ = res["sizes"]
    first = min(sizes_)
    base = sizes_[first]["rss_mib"]
    lines = [
        f"rss: peak RSS of a whole run (CLI, messages, c={CONCURRENCY}, no latency); reference: "
        f"`python -c '{IMPORTS}'` {res['imports_mib']:.0f} MiB"
    ]
    for rows, f in sorted(sizes_.items()):
        ratio = f["rss_mib"] / base
        goal = ""
        if rows == first and rows == SIZES[0]:
            ok = f["rss_mib"] * 2**20 / 1e6 <= GOAL_10K_MIB
            goal = f" (goal <= {GOAL_10K_MIB:.0f} MB: {'ok' if ok else 'NOT MET'})"
        elif rows == BIG:
            goal = f" (goal <= 1.3: {'ok' if ratio <= 1.3 else 'NOT MET'})"
        lines.append(
            f"  {rows:>9,} rows: {f['rss_mib']:.0f} MiB (rounds "
            f"{harness.spread(f['rss_rounds'], '{:.0f}')}){goal}; x{ratio:.2f} of {first:,} rows; "
            f"x{f['rss_mib'] / res['imports_mib']:.2f} of imports alone; run {f['wall_s']:.0f} s, "
            f"CPU {f['cpu_ms']:.2f} ms/row"
        )
    if BIG not in sizes_:
        lines.append(f"  {BIG:,} rows: skipped (set BENCH_RSS_1M=1; ~20 min)")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(main()))
