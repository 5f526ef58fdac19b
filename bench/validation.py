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
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import harness

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


def measure(way: str, path: Path, rows: int = ROWS) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of one way over `path`; checks every row was seen."""
    if way == "cli":
        usage = harness.measure([sys.executable, "-m", "batchrunner", "validate", str(path)])
        if f": {rows} rows (" not in usage.stdout:
            raise RuntimeError(f"validate said {usage.stdout!r}")
        return usage.wall_s, usage.maxrss_mib
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", way, str(path)]
    usage = harness.measure(cmd)
    report = json.loads(usage.stdout.strip().splitlines()[-1])
    if report["rows"] != rows:
        raise RuntimeError(f"{way} saw {report['rows']} rows of {rows}")
    return float(report["seconds"]), usage.maxrss_mib


def main(rounds: int = 3, rows: int = ROWS) -> dict[str, dict[str, float]]:
    """Per format and way: median seconds, rows/s and the largest peak RSS (MiB)."""
    res: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
        inputs = write_inputs(Path(tmp), rows)
        for fmt, path in inputs.items():
            seconds: dict[str, list[float]] = {way: [] for way in WAYS}
            rss: dict[str, float] = dict.fromkeys(WAYS, 0.0)
            for _ in range(rounds):
                for way in WAYS:
                    s, mib = measure(way, path, rows)
                    seconds[way].append(s)
                    rss[way] = max(rss[way], mib)
            figures: dict[str, float] = {}
            for way in WAYS:
                figures[f"{way}_s"] = statistics.median(seconds[way])
                figures[f"{way}_rows_s"] = rows / figures[f"{way}_s"]
                figures[f"{way}_rss_mib"] = rss[way]
            figures["ratio_function_vs_floor"] = figures["function_s"] / figures["floor_s"]
            figures["ratio_cli_vs_floor"] = figures["cli_s"] / figures["floor_s"]
            figures["file_mib"] = path.stat().st_size / 2**20
            figures["rows"] = rows
            res[fmt] = figures
    return res


def summary(res: dict[str, dict[str, float]]) -> str:
    """One line per format, as `make bench` prints them."""
    lines = []
    for fmt, f in res.items():
        floor = "json.loads per line" if fmt == "jsonl" else "pyarrow batches to_pylist"
        lines.append(
            f"validation {fmt} ({f['rows']:,.0f} rows, {f['file_mib']:.0f} MiB): validate() "
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
