"""The deterministic scorers: a pass and a fail for each, and what each normalisation key does."""

from __future__ import annotations

from dataclasses import replace

import pytest

from batchrunner.evaluate import EvalSpec, chosen_letter, score
from batchrunner.evaluate.scorers import expected_text, normalise

EXACT = EvalSpec(scorer="exact")


def spec(**fields: object) -> EvalSpec:
    """An EvalSpec with these fields changed."""
    return replace(EvalSpec(), **fields)  # type: ignore[arg-type]


def test_normalise_applies_each_key() -> None:
    """collapse_whitespace, strip and casefold each change the text, and only when set."""
    text = "  Straße \n\t Nord  "
    raw = spec(strip=False)
    assert normalise(raw, text) == text
    assert normalise(spec(), text) == "Straße \n\t Nord"
    assert normalise(spec(strip=False, collapse_whitespace=True), text) == " Straße Nord "
    assert normalise(spec(collapse_whitespace=True, casefold=True), text) == "strasse nord"


def test_expected_values_become_text() -> None:
    """Strings stay; integral floats lose `.0`; other values are JSON."""
    assert expected_text("Paris") == "Paris"
    assert expected_text(4) == "4"
    assert expected_text(4.0) == "4"
    assert expected_text(2.5) == "2.5"
    assert expected_text(True) == "true"
    assert expected_text({"a": [1, "é"]}) == '{"a": [1, "é"]}'


def test_exact() -> None:
    """Whole-answer equality after normalisation; an int expected matches its digits."""
    assert score(EXACT, "Paris\n", "Paris")
    assert not score(EXACT, "Paris, France", "Paris")
    assert not score(EXACT, "paris", "Paris")
    assert score(spec(casefold=True), "paris", "PARIS")
    assert not score(spec(strip=False), "Paris\n", "Paris")
    assert not score(EXACT, "New  York", "New York")
    assert score(spec(collapse_whitespace=True), "New \n York", "New York")
    assert score(EXACT, "4", 4)
    assert score(EXACT, "4", 4.0)


def test_contains() -> None:
    """The normalised expected text appears somewhere in the normalised answer."""
    contains = spec(scorer="contains")
    assert score(contains, "The capital is Paris.", "Paris")
    assert not score(contains, "The capital is Lyon.", "Paris")
    assert not score(contains, "the capital is paris.", "Paris")
    assert score(replace(contains, casefold=True), "THE CAPITAL IS PARIS.", "paris")
    assert not score(contains, "New\nYork", "New York")
    assert score(replace(contains, collapse_whitespace=True), "in New\n  York", "New York")
    assert score(contains, "Paris", " Paris ")
    assert not score(replace(contains, strip=False), "Paris", " Paris ")


def test_regex() -> None:
    """The expected value is a pattern searched in the answer; casefold means IGNORECASE."""
    regex = spec(scorer="regex")
    assert score(regex, "It costs 42 dollars", r"\b4\d\b")
    assert not score(regex, "It costs 52 dollars", r"\b4\d\b")
    assert not score(regex, "PARIS", "Paris")
    assert score(replace(regex, casefold=True), "PARIS", "Paris")
    # casefold must not fold the pattern itself: \S stays "not a space"
    assert not score(replace(regex, casefold=True), "   ", r"\S")
    assert not score(regex, "New\nYork", "^New York$")
    assert score(replace(regex, collapse_whitespace=True), "New\n York", "^New York$")
    assert score(regex, "  Paris  ", "^Paris$")
    assert not score(replace(regex, strip=False), "  Paris  ", "^Paris$")


def test_a_bad_pattern_fails_the_row() -> None:
    """A pattern that does not compile fails its row instead of stopping the scoring."""
    assert not score(spec(scorer="regex"), "anything (", "(")


def test_json_whole_values() -> None:
    """Both sides parsed: key order and spacing do not matter, values and types do."""
    as_json = spec(scorer="json")
    assert score(as_json, '{"b": [1, 2], "a": "x"}', '{"a":"x","b":[1,2]}')
    assert not score(as_json, '{"a": "x", "b": [2, 1]}', '{"a":"x","b":[1,2]}')
    assert score(as_json, '{"n": 1.0}', '{"n": 1}')
    assert not score(as_json, '{"flag": 1}', '{"flag": true}')
    assert not score(as_json, '{"flag": true}', '{"flag": 1}')
    assert not score(as_json, '["1"]', "[1]")
    assert score(as_json, '{"a": {"b": null}}', {"a": {"b": None}})
    assert score(as_json, "[1, 2]", [1, 2])
    assert not score(as_json, '{"a": 1, "extra": 2}', '{"a": 1}')


