"""Little's law: with L s of server latency, C requests in flight give at most C/L req/s.

6 144 rows at --concurrency 1 024 against `fake-api --latency 1`: how close ours comes to
1 024 req/s, beside the bare aiohttp loop doing the same requests against the same server
in the same run (on asyncio's loop and on uvloop, which ours uses). The rate is read from
the server's log: first arrival to last answer. The server must never see more than C
requests in flight from ours. Medians of the rounds; the ratio ours/reference is what to
compare across machines.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import harness
from tests.fakeserver import FakeServer

ROWS = 6144
CONCURRENCY = 1024
LATENCY = 1.0
CLIENTS = ("ours", "aiohttp", "aiohttp-uvloop")
GOAL = 0.95  # issue 16: ours >= 0.95x the bare aiohttp loop's throughput


def command(client: str, src: Path, out: Path, base_url: str, concurrency: int) -> list[str]:
    conc = ["--concurrency", str(concurrency)]
    if client == "ours":
        return harness.ours_command(src, out, base_url, *conc)
    extra = ["--uvloop"] if client == "aiohttp-uvloop" else []
    return harness.reference_command("aiohttp_loop.py", src, out, base_url, *conc, *extra)


def main(
    rounds: int = 3, rows: int = ROWS, concurrency: int = CONCURRENCY, latency: float = LATENCY
) -> dict[str, Any]:
    """Per client: median req/s, its rounds and CPU seconds; ours' largest in-flight count."""
    rates: dict[str, list[float]] = {c: [] for c in CLIENTS}
    cpu: dict[str, list[float]] = {c: [] for c in CLIENTS}
    max_seen = 0
    harness.reference_python()
    with tempfile.TemporaryDirectory(prefix="bench-littles-") as tmp_name:
        tmp = Path(tmp_name)
        src = harness.write_input(tmp / "in.jsonl", rows)
        with FakeServer("--latency", str(latency), api_key=harness.KEY) as server:
            for r in range(rounds):
                for client in CLIENTS:
                    server.reset()
                    out = tmp / f"{client}-{r}"
                    usage = harness.measure(command(client, src, out, server.base_url, concurrency))
                    log = server.log()
                    if sum(1 for e in log if e["status"] == 200) != rows:
                        raise RuntimeError(f"{client}: not every row was answered once")
                    rates[client].append(harness.span_rate(log, latency))
                    cpu[client].append(usage.cpu_s)
                    if client == "ours":
                        max_seen = max(max_seen, int(server.stats()["max_in_flight"]))
    res: dict[str, Any] = {
        "rounds": rounds,
        "rows": rows,
        "concurrency": concurrency,
        "limit_req_s": concurrency / latency,
        "max_in_flight": max_seen,
    }
    for client in CLIENTS:
        res[client] = {
            "req_s": harness.median(rates[client]),
            "rounds_req_s": rates[client],
            "cpu_ms": 1000 * harness.median(cpu[client]) / rows,
        }
    return res


def summary(res: dict[str, Any]) -> str:
    """The lines `make bench` prints."""
    limit = res["limit_req_s"]
    ours = res["ours"]["req_s"]
    lines = [
        f"littles: {res['rows']:,} rows, c={res['concurrency']:,}, {LATENCY:g} s latency "
        f"(limit C/L = {limit:.0f} req/s); medians of {res['rounds']} rounds"
    ]
    for client, label in (
        ("ours", "ours (CLI)"),
        ("aiohttp", "bare aiohttp loop (asyncio)"),
        ("aiohttp-uvloop", "bare aiohttp loop (uvloop)"),
    ):
        f = res[client]
        text = (
            f"  {label}: {f['req_s']:.0f} req/s = {100 * f['req_s'] / limit:.1f}% of the limit "
            f"(rounds {harness.spread(f['rounds_req_s'], '{:.0f}')}), CPU {f['cpu_ms']:.2f} ms/req"
        )
        if client != "ours":
            ratio = ours / f["req_s"]
            text += f"; ours/this {ratio:.3f}"
            if client == "aiohttp":
                text += f" (goal >= {GOAL}: {'ok' if ratio >= GOAL else 'NOT MET'})"
        lines.append(text)
    lines.append(
        f"  server max in flight during ours: {res['max_in_flight']} (cap {res['concurrency']})"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(main()))
