"""Resume semantics through the CLI: skip what is recorded, --retry-errors, growing --limit."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pyarrow.parquet as pq

from tests.fakeserver import FakeServer
from tests.helpers import TEST_KEY, run_cli, write_jsonl

if TYPE_CHECKING:
    from pathlib import Path


def test_retry_errors_replaces_errored_rows_and_plain_resume_sends_nothing(tmp_path: Path) -> None:
    """Errored rows are skipped on resume unless --retry-errors, whose outcomes replace them."""
    rows = [{"id": f"r{i}", "prompt": f"always failing at first {i}"} for i in range(12)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "run"
    faults = ["--fault-rate", "1", "--faults", "500", "--fault-max-per-prompt", "2"]
    with FakeServer(*faults, api_key=TEST_KEY) as server:
        args = ["run", str(src), "-o", str(out), "--base-url", server.base_url, "-q"]
        first = run_cli([*args, "--max-attempts", "2"])
        assert first.exit_code == 1
        table = pq.read_table(out / "results.parquet").to_pylist()
        assert {r["status"] for r in table} == {"errored"}
        assert {(r["attempts"], r["http_status"], r["error_type"]) for r in table} == {
            (2, 500, "api_error")
        }
        sent = len(server.log())
        again = run_cli([*args, "--max-attempts", "2"])
        assert again.exit_code == 1
        assert len(server.log()) == sent, "a plain resume must not re-send errored rows"
        retried = run_cli([*args, "--max-attempts", "2", "--retry-errors"])
        assert retried.exit_code == 0, retried.stderr
        assert len(server.log()) == sent + len(rows)
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert [r["id"] for r in table] == [r["id"] for r in rows]
    assert {r["status"] for r in table} == {"succeeded"}
    status = json.loads(run_cli(["status", str(out), "--json"]).stdout)
    assert (status["succeeded"], status["errored"], status["pending"]) == (12, 0, 0)


def test_a_limited_smoke_run_grows_into_the_full_run(tmp_path: Path, fake_api: FakeServer) -> None:
    """--limit 5 then the full command in the same dir: 5 + 15 requests, 20 results."""
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"p{i}"} for i in range(20)])
    out = tmp_path / "run"
    args = ["run", str(src), "-o", str(out), "--base-url", fake_api.base_url, "-q"]
    assert run_cli([*args, "--limit", "5"]).exit_code == 0
    assert pq.read_table(out / "results.parquet").num_rows == 5
    assert run_cli(args).exit_code == 0
    assert len(fake_api.log()) == 20
    assert pq.read_table(out / "results.parquet").column("id").to_pylist() == [
        str(i) for i in range(20)
    ]


def test_resume_skips_the_validation_pass_but_not_a_changed_input(
    tmp_path: Path, fake_api: FakeServer
) -> None:
    """An unchanged input is not validated again; a changed one is refused (exit 2)."""
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"p{i}"} for i in range(6)])
    out = tmp_path / "run"
    args = ["run", str(src), "-o", str(out), "--base-url", fake_api.base_url, "-q"]
    assert run_cli([*args, "--limit", "3"]).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input_summary"]["rows"] == 6
    write_jsonl(src, [{"prompt": f"p{i}"} for i in range(7)])
    changed = run_cli(args)
    assert changed.exit_code == 2
    assert "input" in changed.stderr


def test_durability_os_run_completes(tmp_path: Path, fake_api: FakeServer) -> None:
    """--durability os (fsync at least once a second) records every row like the default."""
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"p{i}"} for i in range(30)])
    out = tmp_path / "run"
    res = run_cli(
        [
            "run",
            str(src),
            "-o",
            str(out),
            "--base-url",
            fake_api.base_url,
            "-q",
            "--durability",
            "os",
        ]
    )
    assert res.exit_code == 0, res.stderr
    assert pq.read_table(out / "results.parquet").num_rows == 30