def test_json_in_fences_and_junk() -> None:
    """An answer wholly wrapped in ``` fences is read; junk on either side fails."""
    as_json = spec(scorer="json")
    assert score(as_json, '```json\n{"a": 1}\n```', '{"a": 1}')
    assert score(as_json, '  ```\n{"a": 1}```\n', '{"a": 1}')
    assert not score(as_json, 'Here it is: ```json\n{"a": 1}\n```', '{"a": 1}')
    assert not score(as_json, "{'a': 1}", '{"a": 1}')
    assert not score(as_json, '{"a": 1}', "{not json")


def test_json_keys_compare_a_subset() -> None:
    """With json_keys only those top-level keys count, and both sides must have them."""
    some = spec(scorer="json", json_keys=("name", "age"))
    want = '{"name": "Ada", "age": 36, "city": "London"}'
    assert score(some, '{"age": 36, "name": "Ada", "city": "Paris", "x": 1}', want)
    assert not score(some, '{"age": 37, "name": "Ada"}', want)
    assert not score(some, '{"name": "Ada"}', want)
    assert not score(some, '[{"name": "Ada", "age": 36}]', want)
    assert not score(spec(scorer="json", json_keys=("id",)), '{"id": 1}', '{"name": 1}')


def test_numeric() -> None:
    """The first number in the answer against the expected one, within tolerance."""
    numeric = spec(scorer="numeric")
    assert score(numeric, "The answer is 42.", 42)
    assert score(numeric, "42.0", "42")
    assert not score(numeric, "The answer is 43.", 42)
    assert not score(numeric, "41 or 42", 42)
    assert score(numeric, "About 1,234.5 km", "1234.5")
    assert score(numeric, "-7 degrees", -7)
    assert score(numeric, "it is 1.5e3", 1500)
    assert score(numeric, "It is .5", 0.5)
    assert not score(numeric, "no number here", 1)
    assert not score(numeric, "42", "forty-two")
    assert not score(numeric, "1", True)
    assert not score(numeric, "1", float("nan"))
    assert not score(numeric, "1e999999999999999999999", 1)


def test_numeric_tolerance_is_exact_decimal() -> None:
    """1.1 against 1.0 passes at tolerance 0.1 (floats would make it 0.1000...09)."""
    assert abs(1.1 - 1.0) > 0.1  # the float trap this scorer avoids
    within = spec(scorer="numeric", tolerance=0.1)
    assert score(within, "1.1", 1.0)
    assert score(within, "0.9", "1")
    assert not score(within, "1.11", 1.0)
    assert not score(spec(scorer="numeric"), "0.30000000000000004", 0.3)


@pytest.mark.parametrize(
    ("answer", "letter"),
    [
        ("B", "B"),
        ("(B)", "B"),
        ("B.", "B"),
        ("B) Paris", "B"),
        ("**C**", "C"),
        ("Answer: B", "B"),
        ("answer:B", "B"),
        ("The answer is (D).", "D"),
        ("I think the correct option is C because", "C"),
        ("I think it's B", "B"),
        ("A cat would choose D", "D"),
        ("A is right", "A"),
        ("Answer: A", "A"),
        ("It is D, not A", "D"),
        ("Answers vary: E", "E"),
        ("no letter here", None),
        ("I'm unsure", None),
        ("BC or CD", None),
        ("the answer is b", None),
    ],
)
def test_chosen_letter(answer: str, letter: str | None) -> None:
    """A cue word first, else the first capital standing alone ("A"/"I" as words skipped)."""
    assert chosen_letter(answer) == letter


def test_choice_letters_and_labels() -> None:
    """A letter expected is compared to the chosen letter; a label must appear as a phrase."""
    choice = spec(scorer="choice")
    assert score(choice, "Answer: (B)", "B")
    assert score(choice, "B. Paris", "b")
    assert score(choice, "B", "(B)")
    assert not score(choice, "Answer: C, not B", "B")
    assert not score(choice, "Paris", "B")
    assert score(choice, "I would pick Paris.", "Paris")
    assert not score(choice, "Parisian food", "Paris")
    assert not score(choice, "i would pick paris.", "Paris")
    assert score(replace(choice, casefold=True), "i would pick paris.", "Paris")
    assert score(replace(choice, collapse_whitespace=True), "in New\n York", "New York")
    assert not score(choice, "anything", "   ")


def test_missing_answer_or_expected_never_passes() -> None:
    """An errored row (no text) or a row without an expected value fails every scorer."""
    for name in ("exact", "contains", "regex", "json", "numeric", "choice"):
        assert not score(spec(scorer=name), None, "x")
        assert not score(spec(scorer=name), "null", None)
    assert score(spec(scorer="exact"), "", "")


def test_the_judge_is_not_a_deterministic_scorer() -> None:
    """score() refuses the judge scorer, whose verdicts come from a model."""
    with pytest.raises(ValueError, match="needs a model's verdict"):
        score(spec(scorer="judge"), "x", "x")
