"""--shard I/N: the stable hash, the flag and job-file key, and a shard as a run directory."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
import pytest

from batchrunner.config import load_job
from batchrunner.errors import ConfigError
from batchrunner.rundir import DoneSet, Outcome
from batchrunner.rundir.recorded import read_recorded
from batchrunner.sharding import Shard, parse_shard, shard_of
from tests.fakeserver import FakeServer
from tests.helpers import TEST_KEY, run_cli, start_run, status_json, wait_for_traffic, write_jsonl

if TYPE_CHECKING:
    from pathlib import Path

# The first 16 hex digits of `printf '%s' ID | sha256sum`, computed outside Python: the
# split must be what the README says, on any machine and in any other tool.
SHA256_HEAD = {"q0": "341c0a3e67c31467", "row-00001": "58a95726a1c76ecf", "é": "4a99557e4033c353"}


@pytest.mark.parametrize("row_id", sorted(SHA256_HEAD))
def test_shard_is_the_sha256_head_of_the_utf8_id_mod_n(row_id: str) -> None:
    """shard_of = first 8 bytes of SHA-256(UTF-8 id), big-endian, mod N."""
    for n in (1, 2, 3, 7, 1000):
        assert shard_of(row_id, n) == int(SHA256_HEAD[row_id], 16) % n


def test_shards_split_ids_evenly_and_each_id_once() -> None:
    """10 000 ids over 4 shards: each id in exactly one, each shard within 10% of a quarter."""
    ids = [f"id-{i}" for i in range(10_000)]
    shards = [Shard(i, 4) for i in range(4)]
    owners = [sum(s.owns(x) for s in shards) for x in ids]
    assert set(owners) == {1}
    sizes = Counter(shard_of(x, 4) for x in ids)
    assert all(2250 <= sizes[i] <= 2750 for i in range(4)), sizes


@pytest.mark.parametrize(
    ("text", "problem"),
    [("3", "I/N"), ("a/3", "I/N"), ("3/3", "below N"), ("0/0", "between 1"), ("-1/3", "I/N")],
)
def test_bad_shard_specs_are_refused(text: str, problem: str) -> None:
    """I/N with 0 <= I < N, whole numbers only."""
    with pytest.raises(ValueError, match=problem):
        parse_shard(text)
    assert parse_shard(" 2 / 5 ") == Shard(2, 5)
    assert str(Shard(2, 5)) == "2/5"


def test_job_file_shard_flag_wins_and_limit_is_refused(tmp_path: Path) -> None:
    """[job] shard sets it, --shard overrides it; --limit with a shard is exit 2."""
    job = tmp_path / "job.toml"
    job.write_text('[job]\ninput = "in.jsonl"\noutput = "out"\nshard = "1/4"\n')
    assert load_job(job, input_path=None, output=None, overrides={}).shard == Shard(1, 4)
    flags = {"shard": "3/4"}
    assert load_job(job, input_path=None, output=None, overrides=flags).shard == Shard(3, 4)
    with pytest.raises(ConfigError, match="--limit and --shard"):
        load_job(job, input_path=None, output=None, overrides={"limit": 5})
    bad = run_cli(["run", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "o"), "--shard", "4/4"])
    assert bad.exit_code == 2 and "below N" in bad.stderr


def test_done_set_leaves_other_shards_positions_out_of_its_counts() -> None:
    """10 positions, 6 of other shards: 4 rows, pending until marked, then complete."""
    done = DoneSet(10, outside=6)
    assert (done.counts().total, done.counts().pending) == (4, 4)
    for i in (1, 4, 8):
        done.mark(i, succeeded=True)
    done.mark(9, succeeded=False)
    counts = done.counts()
    assert (counts.total, counts.succeeded, counts.errored, counts.pending) == (4, 3, 1, 0)
    done.recount()
    assert done.counts() == counts
    assert done.count(Outcome.PENDING) == 6  # by position: the other shards' rows


def test_a_bad_row_of_another_shard_refuses_every_shard_alike(tmp_path: Path) -> None:
    """The validation pass checks the whole input: both shards exit 2, nothing sent."""
    rows = [{"id": f"r{i}", "prompt": f"p{i}"} for i in range(20)]
    rows[13] = {"id": "r13", "prompt": ""}
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    with FakeServer(api_key=TEST_KEY) as server:
        errors = set()
        for i in range(2):
            args = ["run", str(src), "-o", str(tmp_path / f"s{i}"), "--shard", f"{i}/2"]
            res = run_cli([*args, "--base-url", server.base_url, "-q"])
            assert res.exit_code == 2
            errors.add(res.stderr)
        assert server.log() == []
    assert len(errors) == 1 and ":14" in errors.pop()


def test_a_shard_is_its_own_run_dir_with_its_own_resume(tmp_path: Path) -> None:
    """A shard sends its rows only, errored rows resume alone, and the fingerprint keeps it."""
    rows = [{"id": f"r{i}", "prompt": f"shard resume {i}"} for i in range(90)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    mine = [r["id"] for r in rows if shard_of(r["id"], 3) == 1]
    out = tmp_path / "s1"
    faults = ["--fault-rate", "0.3", "--faults", "500", "--fault-max-per-prompt", "1"]
    with FakeServer(*faults, api_key=TEST_KEY) as server:
        args = ["run", str(src), "-o", str(out), "--shard", "1/3", "--base-url", server.base_url]
        first = run_cli([*args, "-q", "--max-attempts", "1"])
        assert first.exit_code == 1, first.stderr
        st = status_json(out)
        assert (st["total"], st["pending"], st["shard"]) == (len(mine), 0, "1/3")
        assert 0 < st["errored"] < len(mine)
        assert {e["prompt"] for e in server.log()} == {f"shard resume {x[1:]}" for x in mine}
        sent = len(server.log())
        again = run_cli([*args, "-q", "--retry-errors"])
        assert again.exit_code == 0, again.stderr
        assert len(server.log()) == sent + st["errored"]
        other = run_cli([*args[:5], "0/3", *args[6:], "-q"])
        assert other.exit_code == 2 and "shard: 1/3 -> 0/3" in other.stderr
    assert pq.read_table(out / "results.parquet").column("id").to_pylist() == mine
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["fingerprint"]["shard"] == "1/3"
    assert manifest["input_summary"]["shard_rows"] == len(mine)
    report = json.loads(run_cli(["report", str(out), "--json"]).stdout)
    assert (report["total"], report["complete"]) == (len(mine), True)


@pytest.mark.crash
def test_a_shard_killed_mid_run_resumes_without_resending_and_merges(tmp_path: Path) -> None:
    """kill -9 of shard 0/2, then resume: no row recorded before the kill is sent again,
    and the merge with shard 1/2 has every row once, with its own answer."""
    rows = [{"id": f"k{i}", "prompt": f"killed shard {i}"} for i in range(400)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    s0, s1 = tmp_path / "s0", tmp_path / "s1"
    with FakeServer("--latency", "0.02-0.05", api_key=TEST_KEY) as server:
        proc = start_run(src, s0, server.base_url, "--shard", "0/2", "--concurrency", "16")
        wait_for_traffic(s0, proc)
        deadline = time.monotonic() + 30  # on a loaded machine the first outcome can lag
        while not _recorded_ids(s0) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        before = _recorded_ids(s0)
        assert 0 < len(before) < sum(shard_of(r["id"], 2) == 0 for r in rows)
        for out, shard in ((s0, "0/2"), (s1, "1/2")):
            done = start_run(src, out, server.base_url, "--shard", shard)
            assert done.communicate(timeout=120) and done.returncode == 0
        asked = Counter(e["prompt"] for e in server.log())
    assert all(asked[f"killed shard {x[1:]}"] == 1 for x in before)
    merged = tmp_path / "all"
    assert run_cli(["merge", "-o", str(merged), str(s1), str(s0)]).exit_code == 0
    got = pq.read_table(merged / "results.parquet").to_pylist()
    assert [r["id"] for r in got] == [r["id"] for r in rows]
    assert all(r["text"].startswith(f"Answer to killed shard {r['id'][1:]}:") for r in got)


def _recorded_ids(run_dir: Path) -> set[str]:
    return {r for t in read_recorded(run_dir, ["id"]) for r in t.column("id").to_pylist()}
