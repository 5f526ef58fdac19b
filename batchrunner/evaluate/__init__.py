"""Nightly evaluations: score a run's answers, compare two nights, gate on a real drop.

A read-only consumer of results: settings (the `[eval]` table), scorers (deterministic),
judge (the model-graded scorer's prompt and verdicts), scores (a results table scored,
overall and by group) and stats (McNemar's exact test against a baseline, the gate).
It sends nothing and writes nothing.
"""

from __future__ import annotations

from batchrunner.evaluate.judge import (
    DEFAULT_TEMPLATE,
    JUDGE_MARKER,
    build_judge_prompt,
    parse_verdict,
)
from batchrunner.evaluate.scorers import chosen_letter, score
from batchrunner.evaluate.scores import (
    EvalScores,
    RowScore,
    Tally,
    Verdict,
    result_column,
    score_results,
)
from batchrunner.evaluate.settings import SCORERS, check_columns, eval_table, parse_eval
from batchrunner.evaluate.stats import compare, mcnemar_p, should_fail
from batchrunner.spec import EvalSpec, Scorer

__all__ = [
    "DEFAULT_TEMPLATE",
    "JUDGE_MARKER",
    "SCORERS",
    "EvalScores",
    "EvalSpec",
    "RowScore",
    "Scorer",
    "Tally",
    "Verdict",
    "build_judge_prompt",
    "check_columns",
    "chosen_letter",
    "compare",
    "eval_table",
    "mcnemar_p",
    "parse_eval",
    "parse_verdict",
    "result_column",
    "score",
    "score_results",
    "should_fail",
]
