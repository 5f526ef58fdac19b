"""CPU per request: client CPU seconds / requests, c=256, 50 ms latency, 10 000 rows, chat.

Four clients against one fake API, in turn, round after round: ours (the real CLI with
checkpointing and calls.log), the official-SDK script, and the bare aiohttp loop on
asyncio's loop and on uvloop (ours runs on uvloop). Each runs in its own process; its CPU
(user + system, from wait4) covers the whole process, start-up and imports included.
Medians of the rounds; the ratios are what to compare across machines.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import harness
from tests.fakeserver import FakeServer

ROWS = 10_000
CONCURRENCY = 256
LATENCY = 0.05
CLIENTS = ("ours", "sdk", "aiohttp", "aiohttp-uvloop")
LABELS = {
    "ours": "ours (CLI, --api chat)",
    "sdk": "official SDK (AsyncOpenAI + semaphore)",
    "aiohttp": "bare aiohttp loop (asyncio)",
    "aiohttp-uvloop": "bare aiohttp loop (uvloop)",
}
GOALS = {"sdk": 1 / 6, "aiohttp": 2.0}  # issue 16: <= 1/6 of the SDK's, <= 2x aiohttp's


def command(client: str, src: Path, out: Path, base_url: str) -> list[str]:
    """The command line of one client for one round."""
    conc = ["--concurrency", str(CONCURRENCY)]
    if client == "ours":
        return harness.ours_command(src, out, base_url, "--api", "chat", *conc)
    if client == "sdk":
        return harness.reference_command("sdk_chat.py", src, out / "out.jsonl", base_url, *conc)
    extra = ["--uvloop"] if client == "aiohttp-uvloop" else []
    out_file = out / "out.jsonl"
    return harness.reference_command(
        "aiohttp_loop.py", src, out_file, base_url, "--api", "chat", *conc, *extra
    )


def main(rounds: int = 3, rows: int = ROWS) -> dict[str, Any]:
    """Per client: CPU ms per request (median and rounds), wall seconds, peak RSS MiB."""
    cpu: dict[str, list[float]] = {c: [] for c in CLIENTS}
    wall: dict[str, list[float]] = {c: [] for c in CLIENTS}
    rss: dict[str, list[float]] = {c: [] for c in CLIENTS}
    harness.reference_python()  # install before anything is timed
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp_name:
        tmp = Path(tmp_name)
        src = harness.write_input(tmp / "in.jsonl", rows)
        with FakeServer("--latency", str(LATENCY), api_key=harness.KEY) as server:
            for r in range(rounds):
                for client in CLIENTS:
                    out = tmp / f"{client}-{r}"
                    if client != "ours":
                        out.mkdir()
                    server.reset()
                    usage = harness.measure(command(client, src, out, server.base_url))
                    answered = sum(1 for e in server.log() if e["status"] == 200)
                    if answered != rows:
                        raise RuntimeError(f"{client}: the fake API answered {answered} of {rows}")
                    cpu[client].append(1000 * usage.cpu_s / rows)
                    wall[client].append(usage.wall_s)
                    rss[client].append(usage.maxrss_mib)
    res: dict[str, Any] = {"rounds": rounds, "rows": rows}
    for client in CLIENTS:
        res[client] = {
            "cpu_ms": harness.median(cpu[client]),
            "cpu_rounds": cpu[client],
            "wall_s": harness.median(wall[client]),
            "rss_mib": harness.median(rss[client]),
        }
    return res


def summary(res: dict[str, Any]) -> str:
    """The lines `make bench` prints."""
    ours = res["ours"]["cpu_ms"]
    lines = [
        f"cpu: client CPU per request, {res['rows']:,} rows, c={CONCURRENCY}, "
        f"{LATENCY * 1000:.0f} ms latency, chat; medians of {res['rounds']} rounds"
    ]
    for client in CLIENTS:
        f = res[client]
        ratio = ours / f["cpu_ms"]
        goal = GOALS.get(client)
        verdict = ""
        if goal is not None:
            verdict = f" (goal <= {goal:.3g}: {'ok' if ratio <= goal else 'NOT MET'})"
        ratio_text = "" if client == "ours" else f"; ours/this {ratio:.2f}{verdict}"
        lines.append(
            f"  {LABELS[client]}: {f['cpu_ms']:.3f} ms (rounds "
            f"{harness.spread(f['cpu_rounds'], '{:.3f}')}), wall {f['wall_s']:.1f} s, "
            f"peak RSS {f['rss_mib']:.0f} MiB{ratio_text}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(main()))
