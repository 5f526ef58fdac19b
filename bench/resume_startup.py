"""Resume start-up: seconds from `batchrunner run` starting to its first request, 10 M rows done.

Issue 16 acceptance: resuming a run directory that holds 10 000 000 recorded rows (of
10 001 000) sends its first request within 10 s. The run dir is synthesised (synth.py:
the CLI records the first rows, the rest are written as parts, no requests). A fresh run on
a 1 000-row input runs side by side as the reference (the cost of starting the process at
all); the phases a resume goes through are timed alone to show what dominates. Everything
is built in a temp dir; figures only, and requests go only to the local fake API.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from batchrunner.inputs import input_identity, read_rows, validate
from batchrunner.rundir import RunDir
from batchrunner.spec import SourceOptions
from bench import harness, synth
from tests.fakeserver import FakeServer

RECORDED = 10_000_000
PENDING = synth.PENDING
GOAL_S = 10.0  # issue 16: <= 10 s to the first request with 10 M rows recorded


def first_request(server: FakeServer, cmd: list[str], rows: int) -> tuple[float, float]:
    """(seconds from process start to the first generation request, whole run's seconds).

    Checks the run really sent `rows` requests and exited 0, so a broken resume (one that
    re-sends recorded rows, or fails) cannot pass for a fast one.
    """
    server.reset()
    with tempfile.TemporaryFile() as err:
        started = time.time()
        proc = subprocess.run(
            cmd, env=harness.env(), stdout=subprocess.DEVNULL, stderr=err, check=False
        )
        elapsed = time.time() - started
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{cmd} exited {proc.returncode}: {err.read()[-2000:]!r}")
    log = server.log()
    if len(log) != rows:
        raise RuntimeError(f"expected {rows} requests, the fake API saw {len(log)}")
    return min(float(e["t"]) for e in log) - started, elapsed


def _child_seconds(code: str) -> float:
    """Wall seconds of `python -c code` (interpreter start + the imports it does)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started


def heaviest_imports(count: int = 5) -> list[tuple[str, float]]:
    """Import cost of `batchrunner run` per top-level package: (name, seconds), heaviest first.

    Sums `-X importtime`'s self times over every module of the package, so a package's
    figure is its own cost wherever it was first imported from.
    """
    code = harness.CLI_IMPORTS
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    )
    found: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, _, name = line.removeprefix("import time:").split("|")
        root = name.strip().split(".")[0]
        found[root] = found.get(root, 0.0) + int(own) / 1e6
    return sorted(found.items(), key=lambda item: -item[1])[:count]


def forget_summary(run_dir: Path) -> list[str]:
    """Drop what a manifest holds beyond format, fingerprint and total (a stored input
    summary lets a resume skip validation); returns the dropped keys."""
    path = run_dir / "manifest.json"
    manifest: dict[str, Any] = json.loads(path.read_text())
    extra = sorted(set(manifest) - {"format", "fingerprint", "total_rows"})
    for key in extra:
        del manifest[key]
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return extra


def phases(src: Path, pristine: Path, scratch: Path, total: int) -> dict[str, float]:
    """Each step of a resume alone, in this (warm) process: seconds."""
    out: dict[str, float] = {
        "python_start": _child_seconds("pass"),
        "imports": _child_seconds(harness.CLI_IMPORTS),
    }
    opts = SourceOptions()
    started = time.perf_counter()
    validate(src, opts)
    out["validate"] = time.perf_counter() - started
    started = time.perf_counter()
    fingerprint = {"input": input_identity(src)}
    out["input_identity"] = time.perf_counter() - started
    synth.clone(pristine, scratch)
    manifest: dict[str, Any] = json.loads((scratch / "manifest.json").read_text())
    assert fingerprint["input"] == manifest["fingerprint"]["input"]
    started = time.perf_counter()
    with RunDir.open(
        scratch,
        fingerprint=manifest["fingerprint"],
        total_rows=total,
        retry_errors=False,
        durability="process",
    ) as rundir:
        out["rundir_open"] = time.perf_counter() - started
        # The producer reads rows in order with the done set as `skip`: every recorded line
        # is scanned (a JSONL one not parsed) before the first pending row reaches a worker.
        started = time.perf_counter()
        first = next(read_rows(src, opts, skip=rundir.is_done))  # the generator is dropped
        out["skip_done_rows"] = time.perf_counter() - started
        if first.index != total - PENDING:
            raise RuntimeError(f"first pending row {first.index}, expected {total - PENDING}")
    shutil.rmtree(scratch)
    return out


