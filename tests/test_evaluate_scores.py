"""Scores over results.parquet and two nights compared: McNemar's exact test and the gate.

The two-nights acceptance runs real nights (`batchrunner run` against the fake API) whose
expected answers match the fake's answers for a chosen set of rows.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrunner.errors import ConfigError
from batchrunner.evaluate import (
    EvalSpec,
    compare,
    mcnemar_p,
    result_column,
    score_results,
    should_fail,
)
from batchrunner.fakeapi import answer_for
from tests.helpers import run_cli, write_jsonl

if TYPE_CHECKING:
    from collections.abc import Collection
    from pathlib import Path

    from batchrunner.evaluate import EvalScores
    from tests.fakeserver import FakeServer

CONTAINS = EvalSpec(scorer="contains", group="topic")
TOPICS = ("geo", "math", "science", "history")


def table(rows: list[dict[str, Any]]) -> pa.Table:
    """A results table with the columns scoring reads, rows given as dicts."""
    return pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("id", pa.string()),
                ("status", pa.string()),
                ("text", pa.string()),
                ("expected", pa.string()),
                ("topic", pa.string()),
            ]
        ),
    )


def mapping(passing: Collection[int], n: int = 200) -> dict[str, bool]:
    """Per-row pass/fail of n rows `r0`.. where the given row numbers pass."""
    return {f"r{i}": i in passing for i in range(n)}


# -- one run ---------------------------------------------------------------------------


def test_scores_count_errored_rows_as_failed_and_list_them() -> None:
    """Accuracy and stderr over all scored rows; errored ones fail and are listed apart."""
    rows: list[dict[str, Any]] = [
        {"id": "a", "status": "succeeded", "text": "Paris.", "expected": "Paris", "topic": "geo"},
        {"id": "b", "status": "succeeded", "text": "Lyon.", "expected": "Paris", "topic": "geo"},
        {"id": "c", "status": "errored", "text": None, "expected": "4", "topic": "math"},
        {"id": "d", "status": "succeeded", "text": "It is 4", "expected": "4", "topic": "math"},
        {"id": "e", "status": "succeeded", "text": "x", "expected": None, "topic": "math"},
        {"id": "f", "status": "succeeded", "text": "cold", "expected": "cold", "topic": None},
    ]
    scores = score_results(CONTAINS, table(rows))
    assert (scores.total.scored, scores.total.passed) == (5, 3)
    assert scores.total.accuracy == 0.6
    assert scores.total.stderr == pytest.approx(math.sqrt(0.6 * 0.4 / 5))
    assert scores.errored == ("c",) and scores.unscored == ("e",)
    assert [(r.id, r.passed, r.reason) for r in scores.rows] == [
        ("a", True, None),
        ("b", False, None),
        ("c", False, None),
        ("d", True, None),
        ("e", None, None),
        ("f", True, None),
    ]
    assert scores.passed_by_id() == {"a": True, "b": False, "c": False, "d": True, "f": True}
    assert scores.to_json() == {
        "scorer": "contains",
        "scored": 5,
        "passed": 3,
        "accuracy": 0.6,
        "stderr": scores.total.stderr,
        "by_group": {
            "(none)": {"scored": 1, "passed": 1, "accuracy": 1.0, "stderr": 0.0},
            "geo": {"scored": 2, "passed": 1, "accuracy": 0.5, "stderr": math.sqrt(0.125)},
            "math": {"scored": 2, "passed": 1, "accuracy": 0.5, "stderr": math.sqrt(0.125)},
        },
        "errored": ["c"],
        "unscored": ["e"],
    }


def test_no_rows_scored_gives_null_accuracy() -> None:
    """An empty table (or one without expected values) has no accuracy, not a crash."""
    scores = score_results(EvalSpec(), table([]))
    assert scores.to_json()["accuracy"] is None and scores.to_json()["stderr"] is None
    assert scores.by_group == {} and scores.rows == ()


def test_judge_verdicts_are_taken_per_row_with_reasons() -> None:
    """Judge verdicts by id: a missing or unclear verdict fails the row and lists it."""
    rows = [
        {"id": i, "status": "succeeded", "text": "t", "expected": "e", "topic": None}
        for i in ("p", "f", "unclear", "missing")
    ]
    rows.append({"id": "err", "status": "errored", "text": None, "expected": "e", "topic": None})
    verdicts = {
        "p": (True, "matches"),
        "f": (False, "wrong"),
        "unclear": (None, "no verdict in the judge's reply: hmm"),
        "err": (True, "never used: the row itself errored"),
    }
    scores = score_results(EvalSpec(scorer="judge"), table(rows), verdicts=verdicts)
    assert [(r.id, r.passed, r.reason) for r in scores.rows] == [
        ("p", True, "matches"),
        ("f", False, "wrong"),
        ("unclear", False, "no verdict in the judge's reply: hmm"),
        ("missing", False, "not judged: no verdict was recorded"),
        ("err", False, None),
    ]
    assert scores.errored == ("unclear", "missing", "err")
    assert (scores.total.scored, scores.total.passed) == (5, 1)
    assert scores.by_group == {}


def test_verdicts_go_with_the_judge_scorer_only() -> None:
    """Verdicts without the judge scorer, or the judge without verdicts, is a caller's bug."""
    with pytest.raises(ValueError, match="verdicts are needed"):
        score_results(EvalSpec(scorer="judge"), table([]))
    with pytest.raises(ValueError, match="verdicts are needed"):
        score_results(EvalSpec(), table([]), verdicts={})


