"""DIR/run.json records every invocation (start and end), and `report` shows them, so two
nights can be told apart: version, the job as run, the input's identity, times, counts."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from batchrunner import __version__
from tests.fakeserver import FakeServer
from tests.helpers import TEST_KEY, run_cli, start_run, wait_for_traffic, write_jsonl

if TYPE_CHECKING:
    from pathlib import Path

    from tests.fakeserver import FakeServer as Server


def _run_json(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "run.json").read_text(encoding="utf-8"))
    return data


def _job(tmp_path: Path, rows: int) -> Path:
    write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "prompt": f"q {i}"} for i in range(rows)])
    job = tmp_path / "nightly.toml"
    job.write_text(
        '[job]\ninput = "in.jsonl"\noutput = "run"\n'
        '[request]\nmodel = "caicaini/small"\nmax_tokens = 64\n'
        "[pricing]\ninput_per_mtok = 3.0\noutput_per_mtok = 15.0\n",
        encoding="utf-8",
    )
    return job


def test_run_json_holds_both_invocations_of_a_resumed_run(
    tmp_path: Path, shared_api: Server
) -> None:
    """A smoke run (--limit 4) then the full run in the same DIR: two entries, each with
    its version, times, the job as run, the input's identity and right counts."""
    job = _job(tmp_path, 10)
    out = tmp_path / "run"
    base = ["run", "--job", str(job), "--base-url", shared_api.base_url]
    first = run_cli([*base, "--limit", "4", "--no-progress"])
    assert first.exit_code == 0, first.stderr
    assert " | cost $0.0000 so far | " in first.stderr  # [pricing] reaches the display
    assert len(_run_json(out)["invocations"]) == 1
    second = run_cli([*base, "-q"])
    assert second.exit_code == 0, second.stderr
    cost_line = next(line for line in second.stdout.splitlines() if line.startswith("cost: "))
    assert cost_line.startswith("cost: $0.00") and cost_line.endswith(" this run")

    data = _run_json(out)
    one, two = data["invocations"]
    assert data["format"] == 1 and data["job"] == two["job"]
    assert (one["number"], two["number"]) == (1, 2)
    for entry in (one, two):
        assert entry["version"] == __version__ and entry["exit_code"] == 0
        assert entry["started_at"] < entry["ended_at"] and entry["ended_at"].endswith("Z")
        assert entry["job"]["request"]["model"] == "caicaini/small"
        assert entry["job"]["pricing"] == {"input_per_mtok": 3.0, "output_per_mtok": 15.0}
        assert entry["job"]["input"] == str(tmp_path / "in.jsonl")  # absolute
        assert len(entry["input"]["sha256"]) == 64 and entry["input"]["size"] > 0
        assert entry["this_invocation"]["succeeded"] == entry["this_invocation"]["requests"]
        assert entry["warnings"] == []
    assert one["job"]["limit"] == 4 and two["job"]["limit"] is None
    assert one["counts"] == {"total": 4, "succeeded": 4, "errored": 0, "pending": 0}
    assert two["counts"] == {"total": 10, "succeeded": 10, "errored": 0, "pending": 0}
    assert two["this_invocation"]["succeeded"] == 6
    tokens = sum(e["this_invocation"]["output_tokens"] for e in (one, two))
    assert two["this_invocation"]["cost_usd"] > 0 and tokens > 0
    assert one["ended_at"] <= two["started_at"]

    report = json.loads(run_cli(["report", str(out), "--json"]).stdout)
    assert [e["number"] for e in report["invocations"]] == [1, 2]
    assert report["cost"]["pricing_from"] == str(out / "run.json")
    assert report["output_tokens"]["sum"] == tokens
    text = run_cli(["report", str(out)]).stdout.splitlines()
    runs = [line for line in text if line.startswith("run       #")]
    assert (
        len(runs) == 2 and "exit 0: 4 ok, 0 errored, 4 requests; model caicaini/small" in (runs[0])
    )
    assert f"v{__version__}" in runs[1] and two["input"]["content_sha256"][:12] in runs[1]


@pytest.mark.crash
def test_a_killed_invocation_keeps_its_start_and_the_resume_adds_one(tmp_path: Path) -> None:
    """run.json is written before the first request: a kill -9 leaves that entry (no end),
    the resume appends its own, and `report` says the first one never ended."""
    src = write_jsonl(
        tmp_path / "in.jsonl", [{"id": f"r{i}", "prompt": f"q {i}"} for i in range(40)]
    )
    out = tmp_path / "run"
    with FakeServer("--latency", "0.2", api_key=TEST_KEY) as server:
        proc = start_run(src, out, server.base_url, "--concurrency", "2")
        wait_for_traffic(out, proc)
        proc.kill()
        proc.communicate(timeout=30)
        (started,) = _run_json(out)["invocations"]
        assert started["ended_at"] is None and started["exit_code"] is None
        assert started["counts"]["pending"] == 40
        done = run_cli(["run", str(src), "-o", str(out), "--base-url", server.base_url, "-q"])
    assert done.exit_code == 0, done.stderr
    killed, resumed = _run_json(out)["invocations"]
    assert killed == started
    assert resumed["exit_code"] == 0 and resumed["counts"]["succeeded"] == 40
    assert 0 < resumed["counts"]["succeeded"] - resumed["this_invocation"]["succeeded"] < 40
    text = run_cli(["report", str(out)]).stdout
    assert "to never recorded (killed?), exit ?" in text


def test_an_unreadable_run_json_is_set_aside_not_lost(tmp_path: Path, shared_api: Server) -> None:
    """A run.json that is no history (hand-edited, say) is kept as run.json.unreadable,
    with a warning; a new history starts, and `report` still works."""
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "q"}])
    out = tmp_path / "run"
    args = ["run", str(src), "-o", str(out), "--base-url", shared_api.base_url, "-q"]
    assert run_cli(args).exit_code == 0
    (out / "run.json").write_text("{not json", encoding="utf-8")
    assert "is unreadable" in run_cli(["report", str(out)]).stdout  # read-only: a warning
    again = run_cli(args)
    assert again.exit_code == 0, again.stderr
    assert "run.json was unreadable" in again.stderr
    assert (out / "run.json.unreadable").read_text(encoding="utf-8") == "{not json"
    (entry,) = _run_json(out)["invocations"]
    assert "run.json was unreadable" in entry["warnings"][0]
