"""The model-graded scorer's text: the judge prompt going out and the verdict coming back.

Pure string work; sending the prompt is the runner's job (same retries, journal, resume),
and turning verdicts into scores is scores.py's. The default template carries JUDGE_MARKER,
by which the fake API recognises a judge prompt and grades it by a rule tests can predict.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from batchrunner.evaluate.scorers import expected_text

if TYPE_CHECKING:
    from batchrunner.spec import EvalSpec

# Duplicated in batchrunner.fakeapi.judge (the fake imports nothing from the core);
# tests/test_evaluate_judge.py holds the two equal.
JUDGE_MARKER = "[batchrunner judge v1]"

DEFAULT_TEMPLATE = f"""{JUDGE_MARKER}
You are grading an answer to a question against the expected answer.

<question>
{{question}}
</question>

<expected_answer>
{{expected}}
</expected_answer>

<answer>
{{answer}}
</answer>

The answer passes when it agrees with the expected answer in substance; wording, format
and extra explanation do not matter, a wrong, missing or hedged final answer fails.
Reply with exactly two lines:
VERDICT: PASS (or VERDICT: FAIL)
REASON: one short sentence saying why
"""

_FIELD = re.compile(r"\{(question|expected|answer)\}")
_VERDICT = re.compile(
    r"^[\W_]*(?:[a-z]+\s+){0,2}verdict(?:\s+is)?[\W_]*(pass|fail)(?:ed)?\b(.*)$",
    re.IGNORECASE | re.MULTILINE,
)
_BARE = re.compile(r"^[\W_]*(pass|fail)(?:ed)?[\W_]*$", re.IGNORECASE | re.MULTILINE)
_REASON = re.compile(r"^[\W_]*reason[\s*_]*[:=-][\s*_]*(\S.*)$", re.IGNORECASE | re.MULTILINE)
# "VERDICT: PASS (or VERDICT: FAIL)", "VERDICT: PASS/FAIL": an echoed instruction
_ALTERNATIVE = re.compile(r"[\W_]*(?:or\b)?[\W_]*(?:verdict[\W_]*)?(?:pass|fail)", re.IGNORECASE)
_REASON_CHARS = 300


def build_judge_prompt(spec: EvalSpec, question: str, expected: object, answer: str) -> str:
    """The judge prompt for one row: `{question}`, `{expected}` and `{answer}` filled in.

    One pass over the template, so an answer that contains "{expected}" stays as written;
    other braces in a custom template are kept literally (no str.format escaping needed).
    """
    template = spec.judge_template or DEFAULT_TEMPLATE
    values = {"question": question, "expected": expected_text(expected), "answer": answer}
    return _FIELD.sub(lambda m: values[m.group(1)], template)


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"


def _reason(text: str, after: str) -> str:
    found = _REASON.search(text)
    if found is not None:
        return _one_line(found.group(1))
    return _one_line(after.lstrip(" \t:.-—*"))


def parse_verdict(text: str) -> tuple[bool | None, str]:
    """PASS/FAIL and a one-line reason from a judge's reply; (None, why) when unclear.

    The verdict is the first `VERDICT: PASS|FAIL` line (any case, markdown or punctuation
    around it, PASSED/FAILED too) that is not an echoed "PASS or FAIL"; failing that, a
    line that is just PASS or FAIL. The reason is the `REASON:` line, else the rest of
    the verdict line.
    """
    for found in _VERDICT.finditer(text):
        word, rest = found.group(1).lower(), found.group(2)
        if _ALTERNATIVE.match(rest):
            continue  # an instruction echoed back decides nothing
        return word == "pass", _reason(text, rest)
    bare = _BARE.search(text)
    if bare is not None:
        return bare.group(1).lower() == "pass", _reason(text, "")
    return None, _one_line(f"no verdict in the judge's reply: {text}")
