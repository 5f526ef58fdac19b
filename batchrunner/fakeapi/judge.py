"""The fake API as a judge: a deterministic verdict for batchrunner's judge prompts.

A prompt carrying JUDGE_MARKER and laid out like batchrunner.evaluate's default template is
graded by a rule tests can predict: PASS when the expected answer (stripped, in any case)
appears in the graded answer, else FAIL, with a one-line reason. The marker is duplicated
from batchrunner.evaluate.judge (this wing imports nothing from the core; a test holds the
two equal). Pure: no IO.
"""

from __future__ import annotations

JUDGE_MARKER = "[batchrunner judge v1]"
_EXPECTED_OPEN = "<expected_answer>\n"
_BETWEEN = "\n</expected_answer>\n\n<answer>\n"
_ANSWER_CLOSE = "\n</answer>"
_SHOWN = 60


def judge_parts(prompt: str) -> tuple[str, str] | None:
    """(expected answer, graded answer) of a judge prompt, or None without the sections.

    The expected answer ends at the first `</expected_answer>` directly followed by
    `<answer>`, and starts at the last `<expected_answer>` before that; the answer runs to
    the last `</answer>` (the template's last section). So an answer quoting any of the
    tags, or a question quoting one, is still read right.
    """
    between = prompt.find(_BETWEEN)
    start = prompt.rfind(_EXPECTED_OPEN, 0, between) if between >= 0 else -1
    end = prompt.rfind(_ANSWER_CLOSE)
    if start < 0 or end < between + len(_BETWEEN):
        return None
    return prompt[start + len(_EXPECTED_OPEN) : between], prompt[between + len(_BETWEEN) : end]


def verdict(prompt: str) -> tuple[bool, str] | None:
    """(passed, reason) for a judge prompt; None for any other prompt."""
    if JUDGE_MARKER not in prompt:
        return None
    parts = judge_parts(prompt)
    if parts is None:
        return False, "the judge prompt has no <expected_answer> and <answer> sections"
    want, answer = parts[0].strip(), parts[1]
    if not want:
        return False, "the expected answer is empty"
    shown = " ".join(want.split())
    shown = shown if len(shown) <= _SHOWN else shown[: _SHOWN - 1] + "…"
    if want.casefold() in answer.casefold():
        return True, f'the expected answer "{shown}" appears in the answer'
    return False, f'the expected answer "{shown}" does not appear in the answer'


def verdict_pieces(prompt: str) -> tuple[str, ...] | None:
    """The judge's reply as token pieces (`VERDICT: PASS|FAIL`, then `REASON: ...`), or None."""
    graded = verdict(prompt)
    if graded is None:
        return None
    passed, reason = graded
    words = f"{reason}.".split(" ")
    return ("VERDICT:", " PASS" if passed else " FAIL", "\nREASON:", *(" " + w for w in words))
