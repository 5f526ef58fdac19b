"""End to end with --json-schema: the fake API answering bad JSON, re-asks, typed columns.

The CLI in-process against the fake API in a subprocess on loopback; results read back
from results.parquet and calls.log. The fake's `invalid_output` fault answers prose, JSON
cut short or JSON with a field of the wrong type; a "[prose]" prompt always answers prose.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from jsonschema import Draft202012Validator

from tests.fakeserver import FakeServer
from tests.helpers import TEST_KEY, run_cli, write_jsonl

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from click.testing import Result

SCHEMA: dict[str, Any] = {
    "title": "Person",
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "score": {"type": "number"},
    },
    "required": ["name", "age", "score"],
    "additionalProperties": False,
}
TYPED = {"parsed.name": pa.string(), "parsed.age": pa.int64(), "parsed.score": pa.float64()}


@pytest.fixture(scope="module")
def faulty_api() -> Iterator[FakeServer]:
    """A fake whose first answer to 30% of prompts does not fit (once per prompt)."""
    args = ("--fault-rate", "0.3", "--faults", "invalid_output", "--fault-max-per-prompt", "1")
    with FakeServer(*args, api_key=TEST_KEY) as server:
        yield server


def _schema(tmp_path: Path, schema: dict[str, Any] = SCHEMA, name: str = "schema.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(schema), encoding="utf-8")
    return path


def _run(src: Path, out: Path, server: FakeServer, *extra: str) -> Result:
    args = ["run", str(src), "-o", str(out), "--base-url", server.base_url, "--no-progress"]
    return run_cli([*args, *extra])


def _calls(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "calls.log").read_text().splitlines()]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", ["messages", "chat"])
def test_300_rows_succeed_though_30_percent_of_first_answers_do_not_fit(
    tmp_path: Path, faulty_api: FakeServer, api: str, stream: bool
) -> None:
    """Every row ends valid against the schema, its typed columns of the schema's types;
    each bad first answer cost exactly one more attempt, logged as invalid_output."""
    faulty_api.reset()
    rows = [{"id": f"p{i}", "prompt": f"describe person {i}"} for i in range(300)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    mode = "--stream" if stream else "--no-stream"
    res = _run(src, out, faulty_api, "--api", api, mode, "--json-schema", str(_schema(tmp_path)))
    assert res.exit_code == 0, res.stderr
    table = pq.read_table(out / "results.parquet")
    fixed_end = table.schema.names.index("tool_calls") + 1
    assert table.schema.names[fixed_end : fixed_end + 4] == ["parsed", *TYPED]
    assert {name: table.schema.field(name).type for name in TYPED} == TYPED
    validator = Draft202012Validator(SCHEMA)
    results = table.to_pylist()
    assert [r["id"] for r in results] == [r["id"] for r in rows]
    for row in results:
        assert row["status"] == "succeeded", row
        parsed = json.loads(row["parsed"])
        assert validator.is_valid(parsed), parsed
        assert {f"parsed.{k}": v for k, v in parsed.items()} == {k: row[k] for k in TYPED}
        assert parsed["name"] == row["id"].replace("p", "describe person ")
    faults = faulty_api.stats()["fault_counts"].get("invalid_output", 0)
    assert 60 <= faults <= 120, faults  # 30% of 300, as the fake's hash draws them
    attempts = Counter(r["attempts"] for r in results)
    assert attempts == {1: 300 - faults, 2: faults}
    calls = _calls(out)
    assert len(calls) == 300 + faults
    bad = [c for c in calls if c["error_type"] == "invalid_output"]
    assert len(bad) == faults and all(c["attempt"] == 1 for c in bad)
    assert all(c["http_status"] == 200 and c["response_id"] for c in bad)


@pytest.mark.parametrize("api", ["messages", "chat"])
@pytest.mark.parametrize(("retries", "attempts"), [(None, 3), ("0", 1), ("4", 5)])
def test_a_row_answered_with_prose_ends_invalid_output(
    tmp_path: Path, shared_api: FakeServer, api: str, retries: str | None, attempts: int
) -> None:
    """Always prose: invalid_output after 1 + --output-retries attempts (2 by default),
    with the reason, the last answer kept; the other rows succeed; exit 1."""
    rows = [{"id": "ok", "prompt": "describe Ann"}, {"id": "prose", "prompt": "chat [prose]"}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    extra = ["--api", api, "--json-schema", str(_schema(tmp_path))]
    extra += ["--output-retries", retries] if retries is not None else []
    res = _run(src, out, shared_api, *extra)
    assert res.exit_code == 1, res.stderr
    ok, prose = pq.read_table(out / "results.parquet").to_pylist()
    assert ok["status"] == "succeeded" and ok["attempts"] == 1
    assert prose["status"] == "errored" and prose["error_type"] == "invalid_output"
    assert prose["attempts"] == attempts and prose["http_status"] == 200
    reason = "does not call the tool 'Person'" if api == "messages" else "is not JSON"
    assert reason in prose["error_message"] and "chat [prose]" in prose["error_message"]
    assert "[prose]" in prose["response"] and prose["parsed"] is None
    assert prose["tool_calls"] is None and ok["tool_calls"] is not None
    logged = [c for c in _calls(out) if c["row_id"] == "prose"]
    assert [c["attempt"] for c in logged] == list(range(1, attempts + 1))
    assert {c["error_type"] for c in logged} == {"invalid_output"}
    assert shared_api.stats()["answers_total"] == 1 + attempts


def test_a_resume_with_another_schema_is_refused(tmp_path: Path, shared_api: FakeServer) -> None:
    """The schema is part of the run: a resume with another one (or none) is exit 2 naming
    what differs, and sends nothing; the same schema (from another path) resumes."""
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "describe Ann"}])
    out = tmp_path / "out"
    assert _run(src, out, shared_api, "--json-schema", str(_schema(tmp_path))).exit_code == 0
    sent = shared_api.stats()["requests_total"]
    other = {**SCHEMA, "properties": {**SCHEMA["properties"], "age": {"type": "number"}}}
    res = _run(src, out, shared_api, "--json-schema", str(_schema(tmp_path, other, "o.json")))
    assert res.exit_code == 2
    assert "json_schema.properties.age.type: integer -> number" in res.stderr
    res = _run(src, out, shared_api)
    assert res.exit_code == 2 and "settings.request.json_schema" in res.stderr
    moved = _schema(tmp_path, SCHEMA, "moved.json")
    assert _run(src, out, shared_api, "--json-schema", str(moved)).exit_code == 0
    assert shared_api.stats()["requests_total"] == sent


def test_nested_schema_has_parsed_but_no_typed_columns(
    tmp_path: Path, shared_api: FakeServer
) -> None:
    """A schema with a nested field gives the `parsed` column only; a carried-through
    field named `parsed` becomes `input_parsed`."""
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "tags": {"type": "array", "items": {}}},
        "required": ["name", "tags"],
    }
    rows = [{"id": "a", "prompt": "tag Ann", "parsed": "mine"}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    res = _run(
        src, out, shared_api, "--api", "chat", "--json-schema", str(_schema(tmp_path, schema))
    )
    assert res.exit_code == 0, res.stderr
    table = pq.read_table(out / "results.parquet")
    assert table.schema.names[-2:] == ["parsed", "input_parsed"]
    row = table.to_pylist()[0]
    assert json.loads(row["parsed"])["name"] == "tag Ann" and row["input_parsed"] == "mine"


def test_a_schema_no_answer_fits_trips_the_failure_breaker(
    tmp_path: Path, shared_api: FakeServer
) -> None:
    """invalid_output rows are failures like any: `breaker_window` of them in a row stop
    the run (exit 3) with the rows pending, before the rest of the input is paid for."""
    rows = [{"id": f"r{i}", "prompt": f"chat {i} [prose]"} for i in range(20)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    job = tmp_path / "job.toml"
    job.write_text("[limits]\nbreaker_window = 5\nconcurrency = 1\n", encoding="utf-8")
    schema = str(_schema(tmp_path))
    res = _run(src, tmp_path / "out", shared_api, "--job", str(job), "--json-schema", schema)
    assert res.exit_code == 3, res.stderr
    assert "the last 5 rows all failed" in res.stderr and "invalid_output" in res.stderr
    assert "0 of 20 rows recorded, 20 pending" in res.stderr
    assert shared_api.stats()["answers_total"] == 5 * 3  # five rows, each asked three times
