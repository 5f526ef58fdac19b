"""Resume start-up: seconds from `batchrunner run` starting to its first request, 1 M rows done.

Issue acceptance: resuming a run directory that holds 1 000 000 recorded rows (of 1 001 000)
sends its first request within 5 s. A fresh run on a 1 000-row input runs side by side as
the reference (the cost of starting the process at all); the phases a resume goes through
are timed alone to show what dominates. Everything is built in a temp dir; this is a
benchmark that prints figures, not a test, and it sends requests only to the local fake API.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from batchrunner.inputs import input_identity, read_rows, validate
from batchrunner.records import Result
from batchrunner.rundir import RunDir
from batchrunner.spec import SourceOptions
from tests.fakeserver import FakeServer

RECORDED = 1_000_000
PENDING = 1_000
FIRST_RUN = 10  # rows the real CLI records first, so the manifest is the runner's own
FLUSH_ROWS = 2000  # the runner seals a segment into a part every 2 000 outcomes
GOAL_S = 5.0
KEY = "bench-key"
_WORDS = [
    *("violet", "lava", "ember", "apple", "meteor", "cinder", "bridge", "nectar", "juniper"),
    *("sage", "saffron", "quartz", "clover", "shadow", "winter", "salt", "ridge", "prairie"),
    *("aspen", "arch", "bloom", "maple", "dune", "sandal", "oak", "cotton", "bamboo"),
    *("zephyr", "sunset", "copper", "lagoon", "cactus", "harbor", "willow", "glacier"),
]
# Shaped like the fake API's answer, so the parts weigh what a real run's parts weigh.
_RESPONSE = (
    '{"id":"%s","type":"message","role":"assistant","model":"caicaini/auto","content":'
    '[{"type":"text","text":"%s"}],"stop_reason":"end_turn","stop_sequence":null,"usage":'
    '{"input_tokens":%d,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,'
    '"output_tokens":35,"service_tier":"standard"}}'
)


def prompt(i: int) -> str:
    return f"Summarise item {i} in one sentence."


def write_input(path: Path, rows: int) -> None:
    """`rows` simple JSONL rows: an id and a prompt."""
    with path.open("w") as fh:
        for start in range(0, rows, 10_000):
            fh.writelines(
                f'{{"id":"row-{i:07d}","prompt":"{prompt(i)}"}}\n'
                for i in range(start, min(rows, start + 10_000))
            )


def _tails() -> list[str]:
    n = len(_WORDS)
    return [" ".join(_WORDS[(v * 7 + k * 13) % n] for k in range(35)) + "." for v in range(997)]


def fake_result(i: int, tail: str, now_us: int) -> Result:
    """A succeeded outcome for row `i`, as the runner records it after a 200."""
    text = f"Answer to {prompt(i)}: {tail}"
    response_id = f"msg_bench{i:015d}"
    return Result(
        index=i,
        id=f"row-{i:07d}",
        status="succeeded",
        response_id=response_id,
        request_id=f"req_bench{i:015d}",
        model="caicaini/auto",
        text=text,
        stop_reason="end_turn",
        input_tokens=9,
        output_tokens=35,
        attempts=1,
        latency_ms=3.5,
        http_status=200,
        response=_RESPONSE % (response_id, text, 9),
        completed_at_us=now_us + i,
    )


def run_command(src: Path, out: Path, base_url: str, *extra: str) -> list[str]:
    """The command a user types, with the flags every run here shares."""
    cmd = [sys.executable, "-m", "batchrunner", "run", str(src), "-o", str(out)]
    return [*cmd, "--base-url", base_url, "-q", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "CAICAINI_API_KEY": KEY}


def build_run_dir(base_url: str, src: Path, out: Path) -> float:
    """A genuine run dir (the CLI records the first rows), grown to RECORDED rows; seconds.

    The rest are recorded through RunDir exactly as the runner does: same fingerprint
    (read back from the manifest), one journal line per row, a part every FLUSH_ROWS.
    """
    started = time.perf_counter()
    cmd = run_command(src, out, base_url, "--limit", str(FIRST_RUN))
    subprocess.run(cmd, env=_env(), check=True, capture_output=True)
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    tails = _tails()
    now_us = time.time_ns() // 1000
    with RunDir.open(
        out,
        fingerprint=manifest["fingerprint"],
        total_rows=RECORDED + PENDING,
        retry_errors=False,
        durability="process",
        flush_rows=FLUSH_ROWS,
    ) as rundir:
        # Like the runner: commits run one at a time in a worker thread, beside recording.
        with ThreadPoolExecutor(max_workers=1) as committer:
            pending: Future[None] | None = None
            for i in range(FIRST_RUN, RECORDED):
                rundir.record(fake_result(i, tails[i % len(tails)], now_us))
                if (i + 1) % FLUSH_ROWS == 0 or i + 1 == RECORDED:
                    sealed = rundir.seal()
                    if pending is not None:
                        pending.result()
                    pending = None if sealed is None else committer.submit(rundir.commit, sealed)
            if pending is not None:
                pending.result()
        if rundir.done.count_done(RECORDED) != RECORDED:
            raise RuntimeError(f"built run dir holds {rundir.done.count_done()} rows")
    return time.perf_counter() - started


def first_request(server: FakeServer, cmd: list[str], rows: int) -> tuple[float, float]:
    """(seconds from process start to the first generation request, whole run's seconds).

    Checks the run really sent `rows` requests and exited 0, so a broken resume (one that
    re-sends recorded rows, or fails) cannot pass for a fast one.
    """
    server.reset()
    with tempfile.TemporaryFile() as err:
        started = time.time()
        proc = subprocess.run(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=err, check=False)
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
    code = "import batchrunner.cli, batchrunner.runner"
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


def phases(src: Path, pristine: Path, scratch: Path) -> dict[str, float]:
    """Each step of a resume alone, in this (warm) process: seconds."""
    out: dict[str, float] = {
        "python_start": _child_seconds("pass"),
        "imports": _child_seconds("import batchrunner.cli, batchrunner.runner"),
    }
    opts = SourceOptions()
    started = time.perf_counter()
    validate(src, opts)
    out["validate"] = time.perf_counter() - started
    started = time.perf_counter()
    fingerprint = {"input": input_identity(src)}
    out["input_identity"] = time.perf_counter() - started
    shutil.copytree(pristine, scratch)
    manifest: dict[str, Any] = json.loads((scratch / "manifest.json").read_text())
    assert fingerprint["input"] == manifest["fingerprint"]["input"]
    started = time.perf_counter()
    with RunDir.open(
        scratch,
        fingerprint=manifest["fingerprint"],
        total_rows=RECORDED + PENDING,
        retry_errors=False,
        durability="process",
    ) as rundir:
        out["rundir_open"] = time.perf_counter() - started
        # The producer reads rows in order and skips the done ones: 1 M rows parsed
        # before the first pending one reaches a worker.
        started = time.perf_counter()
        first_pending = 0.0
        for row in read_rows(src, opts):
            if not first_pending and not rundir.done.is_done(row.index):
                first_pending = time.perf_counter() - started
        out["skip_done_rows"] = first_pending
    shutil.rmtree(scratch)
    return out


def main(rounds: int = 3) -> dict[str, Any]:
    """Per round: resume (as built), resume without a stored summary, fresh small run."""
    times: dict[str, list[tuple[float, float]]] = {"resume": [], "revalidate": [], "fresh": []}
    with tempfile.TemporaryDirectory(prefix="bench-resume-") as tmp_name:
        tmp = Path(tmp_name)
        big, small = tmp / "big.jsonl", tmp / "small.jsonl"
        write_input(big, RECORDED + PENDING)
        write_input(small, PENDING)
        pristine = tmp / "pristine"
        with FakeServer(api_key=KEY) as server:
            build_s = build_run_dir(server.base_url, big, pristine)
            dropped: list[str] = []
            for r in range(rounds):
                for kind in ("resume", "revalidate"):
                    run_dir = tmp / kind
                    shutil.rmtree(run_dir, ignore_errors=True)
                    shutil.copytree(pristine, run_dir)
                    if kind == "revalidate":
                        dropped = forget_summary(run_dir)
                    cmd = run_command(big, run_dir, server.base_url)
                    times[kind].append(first_request(server, cmd, PENDING))
                cmd = run_command(small, tmp / f"fresh{r}", server.base_url)
                times["fresh"].append(first_request(server, cmd, PENDING))
        parts = phases(big, pristine, tmp / "scratch")
    res: dict[str, Any] = {
        "build_s": build_s,
        "phases": parts,
        "imports": heaviest_imports(),
        "dropped": dropped,
    }
    for kind, pairs in times.items():
        res[f"{kind}_rounds"] = [first for first, _ in pairs]
        res[f"{kind}_first_s"] = statistics.median(first for first, _ in pairs)
        res[f"{kind}_total_s"] = statistics.median(total for _, total in pairs)
    return res


def summary(res: dict[str, Any]) -> str:
    """The figures as the lines `make bench` prints."""
    ok = "ok" if res["resume_first_s"] <= GOAL_S else "OVER GOAL"
    p = res["phases"]
    rounds = "/".join(f"{s:.2f}" for s in res["resume_rounds"])
    heavy = ", ".join(f"{name} {s:.2f}" for name, s in res["imports"])
    dropped = ", ".join(res["dropped"]) or "nothing: the manifest stores no summary"
    return (
        f"resume-startup: first request {res['resume_first_s']:.2f} s after start resuming "
        f"{RECORDED:,} recorded rows (rounds {rounds}; goal <= {GOAL_S:.0f} s: {ok}); fresh "
        f"{PENDING:,}-row run {res['fresh_first_s']:.2f} s; "
        f"ratio {res['resume_first_s'] / res['fresh_first_s']:.1f}\n"
        f"  same resume with the manifest's stored summary removed ({dropped}): "
        f"{res['revalidate_first_s']:.2f} s\n"
        f"  whole runs: resume {res['resume_total_s']:.1f} s, without summary "
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
