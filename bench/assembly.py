"""Assembly of results.parquet from 10 M recorded rows: time and peak RSS.

A synthetic run directory (synth.py: 10 M rows in 2 000-row parts, no requests) is
finalised in a fresh child process exactly as a run ends: `RunDir.open` (recovery rebuilds
the done set from the parts) then `finalize`, which streams the parts into results.parquet
in input order and checks every id once. The floor beside it: a child that copies every
part into one Parquet file with pyarrow (read a part, write it; no ordering, no checks).
Peak RSS is each child's own (wait4 through a launcher). Figures only; no assertion.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    from batchrunner.launch import settle_allocators

    settle_allocators()  # before pyarrow loads (synth imports it), as the CLI's process

from bench import harness, synth

RECORDED = 10_000_000
GOAL_MB = 400.0  # issue 16: assembling 10 M rows stays under 400 MB
WAYS = ("finalize", "floor")


def _child(way: str, run_dir: Path, total: int) -> None:
    """In the child: one way's work; prints {"open_s", "work_s", "rows"} as JSON."""
    import pyarrow.parquet as pq

    from batchrunner.launch import settle_arrow

    settle_arrow()  # as the CLI sets up its process, for both ways
    started = time.perf_counter()
    if way == "finalize":
        from batchrunner.rundir import RunDir

        fingerprint = json.loads((run_dir / "manifest.json").read_text())["fingerprint"]
        with RunDir.open(
            run_dir,
            fingerprint=fingerprint,
            total_rows=total,
            retry_errors=False,
            durability="process",
        ) as rundir:
            opened = time.perf_counter()
            out = rundir.finalize({})
    else:
        opened = time.perf_counter()
        out = run_dir / "floor.parquet"
        parts = sorted((run_dir / "parts").glob("part-*.parquet"))
        schema = pq.read_schema(parts[0])
        with pq.ParquetWriter(out, schema, compression="zstd") as writer:
            for part in parts:
                writer.write_table(pq.read_table(part))
    done = time.perf_counter()
    rows = pq.ParquetFile(out).metadata.num_rows
    print(json.dumps({"open_s": opened - started, "work_s": done - opened, "rows": rows}))


def measure(way: str, run_dir: Path, total: int) -> dict[str, float]:
    """One way over a fresh clone of the run dir: seconds and peak RSS MiB."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", way, str(run_dir), str(total)]
    usage = harness.measure(cmd)
    report = json.loads(usage.stdout.strip().splitlines()[-1])
    if report["rows"] != total:
        raise RuntimeError(f"{way} wrote {report['rows']} rows of {total}")
    return {
        "open_s": report["open_s"],
        "work_s": report["work_s"],
        "rss_mib": usage.maxrss_mib,
        "cpu_s": usage.cpu_s,
    }


def main(rounds: int = 1, recorded: int = RECORDED) -> dict[str, Any]:
    """Medians per way over clones of the shared synthetic run dir (synth.py), whose
    first `recorded` rows are recorded; its pending rows are left out by total_rows."""
    figures: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
    _, pristine, build_s = synth.shared_run_dir(recorded)
    res: dict[str, Any] = {"rounds": rounds, "recorded": recorded, "build_s": build_s}
    res["parts"] = len(list((pristine / "parts").glob("part-*.parquet")))
    with tempfile.TemporaryDirectory(prefix="bench-assembly-") as tmp_name:
        work = Path(tmp_name) / "work"
        for _ in range(rounds):
            for way in WAYS:
                synth.clone(pristine, work)
                figures[way].append(measure(way, work, recorded))
    for way in WAYS:
        res[way] = {k: harness.median([f[k] for f in figures[way]]) for k in figures[way][0]}
    return res


def summary(res: dict[str, Any]) -> str:
    """The lines `make bench` prints."""
    ours, floor = res["finalize"], res["floor"]
    mb = ours["rss_mib"] * 2**20 / 1e6
    verdict = "ok" if mb <= GOAL_MB else "NOT MET"
    built = f"; building the run dir took {res['build_s']:.0f} s"
    return (
        f"assembly: results.parquet from {res['recorded']:,} recorded rows "
        f"in {res['parts']:,} parts (median of {res['rounds']} round(s){built})\n"
        f"  ours (RunDir.open + finalize, one process): finalize {ours['work_s']:.1f} s after "
        f"open {ours['open_s']:.1f} s, peak RSS {ours['rss_mib']:.0f} MiB = {mb:.0f} MB "
        f"(goal < {GOAL_MB:.0f} MB: {verdict})\n"
        f"  floor (pyarrow copies each part into one file): {floor['work_s']:.1f} s, peak RSS "
        f"{floor['rss_mib']:.0f} MiB; ratio ours/floor: time "
        f"{ours['work_s'] / floor['work_s']:.2f}, RSS {ours['rss_mib'] / floor['rss_mib']:.2f}"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))
    else:
        print(summary(main()))
