"""Nightly evaluations end to end: `[eval]` checked, real nights scored, compared and gated.

Each night is a real `batchrunner run` against the fake API whose expected answers match
the fake's answers for a chosen set of rows; `report` then reads the run directories alone.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from batchrunner.fakeapi import answer_for
from tests.helpers import read_results, run_cli, write_jsonl

if TYPE_CHECKING:
    from collections.abc import Collection

    from click.testing import Result as CliResult

    from tests.fakeserver import FakeServer

REPO = Path(__file__).resolve().parents[1]
TOPICS = ("geo", "math", "science", "history")
EXACT = '[eval]\nexpected = "expected"\nscorer = "exact"\ngroup = "topic"\n'


def job_file(tmp_path: Path, body: str, name: str = "job.toml") -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def night(
    tmp_path: Path, api: FakeServer, name: str, passing: Collection[int], n: int = 200
) -> Path:
    """Run n rows; the rows in `passing` expect the fake's exact answer, the others not."""
    rows = []
    for i in range(n):
        prompt = f"nightly question {i}"
        expected = answer_for(prompt)[0] if i in passing else "an answer nobody gives"
        rows.append({"id": f"q{i}", "prompt": prompt, "expected": expected, "topic": TOPICS[i % 4]})
    src = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    out = tmp_path / name
    job = job_file(tmp_path, EXACT, f"{name}.toml")
    args = ["run", str(src), "--job", str(job), "-o", str(out), "--base-url", api.base_url, "-q"]
    res = run_cli(args)
    assert res.exit_code == 0, res.stderr
    return out


def report(*args: str | Path) -> CliResult:
    return run_cli(["report", *map(str, args)])


def report_json(*args: str | Path) -> dict[str, Any]:
    res = report(*args, "--json")
    assert res.exit_code == 0, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def exact_mcnemar(b: int, c: int) -> float:
    """McNemar's exact two-sided p from its definition, in Fractions."""
    n = b + c
    tail = sum((Fraction(math.comb(n, i), 2**n) for i in range(min(b, c) + 1)), Fraction(0))
    return float(min(Fraction(1), 2 * tail))


def test_two_nights_at_80_and_90_percent(tmp_path: Path, shared_api: FakeServer) -> None:
    """Night two against night one: 0.9 vs 0.8, delta +0.1, 20 improvements, exact p; the
    --fail-under gate at 0.95 fails and at 0.85 passes."""
    first = night(tmp_path, shared_api, "night1", range(160))
    second = night(tmp_path, shared_api, "night2", range(180))
    data = report_json(second, "--baseline", first)
    ev, base = data["eval"], data["baseline"]
    assert (ev["scorer"], ev["scored"], ev["passed"], ev["accuracy"]) == ("exact", 200, 180, 0.9)
    assert ev["stderr"] == pytest.approx(math.sqrt(0.9 * 0.1 / 200), rel=1e-12)
    assert ev["by_group"]["geo"]["scored"] == 50 and ev["errored"] == []
    assert (base["accuracy"], base["current_accuracy"], base["delta"]) == (0.8, 0.9, 0.1)
    assert base["improvements"] == [f"q{i}" for i in range(160, 180)]
    assert base["regressions"] == [] and base["shared"] == 200
    assert base["p_value"] == exact_mcnemar(0, 20) == 1.9073486328125e-06
    assert base["run_dir"] == str(first)
    assert report(second, "--fail-under", "0.95").exit_code == 1
    assert report(second, "--fail-under", "0.85").exit_code == 0
    gated = report(second, "--baseline", first, "--fail-on-regression")
    assert gated.exit_code == 0, gated.stderr  # a significant rise is no regression


