"""Validation speed: `batchrunner validate` over 1 M simple rows, as JSONL and as Parquet.

Each input is measured three ways, each in a fresh child process so that its peak RSS is
its own: the validate() function (the call alone, imports excluded), the CLI (wall time
from spawn to exit) and the floor, a bare loop that only decodes every row
(`json.loads` per line; for Parquet, pyarrow batches turned into dicts). Medians of the
rounds; the ratio to the floor is what to compare across machines. Prints figures only.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS = 1_000_000
WAYS = ("function", "cli", "floor")


def write_inputs(directory: Path, rows: int = ROWS) -> dict[str, Path]:
    """The same `rows` simple rows (id, prompt) as `in.jsonl` and `in.parquet`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = [f"row-{i:07d}" for i in range(rows)]
    prompts = [f"Summarise item {i} in one sentence." for i in range(rows)]
    jsonl, parquet = directory / "in.jsonl", directory / "in.parquet"
    with jsonl.open("w") as fh:
        fh.writelines(f'{{"id":"{i}","prompt":"{p}"}}\n' for i, p in zip(ids, prompts, strict=True))
    pq.write_table(pa.table({"id": ids, "prompt": prompts}), parquet)
    return {"jsonl": jsonl, "parquet": parquet}


def _child(way: str, path: Path) -> None:
    """In the child: do one way's work and print {"seconds", "rows"} as JSON."""
    started = time.perf_counter()
    if way == "function":
        from batchrunner.inputs import validate
        from batchrunner.spec import SourceOptions

        started = time.perf_counter()  # the imports are the CLI's cost, not the function's
        rows = validate(path, SourceOptions()).rows
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = 0
        with pq.ParquetFile(path) as pf:
            for batch in pf.iter_batches():
                rows += len(batch.to_pylist())
    else:
        rows = 0
        with path.open("rb") as fh:
            for line in fh:
                json.loads(line)
                rows += 1
    print(json.dumps({"seconds": time.perf_counter() - started, "rows": rows}))


# A small launcher between this process and the measured one. A child's ru_maxrss starts
# at the RSS of whoever forked it (Linux keeps the pre-exec high-water mark), so spawning
# straight from this process, which may hold a lot by now, would overstate every figure.
_LAUNCHER = """
import json, os, sys, time
started = time.perf_counter()
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
code = os.waitstatus_to_exitcode(status)
print(json.dumps({"wall": wall, "code": code, "maxrss": usage.ru_maxrss}))
"""


def _spawn(cmd: list[str]) -> tuple[float, str, int]:
    """Run `cmd` through the launcher: (wall seconds, its stdout, its own peak RSS in KiB)."""
    launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER]
    proc = subprocess.run([*launcher, *cmd], capture_output=True, text=True, check=True)
    out, _, last = proc.stdout.rstrip("\n").rpartition("\n")
    report = json.loads(last)
    if report["code"] != 0:
        raise RuntimeError(f"{cmd} exited {report['code']}: {proc.stderr[-2000:]!r}")
    return float(report["wall"]), out, int(report["maxrss"])


def measure(way: str, path: Path) -> tuple[float, int]:
    """(seconds, peak RSS KiB) of one way over `path`; checks every row was seen."""
    if way == "cli":
        wall, out, rss = _spawn([sys.executable, "-m", "batchrunner", "validate", str(path)])
        if f": {ROWS} rows (" not in out:
            raise RuntimeError(f"validate said {out!r}")
        return wall, rss
    _, out, rss = _spawn([sys.executable, str(Path(__file__).resolve()), "--child", way, str(path)])
    report = json.loads(out)
    if report["rows"] != ROWS:
        raise RuntimeError(f"{way} saw {report['rows']} rows of {ROWS}")
    return float(report["seconds"]), rss


def main(rounds: int = 3) -> dict[str, dict[str, float]]:
    """Per format and way: median seconds, rows/s and the largest peak RSS (MiB)."""
    res: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
        inputs = write_inputs(Path(tmp))
        for fmt, path in inputs.items():
            seconds: dict[str, list[float]] = {way: [] for way in WAYS}
            rss: dict[str, int] = dict.fromkeys(WAYS, 0)
            for _ in range(rounds):
                for way in WAYS:
                    s, kib = measure(way, path)
                    seconds[way].append(s)
                    rss[way] = max(rss[way], kib)
            figures: dict[str, float] = {}
            for way in WAYS:
                figures[f"{way}_s"] = statistics.median(seconds[way])
                figures[f"{way}_rows_s"] = ROWS / figures[f"{way}_s"]
                figures[f"{way}_rss_mib"] = rss[way] / 1024
            figures["ratio_function_vs_floor"] = figures["function_s"] / figures["floor_s"]
            figures["ratio_cli_vs_floor"] = figures["cli_s"] / figures["floor_s"]
            figures["file_mib"] = path.stat().st_size / 2**20
            res[fmt] = figures
    return res


def summary(res: dict[str, dict[str, float]]) -> str:
    """One line per format, as `make bench` prints them."""
    lines = []
    for fmt, f in res.items():
        floor = "json.loads per line" if fmt == "jsonl" else "pyarrow batches to_pylist"
        lines.append(
            f"validation {fmt} ({ROWS:,} rows, {f['file_mib']:.0f} MiB): validate() "
            f"{f['function_s']:.2f} s = {f['function_rows_s'] / 1e3:.0f}k rows/s, "
            f"{f['function_rss_mib']:.0f} MiB; CLI {f['cli_s']:.2f} s = "
            f"{f['cli_rows_s'] / 1e3:.0f}k rows/s, {f['cli_rss_mib']:.0f} MiB; floor ({floor}) "
            f"{f['floor_s']:.2f} s, {f['floor_rss_mib']:.0f} MiB; ratio validate()/floor "
            f"{f['ratio_function_vs_floor']:.2f}, CLI/floor {f['ratio_cli_vs_floor']:.2f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2], Path(sys.argv[3]))
    else:
        print(summary(main()))
