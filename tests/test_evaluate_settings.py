"""The `[eval]` table: every problem named by its key, all at once; columns the input lacks."""

from __future__ import annotations

import tomllib

import pytest

from batchrunner.evaluate import SCORERS, EvalSpec, check_columns, eval_table, parse_eval


def test_an_empty_table_gives_the_defaults() -> None:
    """`[eval]` alone scores the `expected` column exactly, stripping both sides."""
    spec, problems = parse_eval({})
    assert problems == []
    assert spec == EvalSpec()
    assert (spec.expected, spec.scorer, spec.strip, spec.casefold) == (
        "expected",
        "exact",
        True,
        False,
    )
    assert spec.judge_template is None and spec.group is None


def test_every_key_is_read_from_toml() -> None:
    """A full table from a real TOML document becomes the matching spec."""
    section = tomllib.loads(
        """
        [eval]
        expected = "answer"
        scorer = "json"
        strip = false
        casefold = true
        collapse_whitespace = true
        json_keys = ["name", "age"]
        group = "topic"
        """
    )["eval"]
    spec, problems = parse_eval(section)
    assert problems == []
    assert spec == EvalSpec(
        expected="answer",
        scorer="json",
        strip=False,
        casefold=True,
        collapse_whitespace=True,
        json_keys=("name", "age"),
        group="topic",
    )


def test_numeric_and_judge_keys() -> None:
    """An integer tolerance becomes a float; the judge keys are taken as given."""
    numeric, problems = parse_eval({"scorer": "numeric", "tolerance": 1})
    assert problems == [] and numeric is not None
    assert numeric.tolerance == 1.0 and isinstance(numeric.tolerance, float)
    template = "Q {question}\nE {expected}\nA {answer}"
    judge, problems = parse_eval(
        {"scorer": "judge", "judge_model": "caicaini/large", "judge_template": template}
    )
    assert problems == [] and judge is not None
    assert (judge.judge_model, judge.judge_template) == ("caicaini/large", template)


@pytest.mark.parametrize("scorer", SCORERS)
def test_every_documented_scorer_is_accepted(scorer: str) -> None:
    """The seven scorers of the issue are the accepted names."""
    spec, problems = parse_eval({"scorer": scorer})
    assert problems == [] and spec is not None and spec.scorer == scorer
    assert set(SCORERS) == {"exact", "contains", "regex", "json", "numeric", "choice", "judge"}


def test_expected_must_be_a_column_name() -> None:
    """`expected = 5` names the key and the bad value."""
    spec, problems = parse_eval({"expected": 5})
    assert spec is None
    assert problems == ["[eval] expected must be a column name (a non-empty string), not 5"]


def test_an_unknown_scorer_is_named() -> None:
    """`scorer = "fuzzy"` names the key, the value and the choices."""
    spec, problems = parse_eval({"scorer": "fuzzy"})
    assert spec is None and len(problems) == 1
    assert "[eval] scorer must be one of exact, contains, regex" in problems[0]
    assert "'fuzzy'" in problems[0]


def test_an_unknown_key_is_named_with_a_hint() -> None:
    """A misspelt key is named, with the key it probably meant."""
    spec, problems = parse_eval({"scorrer": "exact"})
    assert spec is None and len(problems) == 1
    assert problems[0].startswith("[eval] unknown key 'scorrer' (did you mean 'scorer'?)")
    _, far = parse_eval({"zzz": 1})
    assert far[0].startswith("[eval] unknown key 'zzz'; known keys: expected, scorer")


def test_every_problem_is_listed_at_once() -> None:
    """Wrong types across keys come back together, one message per key, each naming it."""
    spec, problems = parse_eval(
        {
            "expected": "",
            "group": 3,
            "strip": "yes",
            "casefold": 1,
            "collapse_whitespace": None,
            "bogus": True,
        }
    )
    assert spec is None
    keys = ["bogus", "expected", "group", "strip", "casefold", "collapse_whitespace"]
    assert len(problems) == len(keys)
    for key, problem in zip(keys, problems, strict=True):
        assert f"[eval] {key}" in problem or f"'{key}'" in problem


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        ({"scorer": "numeric", "tolerance": -1}, "tolerance must be a number >= 0"),
        ({"scorer": "numeric", "tolerance": True}, "tolerance must be a number >= 0"),
        ({"scorer": "numeric", "tolerance": "0.1"}, "tolerance must be a number >= 0"),
        ({"scorer": "json", "json_keys": "name"}, "json_keys must be a non-empty list"),
        ({"scorer": "json", "json_keys": []}, "json_keys must be a non-empty list"),
        ({"scorer": "json", "json_keys": ["a", 2]}, "json_keys must be a non-empty list"),
        ({"scorer": "judge", "judge_model": ""}, "judge_model must be a non-empty string"),
        ({"scorer": "judge", "judge_template": 7}, "judge_template must be a non-empty string"),
        (
            {"scorer": "judge", "judge_template": "grade {answer}"},
            "judge_template must contain {expected}",
        ),
        (
            {"scorer": "judge", "judge_template": "{question}?"},
            "judge_template must contain {expected} and {answer}",
        ),
    ],
)
def test_bad_values_are_named(section: dict[str, object], needle: str) -> None:
    """Each wrong value gives one problem naming its key and what it should be."""
    spec, problems = parse_eval(section)
    assert spec is None and len(problems) == 1
    assert needle in problems[0]


@pytest.mark.parametrize(
    ("key", "value", "scorer"),
    [
        ("tolerance", 0.5, "exact"),
        ("json_keys", ["a"], "contains"),
        ("judge_model", "caicaini/large", "exact"),
        ("judge_template", "{expected} {answer}", "regex"),
    ],
)
def test_a_key_another_scorer_reads_is_refused(key: str, value: object, scorer: str) -> None:
    """A key that would do nothing with this scorer is a mistake worth naming."""
    spec, problems = parse_eval({"scorer": scorer, key: value})
    assert spec is None
    assert len(problems) == 1
    assert problems[0].startswith(f"[eval] {key} applies only to scorer = ")
    assert f"not {scorer!r}" in problems[0]


def test_check_columns_names_missing_columns() -> None:
    """`expected = "nope"` and a missing group column are each named with the columns."""
    spec = EvalSpec(expected="nope", group="topic")
    problems = check_columns(spec, ["id", "question", "expected"])
    assert problems == [
        "[eval] expected = 'nope': the input has no such column (columns: expected, id, question)",
        "[eval] group = 'topic': the input has no such column (columns: expected, id, question)",
    ]
    assert check_columns(EvalSpec(group="topic"), {"expected", "topic"}) == []
    assert check_columns(EvalSpec(), []) == [
        "[eval] expected = 'expected': the input has no such column (columns: none)"
    ]


@pytest.mark.parametrize(
    "section",
    [
        {},
        {"scorer": "numeric", "tolerance": 0.5, "group": "topic"},
        {"scorer": "json", "json_keys": ["a", "b"], "strip": False},
        {"scorer": "json"},
        {"scorer": "judge", "judge_model": "m", "judge_template": "{expected} {answer}"},
        {"scorer": "regex", "casefold": True, "collapse_whitespace": True},
    ],
)
def test_eval_table_parses_back_to_the_same_spec(section: dict[str, object]) -> None:
    """eval_table (what DIR/eval.json keeps) gives parse_eval the spec it came from, with
    no key that the scorer does not take."""
    spec, problems = parse_eval(section)
    assert spec is not None, problems
    table = eval_table(spec)
    assert parse_eval(table) == (spec, [])
    if spec.scorer != "numeric":
        assert "tolerance" not in table