def test_a_missing_column_is_named() -> None:
    """A spec naming a column the results lack raises ConfigError naming the key."""
    with pytest.raises(ConfigError, match=r"\[eval\] expected = 'answer': .* no column 'answer'"):
        score_results(EvalSpec(expected="answer"), table([]))
    with pytest.raises(ConfigError, match=r"\[eval\] group = 'lang'"):
        score_results(EvalSpec(group="lang"), table([]))
    assert result_column("expected", "model", ["id", "model", "input_model"]) == "input_model"
    assert result_column("expected", "topic", ["topic"]) == "topic"


def test_a_carried_column_named_like_a_fixed_one(tmp_path: Path, shared_api: FakeServer) -> None:
    """A real run whose expected column is called `text`: scored from `input_text`."""
    rows = [{"id": f"r{i}", "prompt": f"prompt {i}", "text": f"prompt {i}:"} for i in range(4)]
    rows[3]["text"] = "nowhere"
    out = tmp_path / "run"
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    res = run_cli(["run", str(src), "-o", str(out), "--base-url", shared_api.base_url, "-q"])
    assert res.exit_code == 0, res.stderr
    results = pq.read_table(out / "results.parquet")
    assert "input_text" in results.column_names
    scores = score_results(EvalSpec(expected="text", scorer="contains"), results)
    assert scores.passed_by_id() == {"r0": True, "r1": True, "r2": True, "r3": False}


# -- two nights ------------------------------------------------------------------------


def night(tmp_path: Path, api: FakeServer, name: str, passing: Collection[int]) -> EvalScores:
    """Run 200 rows against the fake API; rows in `passing` expect a word of their answer."""
    rows = []
    for i in range(200):
        prompt = f"prompt number {i}"
        last_word = answer_for(prompt)[0].split()[-1]
        expected = last_word if i in passing else "xyzzy-not-in-any-answer"
        rows.append({"id": f"r{i}", "prompt": prompt, "expected": expected, "topic": TOPICS[i % 4]})
    src = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    out = tmp_path / name
    res = run_cli(["run", str(src), "-o", str(out), "--base-url", api.base_url, "-q"])
    assert res.exit_code == 0, res.stderr
    return score_results(CONTAINS, pq.read_table(out / "results.parquet"))