def main(rounds: int = 3, recorded: int = RECORDED) -> dict[str, Any]:
    """Per round: resume (as built) and a fresh small run; one resume without the stored
    summary (it revalidates the whole input: slow, and its figure moves little)."""
    times: dict[str, list[tuple[float, float]]] = {"resume": [], "revalidate": [], "fresh": []}
    big, pristine, build_s = synth.shared_run_dir(recorded)
    with tempfile.TemporaryDirectory(prefix="bench-resume-") as tmp_name:
        tmp = Path(tmp_name)
        small = harness.write_input(tmp / "small.jsonl", PENDING)
        dropped: list[str] = []
        with FakeServer(api_key=harness.KEY) as server:
            for r in range(rounds):
                kinds = ("resume", "revalidate") if r == 0 else ("resume",)
                for kind in kinds:
                    run_dir = tmp / kind
                    synth.clone(pristine, run_dir)
                    if kind == "revalidate":
                        dropped = forget_summary(run_dir)
                    cmd = harness.ours_command(big, run_dir, server.base_url)
                    times[kind].append(first_request(server, cmd, PENDING))
                cmd = harness.ours_command(small, tmp / f"fresh{r}", server.base_url)
                times["fresh"].append(first_request(server, cmd, PENDING))
        parts = phases(big, pristine, tmp / "scratch", recorded + PENDING)
    res: dict[str, Any] = {
        "recorded": recorded,
        "build_s": build_s,
        "phases": parts,
        "imports": heaviest_imports(),
        "dropped": dropped,
    }
    for kind, pairs in times.items():
        res[f"{kind}_rounds"] = [first for first, _ in pairs]
        res[f"{kind}_first_s"] = harness.median([first for first, _ in pairs])
        res[f"{kind}_total_s"] = harness.median([total for _, total in pairs])
    return res


def summary(res: dict[str, Any]) -> str:
    """The figures as the lines `make bench` prints."""
    ok = "ok" if res["resume_first_s"] <= GOAL_S else "OVER GOAL"
    p = res["phases"]
    rounds = "/".join(f"{s:.2f}" for s in res["resume_rounds"])
    heavy = ", ".join(f"{name} {s:.2f}" for name, s in res["imports"])
    dropped = ", ".join(res["dropped"]) or "nothing: the manifest stores no summary"
    return (
        f"resume: first request {res['resume_first_s']:.2f} s after start resuming "
        f"{res['recorded']:,} recorded rows (rounds {rounds}; goal <= {GOAL_S:.0f} s: {ok}); fresh "
        f"{PENDING:,}-row run {res['fresh_first_s']:.2f} s; "
        f"ratio {res['resume_first_s'] / res['fresh_first_s']:.1f}\n"
        f"  same resume with the manifest's stored summary removed ({dropped}): "
        f"{res['revalidate_first_s']:.2f} s\n"
        f"  whole runs (the resumes assemble every row at the end): resume "
        f"{res['resume_total_s']:.1f} s, without summary "
        f"{res['revalidate_total_s']:.1f} s, fresh {res['fresh_total_s']:.1f} s; building the "
        f"run dir took {res['build_s']:.0f} s\n"
        f"  phases alone (s): python {p['python_start']:.2f}, python+imports "
        f"{p['imports']:.2f}, validate {p['validate']:.2f}, input_identity "
        f"{p['input_identity']:.3f}, RunDir.open {p['rundir_open']:.2f}, read_rows up to the "
        f"first pending row {p['skip_done_rows']:.2f}\n"
        f"  heaviest imports (s, per package): {heavy}"
    )


if __name__ == "__main__":
    print(summary(main()))
