"""`make demo`: start the embedded fake API on a free loopback port, run jobs/example.toml
against it, print the summary and a few results, stop the server.

Uses a throwaway key when CAICAINI_API_KEY is unset: the fake API accepts any key then.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent / "batchrunner"


def main() -> int:
    env = dict(os.environ)
    env.setdefault("CAICAINI_API_KEY", "demo-key-not-secret")
    server = subprocess.Popen(
        [str(BIN), "fake-api", "--port", "0", "--latency", "0.05-0.3", "--fault-rate", "0.2"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        first = server.stdout.readline().strip()
        base = first.removeprefix("listening on ")
        print(f"fake API: {base} (20% injected faults, 50-300 ms latency)", flush=True)
        out = ROOT / "runs" / "example"
        shutil.rmtree(out, ignore_errors=True)  # a fresh demo each time
        cmd = [str(BIN), "run", "--job", str(ROOT / "jobs" / "example.toml"), "--base-url", base]
        print("$ batchrunner " + " ".join(cmd[1:]), flush=True)
        code = subprocess.call(cmd, env=env)
        table = pq.read_table(out / "results.parquet")
        print(f"\n{out / 'results.parquet'}: {table.num_rows} rows; columns:")
        print("  " + ", ".join(table.column_names))
        for row in table.slice(0, 5).to_pylist():
            print(
                f"  {row['id']:>4} {row['status']:<9} attempts={row['attempts']} "
                f"{row['response_id']}  {row['text'][:60]!r}"
            )
        print(f"\n$ batchrunner status {out}", flush=True)
        subprocess.call([str(BIN), "status", str(out)], env=env)
        return code
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