def test_two_nights_80_then_90_percent(tmp_path: Path, shared_api: FakeServer) -> None:
    """Night two passes a superset: +0.1, 20 improvements, p = 2 * 0.5**20, gate off."""
    first = night(tmp_path, shared_api, "night1", range(160))
    second = night(tmp_path, shared_api, "night2", range(180))
    assert first.total.accuracy == 0.8 and second.total.accuracy == 0.9
    assert second.to_json()["by_group"]["geo"] == {
        "scored": 50,
        "passed": 45,
        "accuracy": 0.9,
        "stderr": pytest.approx(math.sqrt(0.9 * 0.1 / 50), rel=1e-12),
    }
    result = compare(second.passed_by_id(), first.passed_by_id())
    assert result["accuracy"] == 0.9 and result["baseline_accuracy"] == 0.8
    assert result["delta"] == 0.1
    assert result["improvements"] == [f"r{i}" for i in range(160, 180)]
    assert result["regressions"] == []
    assert result["shared"] == 200
    assert result["p_value"] == 2 * 0.5**20 == 1.9073486328125e-06
    assert not should_fail(result, 0.05)


def test_one_regression_in_200_is_noise() -> None:
    """b=1, c=0: p = 1, so the gate stays shut."""
    result = compare(mapping(range(1, 180)), mapping(range(180)))
    assert result["regressions"] == ["r0"] and result["improvements"] == []
    assert result["p_value"] == 1.0
    assert result["delta"] == -0.005
    assert not should_fail(result, 0.05)


def test_thirty_regressions_fail_the_gate() -> None:
    """b=30, c=0: p = 2 * 0.5**30, a significant drop."""
    result = compare(mapping(range(30, 180)), mapping(range(180)))
    assert len(result["regressions"]) == 30 and result["improvements"] == []
    assert result["p_value"] == 2 * 0.5**30
    assert result["delta"] == -0.15
    assert should_fail(result, 0.05)
    assert not should_fail(result, 2 * 0.5**30)  # p < alpha, strictly


def test_a_significant_rise_never_fails_the_gate() -> None:
    """30 improvements and no regressions: significant, but not a drop."""
    result = compare(mapping(range(180)), mapping(range(30, 180)))
    assert result["p_value"] < 1e-8 and not should_fail(result, 0.05)


def test_only_shared_rows_are_compared() -> None:
    """Rows in one night only are left out of both accuracies; no shared row: nothing to say."""
    current = {"a": True, "b": True, "new": False}
    baseline = {"a": False, "b": True, "gone": False}
    result = compare(current, baseline)
    assert result["shared"] == 2
    assert (result["accuracy"], result["baseline_accuracy"], result["delta"]) == (1.0, 0.5, 0.5)
    assert result["improvements"] == ["a"] and result["regressions"] == []
    empty = compare({"x": True}, {"y": False})
    assert empty["shared"] == 0 and empty["accuracy"] is None and empty["delta"] is None
    assert empty["p_value"] == 1.0 and not should_fail(empty, 0.05)


def _exact_p(b: int, c: int) -> Fraction:
    """McNemar's exact two-sided p, straight from the definition with Fractions."""
    n = b + c
    tail = sum((Fraction(math.comb(n, i), 2**n) for i in range(min(b, c) + 1)), Fraction(0))
    return min(Fraction(1), 2 * tail)


@pytest.mark.parametrize(
    ("b", "c", "hand"),
    [
        (0, 0, 1.0),
        (1, 0, 1.0),
        (3, 1, 0.625),  # 2 * (1 + 4) / 16
        (10, 2, 0.03857421875),  # 2 * (1 + 12 + 66) / 4096
        (2, 10, 0.03857421875),
        (5, 5, 1.0),
        (20, 0, 1.9073486328125e-06),  # 2 / 2**20
    ],
)
def test_mcnemar_hand_values(b: int, c: int, hand: float) -> None:
    """The p-values worked out by hand, exactly."""
    assert mcnemar_p(b, c) == hand


@pytest.mark.parametrize(("b", "c"), [(7, 3), (60, 40), (600, 500), (1500, 1400), (2000, 0)])
def test_mcnemar_matches_the_definition(b: int, c: int) -> None:
    """Against the Fraction-sum definition, including large n where floats would drift."""
    assert mcnemar_p(b, c) == float(_exact_p(b, c))