def test_one_regression_is_noise_thirty_are_not(tmp_path: Path, shared_api: FakeServer) -> None:
    """1 regression in 200 passes --fail-on-regression (p = 1); 30 and no improvements fail
    it, and the text lists the first regressions with expected vs answer."""
    base = night(tmp_path, shared_api, "base", range(180))
    one = night(tmp_path, shared_api, "one", range(1, 180))
    thirty = night(tmp_path, shared_api, "thirty", range(30, 180))
    res = report(one, "--baseline", base, "--fail-on-regression")
    assert res.exit_code == 0, res.stderr
    assert "1 regressions, McNemar exact p = 1" in res.stdout
    res = report(thirty, "--baseline", base, "--fail-on-regression")
    assert res.exit_code == 1
    assert "gate failed: a significant drop against the baseline: 30 regressions" in res.stderr
    assert "  regressed q0: expected 'an answer nobody gives', answer 'Answer to" in res.stdout
    assert "... and 20 more regressions" in res.stdout
    assert (
        report(thirty, "--baseline", base, "--fail-on-regression", "--alpha", "1e-10").exit_code
        == 0
    )
    data = report_json(thirty, "--baseline", base)
    assert data["baseline"]["regressions"] == [f"q{i}" for i in range(30)]
    assert data["baseline"]["p_value"] == exact_mcnemar(30, 0)


def test_errored_rows_fail_and_are_listed_apart(tmp_path: Path, shared_api: FakeServer) -> None:
    """A row the API refuses (temperature 5, a 400) is errored: not passed, listed under
    `errored`; export carries `passed` per row."""
    rows: list[dict[str, Any]] = [
        {"id": f"r{i}", "prompt": f"p{i}", "expected": answer_for(f"p{i}")[0]} for i in range(4)
    ]
    rows[2]["temperature"] = 5  # refused by the fake: a 400, recorded as an errored row
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "run"
    job = job_file(tmp_path, "[eval]\n")
    res = run_cli(
        [
            "run",
            str(src),
            "--job",
            str(job),
            "-o",
            str(out),
            "--base-url",
            shared_api.base_url,
            "-q",
        ]
    )
    assert res.exit_code == 1, res.stderr
    ev = report_json(out)["eval"]
    assert (ev["scored"], ev["passed"], ev["errored"]) == (4, 3, ["r2"])
    assert "errored   r2" in report(out).stdout
    lines = run_cli(["export", str(out), "--format", "jsonl"]).stdout.splitlines()
    exported = [json.loads(line) for line in lines]
    assert [(r["id"], r["passed"], r["reason"]) for r in exported] == [
        ("r0", True, None),
        ("r1", True, None),
        ("r2", False, None),
        ("r3", True, None),
    ]
    csv = run_cli(["export", str(out), "--format", "csv"]).stdout.splitlines()
    assert csv[0].endswith('"passed","reason"') and csv[1].endswith(",true,")


def test_report_without_eval_and_the_gate_options(tmp_path: Path, shared_api: FakeServer) -> None:
    """No [eval]: `eval` is null and a gate is a usage error; --alpha and --fail-on-regression
    need their partners; --job FILE's [eval] scores a run made without one."""
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "x", "expected": "no"}])
    out = tmp_path / "run"
    assert (
        run_cli(
            ["run", str(src), "-o", str(out), "--base-url", shared_api.base_url, "-q"]
        ).exit_code
        == 0
    )
    assert not (out / "eval.json").exists()
    data = report_json(out)
    assert data["eval"] is None and data["baseline"] is None
    res = report(out, "--fail-under", "0.5")
    assert res.exit_code == 2 and "no [eval]" in res.stderr
    assert "needs --baseline" in report(out, "--fail-on-regression").stderr
    assert "--alpha applies to --fail-on-regression" in report(out, "--alpha", "0.1").stderr
    job = job_file(tmp_path, '[eval]\nscorer = "contains"\ncasefold = true\n')
    assert report_json(out, "--job", job)["eval"]["passed"] == 0
    res = report(out, "--job", job, "--fail-under", "0")
    assert res.exit_code == 0, res.stderr
    exported = json.loads(run_cli(["export", str(out), "--format", "jsonl"]).stdout)
    assert "passed" not in exported  # export scores by DIR/eval.json only


