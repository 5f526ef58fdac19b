"""The deterministic scorers: does one answer pass against its expected value?

`score(spec, answer, expected)` is the one entry. Pure and deterministic: no IO, no clock,
no model (the judge scorer's verdicts come from judge.py through scores.py). A missing
answer or expected value never passes; junk (a bad pattern, unparsable JSON) fails the row
instead of raising, so one odd row cannot stop the scoring of a night.
"""

from __future__ import annotations

import decimal
import json
import re
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from batchrunner.spec import EvalSpec

_SPACES = re.compile(r"\s+")
_FENCED = re.compile(r"```[A-Za-z]*[ \t]*\n(.*?)\n?```", re.DOTALL)
# A number as people and models write it: sign, thousands commas, decimals, exponent.
_NUMBER = re.compile(r"[-+]?(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")
# choice: a letter right after a cue word ("Answer: B", "the answer is (C)", "option D") ...
_CUE = re.compile(
    r"(?i:\b(?:answer|option|choice)\b)\s*(?i:is\b)?\s*[:=]?\s*[(\[*]*([A-Z])(?![A-Za-z0-9'\u2019])"
)
# ... else the first capital letter standing alone ("B", "(B)", "B.", "**B**", "B) Paris") ...
_TOKEN = re.compile(r"(?<![A-Za-z0-9'\u2019])([A-Z])(?![A-Za-z0-9'\u2019])")
# ... where "A" and "I" used as words ("A cat", "I think") do not count ("A is right" does).
_WORD_USE = re.compile(r"\s+(?!is\b)[a-z]")
_LETTER = re.compile(r"[(\[]?([A-Za-z])[)\]]?[.):]?")


def expected_text(value: object) -> str:
    """An expected value as text: a string as it is, anything else as JSON ("4", not "4.0")."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value, ensure_ascii=False, default=str)


def normalise(spec: EvalSpec, text: str) -> str:
    """Apply the spec's `collapse_whitespace`, `strip` and `casefold`, in that order."""
    if spec.collapse_whitespace:
        text = _SPACES.sub(" ", text)
    if spec.strip:
        text = text.strip()
    if spec.casefold:
        text = text.casefold()
    return text


def _exact(spec: EvalSpec, answer: str, expected: object) -> bool:
    return normalise(spec, answer) == normalise(spec, expected_text(expected))


def _contains(spec: EvalSpec, answer: str, expected: object) -> bool:
    return normalise(spec, expected_text(expected)) in normalise(spec, answer)


def _regex(spec: EvalSpec, answer: str, expected: object) -> bool:
    # The pattern is not normalised (casefolding `\S` would make it `\s`): casefold
    # becomes IGNORECASE and the other keys apply to the answer alone.
    flags = re.IGNORECASE if spec.casefold else 0
    try:
        pattern = re.compile(expected_text(expected), flags)
    except re.error:
        return False
    text = _SPACES.sub(" ", answer) if spec.collapse_whitespace else answer
    return pattern.search(text.strip() if spec.strip else text) is not None


_NOT_JSON = object()


def _answer_json(answer: str) -> Any:
    """The answer parsed as JSON, also when wholly wrapped in ``` fences; else _NOT_JSON."""
    text = answer.strip()
    fenced = _FENCED.fullmatch(text)
    if fenced is not None:
        text = fenced.group(1)
    try:
        return json.loads(text)
    except ValueError:
        return _NOT_JSON


def _same_json(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but true is not 1 (Python's == says it is)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _json(spec: EvalSpec, answer: str, expected: object) -> bool:
    got = _answer_json(answer)
    want: Any = expected
    if isinstance(expected, str):  # JSON text; a non-string came typed from the input
        try:
            want = json.loads(expected)
        except ValueError:
            return False
    if got is _NOT_JSON:
        return False
    if not spec.json_keys:
        return _same_json(got, want)
    if not (isinstance(got, dict) and isinstance(want, dict)):
        return False
    return all(
        key in got and key in want and _same_json(got[key], want[key]) for key in spec.json_keys
    )


def _decimal(text: str) -> Decimal:
    return Decimal(text.replace(",", ""))


def _expected_number(expected: object) -> Decimal | None:
    if isinstance(expected, bool):
        return None
    if isinstance(expected, int):
        return Decimal(expected)
    if isinstance(expected, float):
        return Decimal(repr(expected))  # 0.1 stays 0.1, not 0.1000000000000000055...
    if isinstance(expected, str) and _NUMBER.fullmatch(expected.strip()):
        return _decimal(expected.strip())
    return None


def _numeric(spec: EvalSpec, answer: str, expected: object) -> bool:
    # Decimal arithmetic: with tolerance 0.1, 1.1 against 1.0 passes (floats say 0.1000...09).
    found = _NUMBER.search(answer)
    want = _expected_number(expected)
    if found is None or want is None or not want.is_finite():
        return False
    try:
        return abs(_decimal(found.group()) - want) <= Decimal(repr(spec.tolerance))
    except decimal.DecimalException:  # an exponent past Decimal's range
        return False


def chosen_letter(answer: str) -> str | None:
    """The option letter an answer picks (see `_CUE` and `_TOKEN`), or None."""
    cue = _CUE.search(answer)
    if cue is not None:
        return cue.group(1)
    for match in _TOKEN.finditer(answer):
        letter = match.group(1)
        if letter in "AI" and _WORD_USE.match(answer, match.end()):
            continue
        return letter
    return None


def _choice(spec: EvalSpec, answer: str, expected: object) -> bool:
    want = expected_text(expected).strip()
    letter = _LETTER.fullmatch(want)
    if letter is not None:  # an option letter: "B", "b", "(B)", "B."
        return chosen_letter(answer) == letter.group(1).upper()
    label = normalise(spec, want)  # an option label: found as a whole phrase
    if not label:
        return False
    phrase = re.compile(rf"(?<!\w){re.escape(label)}(?!\w)")
    return phrase.search(normalise(spec, answer)) is not None


_SCORERS: dict[str, Callable[[EvalSpec, str, object], bool]] = {
    "exact": _exact,
    "contains": _contains,
    "regex": _regex,
    "json": _json,
    "numeric": _numeric,
    "choice": _choice,
}


def score(spec: EvalSpec, answer: str | None, expected: object) -> bool:
    """Whether `answer` passes against `expected` under the spec's deterministic scorer.

    Raises ValueError for `scorer = "judge"`, whose verdicts come from a model.
    """
    scorer = _SCORERS.get(spec.scorer)
    if scorer is None:
        raise ValueError(f"scorer {spec.scorer!r} needs a model's verdict, not score()")
    if answer is None or expected is None:
        return False
    return scorer(spec, answer, expected)
