"""A run directory with millions of recorded rows, synthesised without sending them.

The real CLI records the first rows (so the manifest, fingerprint and stored input summary
are the runner's own); the rest are written straight as Parquet parts with the run
directory's own part writer and schema (`rundir.parts.write_part`, `PART_SCHEMA`), one part
per 2 000 rows as the runner seals them, rows shaped like the fake API's answers so the
parts weigh what a real run's parts weigh. Only loopback traffic: the first rows' requests.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import string
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from batchrunner.rundir import RunDir
from batchrunner.rundir.files import list_parts
from batchrunner.rundir.parts import PART_SCHEMA, write_part
from bench import harness
from tests.fakeserver import FakeServer

FIRST_RUN = 10  # rows the real CLI records first
FLUSH_ROWS = 2000  # the runner seals a segment into a part every 2 000 outcomes
_WORDS = """
    amber anchor apple arch aspen atlas autumn badge bamboo basin beacon birch bloom breeze
    bridge brook cabin cactus candle canyon cedar chalk cherry cider cinder clover cobalt
    comet copper coral cotton crater daisy delta desert dune eagle ember falcon fern fjord
    flint forest fossil garnet glacier granite harbor hazel heron indigo island ivory jasper
    juniper lagoon lantern lava maple marble meadow meteor moss nectar oak oasis ocean olive
    orchid pebble pine prairie quartz raven ridge river saffron sage salt sandal shadow
    slate summit sunset thistle tide topaz tundra velvet violet willow winter zephyr
""".split()  # noqa: SIM905 - words read better as prose than as a list literal
_ID_CHARS = string.ascii_letters + string.digits
# Shaped like the fake API's answer (messages convention).
_RESPONSE = (
    '{"id":"%s","type":"message","role":"assistant","model":"caicaini/auto","content":'
    '[{"type":"text","text":"%s"}],"stop_reason":"end_turn","stop_sequence":null,"usage":'
    '{"input_tokens":9,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,'
    '"output_tokens":11,"service_tier":"standard"}}'
)


def part_table(start: int, stop: int, now_us: int) -> pa.Table:
    """Succeeded outcomes for rows start..stop-1, as the runner records them after a 200.

    Like a real run's rows, the answers' words, the ids the server made up and the
    latencies vary at random (seeded by `start`, so a build is repeatable). Parts then take
    ~140 bytes a row, a real run's ~200; with counters instead they took 26.
    """
    rng = random.Random(start)
    rows = range(start, stop)
    n = len(rows)
    words = rng.choices(_WORDS, k=10 * n)
    texts = [
        f"Answer to {harness.prompt(i)}: {' '.join(words[10 * k : 10 * k + 10])}."
        for k, i in enumerate(rows)
    ]
    ids = "".join(rng.choices(_ID_CHARS, k=48 * n))
    response_ids = ["msg_" + ids[48 * k : 48 * k + 24] for k in range(n)]
    columns: dict[str, Any] = {
        "id": [f"row-{i:07d}" for i in rows],
        "status": ["succeeded"] * n,
        "response_id": response_ids,
        "request_id": ["req_" + ids[48 * k + 24 : 48 * k + 48] for k in range(n)],
        "model": [harness.MODEL] * n,
        "text": texts,
        "stop_reason": ["end_turn"] * n,
        "input_tokens": [9] * n,
        "output_tokens": [11] * n,
        "attempts": [1] * n,
        "latency_ms": [rng.uniform(2.0, 60.0) for _ in rows],
        "http_status": [200] * n,
        "error_type": [None] * n,
        "error_message": [None] * n,
        "response": [_RESPONSE % pair for pair in zip(response_ids, texts, strict=True)],
        "completed_at": [now_us + 50 * i + rng.randrange(50) for i in rows],
        "_index": list(rows),
        "tool_calls": [None] * n,
        "_extra": [None] * n,
        "parsed": [None] * n,
    }
    return pa.Table.from_pydict(columns, schema=PART_SCHEMA)


def build_run_dir(base_url: str, src: Path, out: Path, *, recorded: int, total: int) -> float:
    """A run dir over `src` (`total` rows) with rows 0..recorded-1 recorded; seconds taken."""
    started = time.perf_counter()
    cmd = harness.ours_command(src, out, base_url, "--limit", str(FIRST_RUN))
    subprocess.run(cmd, env=harness.env(), check=True, capture_output=True)
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    seq = max((s for s, _ in list_parts(out / "parts")), default=0) + 1
    now_us = time.time_ns() // 1000
    for start in range(FIRST_RUN, recorded, FLUSH_ROWS):
        table = part_table(start, min(recorded, start + FLUSH_ROWS), now_us)
        write_part(out / "parts", seq, [table], run_dir=out)
        seq += 1
    # Opening recovers every part, as a resume does, and records the input's full size.
    with RunDir.open(
        out,
        fingerprint=manifest["fingerprint"],
        total_rows=total,
        retry_errors=False,
        durability="process",
    ) as rundir:
        if rundir.done.count_done(recorded) != recorded:
            raise RuntimeError(f"built run dir holds {rundir.done.count_done()} rows")
    return time.perf_counter() - started


def clone(pristine: Path, to: Path) -> None:
    """A working copy of a built run dir: parts hard-linked (they are never changed in
    place, only replaced or removed), everything else copied."""
    shutil.rmtree(to, ignore_errors=True)

    def link_parts(src: str, dst: str) -> None:
        if src.endswith(".parquet") and os.sep + "parts" + os.sep in src:
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)

    shutil.copytree(pristine, to, copy_function=link_parts)


PENDING = 1000  # rows of the input left unrecorded, for a resume to send
_SHARED: dict[int, tuple[Path, Path, float]] = {}
_KEEP: list[tempfile.TemporaryDirectory[str]] = []


def shared_run_dir(recorded: int) -> tuple[Path, Path, float]:
    """(input, pristine run dir, seconds its build took): `recorded` of recorded + PENDING
    rows, built once per process and shared by the scenarios that only read clones of it."""
    if recorded not in _SHARED:
        tmp = tempfile.TemporaryDirectory(prefix="bench-synth-")
        _KEEP.append(tmp)  # removed when this process exits
        src = harness.write_input(Path(tmp.name) / "in.jsonl", recorded + PENDING)
        pristine = Path(tmp.name) / "pristine"
        with FakeServer(api_key=harness.KEY) as server:
            build_s = build_run_dir(
                server.base_url, src, pristine, recorded=recorded, total=recorded + PENDING
            )
        _SHARED[recorded] = (src, pristine, build_s)
    return _SHARED[recorded]
