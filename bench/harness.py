"""What every benchmark shares: child processes measured alone, the references' venv, inputs,
the fake API's request log read as a rate, and the machine's load.

A benchmark here runs real processes against `batchrunner fake-api` on 127.0.0.1 and prints
figures; it asserts nothing about speed. Only loopback traffic, and the key is a made-up
one passed through the environment.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KEY = "bench-key"  # the fake API's key: not a secret, never written to a file
MODEL = "caicaini/auto"
REFS = ROOT / "bench" / "refs"
BENCH_VENV = ROOT / "build" / "bench-venv"
# The references' own packages, pinned so that figures compare across runs; kept out of the
# project's venv so that they measure what a user's separate script would load.
REF_REQUIREMENTS = ("openai==3.57.0", "aiohttp==3.14.5", "uvloop==0.23.0")
# The run's imports, in a process settled as the CLI's is (no numpy, the same allocators):
# the "imports alone" that the scenarios set beside a whole run.
CLI_IMPORTS = (
    "from batchrunner.launch import settle; settle([]); import batchrunner.cli, batchrunner.runner"
)


def rounds(default: int) -> int:
    """Rounds per scenario: BENCH_ROUNDS when set (at least 1), else `default`."""
    text = os.environ.get("BENCH_ROUNDS", "")
    return max(1, int(text)) if text.isdigit() else default


def env() -> dict[str, str]:
    """This environment plus the fake API's key, for every client process."""
    return {**os.environ, "CAICAINI_API_KEY": KEY}


def reference_python() -> Path:
    """The bench venv's python, created and filled on first use (or when the pins change).

    BENCH_REFERENCE_PYTHON names another interpreter holding the same packages instead
    (the smoke test uses the project's venv, which has them, rather than install).
    """
    override = os.environ.get("BENCH_REFERENCE_PYTHON")
    if override:
        return Path(override)
    python = BENCH_VENV / "bin" / "python"
    stamp = BENCH_VENV / ".installed"
    wanted = " ".join(REF_REQUIREMENTS)
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"bench: installing the references into {BENCH_VENV}: {wanted}", flush=True)
    subprocess.run(["python3", "-m", "venv", str(BENCH_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", *REF_REQUIREMENTS]
    subprocess.run(pip, check=True, stdout=subprocess.DEVNULL)
    stamp.write_text(wanted)
    return python


def prompt(i: int) -> str:
    return f"Summarise item {i} in one sentence."


def write_input(path: Path, rows: int) -> Path:
    """`rows` simple JSONL rows: an id and a distinct prompt."""
    with path.open("w") as fh:
        for start in range(0, rows, 10_000):
            fh.writelines(
                f'{{"id":"row-{i:07d}","prompt":"{prompt(i)}"}}\n'
                for i in range(start, min(rows, start + 10_000))
            )
    return path


def ours_command(src: Path, out: Path, base_url: str, *extra: str) -> list[str]:
    """The command a user types (`-q`: no progress display), run by this interpreter."""
    cmd = [sys.executable, "-m", "batchrunner", "run", str(src), "-o", str(out)]
    return [*cmd, "--base-url", base_url, "-q", *extra]


def reference_command(script: str, src: Path, out: Path, base_url: str, *extra: str) -> list[str]:
    """A reference script of bench/refs/ run by the bench venv's python."""
    python = str(reference_python())
    return [python, str(REFS / script), str(src), str(out), "--base-url", base_url, *extra]


@dataclass(frozen=True, slots=True)
class Usage:
    """What one measured child cost: wall and CPU seconds, its own peak RSS, its output."""

    wall_s: float
    cpu_s: float
    maxrss_mib: float
    code: int
    stdout: str
    stderr: str


# A small launcher between this process and the measured one. A child's ru_maxrss starts
# at the RSS of whoever forked it (Linux keeps the pre-exec high-water mark), so spawning
# straight from this process, which may hold a lot by now, would overstate every figure.
# The report goes to a file so that the child's own stdout stays untouched.
_LAUNCHER = """
import json, os, sys, time
started = time.perf_counter()
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
report = {"wall": time.perf_counter() - started, "code": os.waitstatus_to_exitcode(status),
          "cpu": usage.ru_utime + usage.ru_stime, "maxrss": usage.ru_maxrss}
with open(sys.argv[1], "w") as fh:
    json.dump(report, fh)
"""


def measure(cmd: list[str], *, check: bool = True, timeout: float | None = None) -> Usage:
    """Run `cmd` (an absolute executable first) through the launcher and return its Usage.

    Raises RuntimeError when `check` and the child did not exit 0.
    """
    with tempfile.NamedTemporaryFile(suffix=".json") as report_file:
        launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, report_file.name]
        proc = subprocess.run(
            [*launcher, *cmd], capture_output=True, text=True, env=env(), timeout=timeout
        )
        if proc.returncode != 0:
            raise RuntimeError(f"launcher failed: {proc.stderr[-2000:]!r}")
        report = json.loads(Path(report_file.name).read_text())
    usage = Usage(
        wall_s=float(report["wall"]),
        cpu_s=float(report["cpu"]),
        maxrss_mib=int(report["maxrss"]) / 1024,
        code=int(report["code"]),
        stdout=proc.stdout,
        stderr=proc.stderr,
    )
    if check and usage.code != 0:
        raise RuntimeError(f"{cmd[:6]} exited {usage.code}: {usage.stderr[-2000:]!r}")
    return usage


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    """The rounds as `a/b/c`, to show how much they moved."""
    return "/".join(fmt.format(v) for v in values)


def load_average() -> str:
    """`1/5/15-minute load average` from /proc/loadavg (the machine is shared)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- the fake API's request log, read as figures ------------------------------------------


def span_rate(log: list[dict[str, Any]], latency: float) -> float:
    """Requests per second from the first arrival to the last answer (arrival + latency)."""
    times = sorted(float(e["t"]) for e in log)
    return len(times) / (times[-1] + latency - times[0])
