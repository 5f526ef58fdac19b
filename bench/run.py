"""`make bench`: run the benchmarks and print their figures (medians, references, ratios).

`make bench` runs every scenario (about an hour on the 2-core machine); `make bench
ONLY=littles,cpu` (or `bench/run.py --only littles,cpu`) runs a subset. BENCH_ROUNDS=N
overrides every scenario's rounds; BENCH_RSS_1M=1 adds the 1 M-row run to `rss`. The
machine, the load average before and after each scenario and what ran are printed too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import (
    assembly,
    cpu,
    display_refresh,
    harness,
    littles_law,
    memory,
    pacing,
    resume_startup,
    validation,
)

if TYPE_CHECKING:
    from collections.abc import Callable


def _cpu() -> str:
    return cpu.summary(cpu.main(rounds=harness.rounds(3)))


def _littles() -> str:
    return littles_law.summary(littles_law.main(rounds=harness.rounds(3)))


def _rss() -> str:
    return memory.summary(memory.main(rounds=harness.rounds(3)))


def _resume() -> str:
    return resume_startup.summary(resume_startup.main(rounds=harness.rounds(3)))


def _assembly() -> str:
    return assembly.summary(assembly.main(rounds=harness.rounds(1)))


def _pacing() -> str:
    # issue 11's fault and rate-limit scenarios (~7 min, one of them a real 60 s window)
    return pacing.summary(pacing.main(rounds=harness.rounds(3)))


def _display() -> str:
    return display_refresh.summary(display_refresh.main())


def _validation() -> str:
    return validation.summary(validation.main(rounds=harness.rounds(3)))


# In this order: the cheap, load-sensitive ratios first, the long ones after. resume and
# assembly share one synthetic 10 M-row run dir, built once (~3 min).
SCENARIOS: dict[str, Callable[[], str]] = {
    "cpu": _cpu,
    "littles": _littles,
    "rss": _rss,
    "resume": _resume,
    "assembly": _assembly,
    "pacing": _pacing,
    "validation": _validation,
    "display": _display,
}


def machine() -> str:
    """CPU model, cores and memory, as BENCHMARKS.md quotes them."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    python = sys.version.split()[0]
    return f"{model}, {os.cpu_count()} cores, {mem_kib / 2**20:.1f} GiB, Python {python}"


def selected(only: str | None) -> list[str]:
    """The scenario names `--only a,b` asks for, in SCENARIOS order; all when None."""
    if not only:
        return list(SCENARIOS)
    asked = {name.strip() for name in only.split(",") if name.strip()}
    unknown = sorted(asked - set(SCENARIOS))
    if unknown:
        raise SystemExit(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    return [name for name in SCENARIOS if name in asked]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma list of scenarios: {','.join(SCENARIOS)}")
    args = parser.parse_args(argv)
    names = selected(args.only)
    print(f"bench: {machine()}", flush=True)
    print(f"bench: scenarios {', '.join(names)}; load average {harness.load_average()}", flush=True)
    started = time.perf_counter()
    failed: list[str] = []
    for name in names:
        begun = time.perf_counter()
        load_before = harness.load_average()
        try:
            text = SCENARIOS[name]()
        except Exception as exc:  # one broken scenario must not hide the others' figures
            failed.append(name)
            text = f"{name}: FAILED: {type(exc).__name__}: {str(exc)[-1500:]}"
        print(text, flush=True)
        print(
            f"  [{name}: {time.perf_counter() - begun:.0f} s; load average before "
            f"{load_before}, after {harness.load_average()}]",
            flush=True,
        )
    skipped = [name for name in SCENARIOS if name not in names]
    print(
        f"bench: ran {', '.join(names)} in {time.perf_counter() - started:.0f} s"
        + (f"; skipped {', '.join(skipped)}" if skipped else "")
        + (f"; FAILED {', '.join(failed)}" if failed else ""),
        flush=True,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