def test_an_unfinished_run_has_no_scores_and_fails_a_gate(tmp_path: Path) -> None:
    """Before results.parquet is written there are no scores: a warning, and any gate fails;
    an unfinished baseline is refused."""
    from tests.helpers import make_result, open_run

    out = tmp_path / "run"
    with open_run(out, total=2) as rd:
        rd.record(make_result(0))
        rd.seal()
    (out / "eval.json").write_text('{"eval": {"scorer": "contains"}}', encoding="utf-8")
    data = report_json(out)
    assert data["eval"] is None
    assert any("results.parquet is not written" in w for w in data["warnings"])
    res = report(out, "--fail-under", "0")
    assert res.exit_code == 1 and "no accuracy" in res.stderr
    res = report(out, "--baseline", out)
    assert res.exit_code == 2 and "no results.parquet" in res.stderr


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ('expected = "nope"', "[eval] expected = 'nope': the input has no such column"),
        ('group = "nope"', "[eval] group = 'nope': the input has no such column"),
        ('scorer = "fuzzy"', "[eval] scorer must be one of exact, contains, regex, json"),
        ("expected = 5", "[eval] expected must be a column name (a non-empty string), not 5"),
        ("expect = 'x'", "[eval] unknown key 'expect' (did you mean 'expected'?)"),
        ("tolerance = 1", "[eval] tolerance applies only to scorer = 'numeric'"),
    ],
)
def test_validate_refuses_a_bad_eval_table(tmp_path: Path, table: str, named: str) -> None:
    """`validate` exits 2 naming the key and value: an unknown column, scorer or key."""
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "x", "expected": "y"}])
    job = job_file(tmp_path, f"[eval]\n{table}\n")
    res = run_cli(["validate", str(src), "--job", str(job)])
    assert res.exit_code == 2
    assert named in res.stderr


def test_validate_accepts_present_columns_and_run_refuses_a_missing_one(
    tmp_path: Path, shared_api: FakeServer
) -> None:
    """Columns that exist pass `validate`; `run` with a missing one exits 2 sending nothing."""
    src = write_jsonl(
        tmp_path / "in.jsonl", [{"id": "a", "prompt": "x", "expected": "y", "topic": "t"}]
    )
    good = job_file(tmp_path, '[eval]\ngroup = "topic"\n', "good.toml")
    assert run_cli(["validate", str(src), "--job", str(good)]).exit_code == 0
    bad = job_file(tmp_path, '[eval]\nexpected = "answer"\n', "bad.toml")
    out = tmp_path / "run"
    res = run_cli(
        ["run", str(src), "--job", str(bad), "-o", str(out), "--base-url", shared_api.base_url]
    )
    assert res.exit_code == 2 and "'answer': the input has no such column" in res.stderr
    assert shared_api.stats()["requests_total"] == 0


def test_the_nightly_example_runs_two_nights(tmp_path: Path, shared_api: FakeServer) -> None:
    """jobs/nightly-eval.toml, twice: the scores the fake's answers predict, per topic, and
    the second night against the first (the fake is deterministic: nothing changed)."""
    job = REPO / "jobs" / "nightly-eval.toml"
    nights = []
    for name in ("monday", "tuesday"):
        out = tmp_path / name
        args = ["run", "--job", str(job), "-o", str(out), "--base-url", shared_api.base_url, "-q"]
        res = run_cli(args)
        assert res.exit_code == 0, res.stderr
        nights.append(out)
    rows = [json.loads(line) for line in (REPO / "jobs/data/eval.jsonl").read_text().splitlines()]
    assert len(rows) == 50 and {r["topic"] for r in rows} >= {"geography", "math"}
    predicted = {}
    for row in rows:
        prompt = f"Question: {row['question']}\nAnswer with one word."
        predicted[row["id"]] = (
            row["expected"].casefold() in answer_for(prompt, max_tokens=64)[0].casefold()
        )
    data = report_json(nights[1], "--baseline", nights[0], "--job", job)
    ev = data["eval"]
    assert (ev["scorer"], ev["scored"], ev["passed"]) == ("contains", 50, sum(predicted.values()))
    assert 0 < ev["passed"] < 50
    geo = [r["id"] for r in rows if r["topic"] == "geography"]
    assert ev["by_group"]["geography"]["passed"] == sum(predicted[i] for i in geo)
    assert data["baseline"]["delta"] == 0 and data["baseline"]["p_value"] == 1.0
    assert data["cost"] is not None  # --job's [pricing]
    res = report(nights[1], "--baseline", nights[0], "--fail-on-regression", "--fail-under", "0.2")
    assert res.exit_code == 0, res.stderr
    passed = {
        r["id"]: r["passed"]
        for r in map(
            json.loads, run_cli(["export", str(nights[1]), "--format", "jsonl"]).stdout.splitlines()
        )
    }
    assert passed == predicted
    assert [r["id"] for r in read_results(nights[1])] == [r["id"] for r in rows]
