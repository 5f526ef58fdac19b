"""Little's law: with 1 s of server latency, N requests in flight give at most N req/s.

3 072 rows at --concurrency 512 against `fake-api --latency 1` should finish at >= 90% of
512 req/s, and the server must never see more than 512 requests in flight. A bare aiohttp
client doing the same requests runs side by side as the reference (the floor for Python);
figures are medians of the rounds, and the ratio ours/reference is what to compare across
machines.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.fakeserver import FakeServer

ROWS = 3072
CONCURRENCY = 512
LATENCY = 1.0
KEY = "bench-key"


def _rate(log: list[dict[str, object]]) -> float:
    """Requests per second from the first arrival to the last answer (arrival + latency)."""
    times = sorted(float(str(e["t"])) for e in log)
    return len(times) / (times[-1] + LATENCY - times[0])


def run_ours(base_url: str, src: Path, out: Path) -> None:
    cmd = [sys.executable, "-m", "batchrunner", "run", str(src), "-o", str(out)]
    cmd += ["--base-url", base_url, "--concurrency", str(CONCURRENCY), "-q"]
    env = {**os.environ, "CAICAINI_API_KEY": KEY}
    subprocess.run(cmd, env=env, check=True, capture_output=True)


async def run_reference(base_url: str, prompts: list[str]) -> None:
    """The same requests from a bare aiohttp session with 512 workers (no files, no retries)."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for p in prompts:
        queue.put_nowait(p)
    headers = {"Authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"}
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            while not queue.empty():
                prompt = queue.get_nowait()
                body = {
                    "model": "caicaini/auto",
                    "max_tokens": 1024,
                    "messages": [{"role": "user", "content": prompt}],
                }
                async with session.post(f"{base_url}/messages", json=body) as resp:
                    await resp.read()

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


def main(rounds: int = 3) -> dict[str, float]:
    ours, ref, max_seen = [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.jsonl"
        prompts = [f"littles law prompt {i}" for i in range(ROWS)]
        src.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
        with FakeServer(*["--latency", str(LATENCY)], api_key=KEY) as server:
            for r in range(rounds):
                server.reset()
                run_ours(server.base_url, src, Path(tmp) / f"run{r}")
                ours.append(_rate(server.log()))
                max_seen = max(max_seen, int(server.stats()["max_in_flight"]))
                server.reset()
                asyncio.run(run_reference(server.base_url, prompts))
                ref.append(_rate(server.log()))
    result = {
        "ours_req_s": statistics.median(ours),
        "reference_req_s": statistics.median(ref),
        "limit_req_s": CONCURRENCY / LATENCY,
        "max_in_flight": float(max_seen),
    }
    result["ours_pct_of_limit"] = 100 * result["ours_req_s"] / result["limit_req_s"]
    result["ratio_ours_vs_reference"] = result["ours_req_s"] / result["reference_req_s"]
    return result


if __name__ == "__main__":
    res = main()
    print(
        f"littles-law: ours {res['ours_req_s']:.0f} req/s = {res['ours_pct_of_limit']:.1f}% of "
        f"{res['limit_req_s']:.0f} (goal >= 90%); bare aiohttp {res['reference_req_s']:.0f} req/s; "
        f"ratio {res['ratio_ours_vs_reference']:.3f}; server max in flight "
        f"{res['max_in_flight']:.0f} (limit {CONCURRENCY})"
    )
