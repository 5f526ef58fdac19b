"""Scores of a whole run: every row of results.parquet scored, then counted overall and by group.

Reads a table it is given (never the run directory itself) and judge verdicts it is given
(the judge's calls are recorded elsewhere, by the runner). Errored rows count as not passed
and are listed apart; rows without an expected value are not scored and listed apart too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from batchrunner.errors import ConfigError
from batchrunner.evaluate.scorers import expected_text, score
from batchrunner.rundir.parts import OUTPUT_SCHEMA

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

    import pyarrow as pa

    from batchrunner.spec import EvalSpec

Verdict = tuple[bool | None, str]  # parse_verdict's result: PASS/FAIL (None: unclear), reason
NO_GROUP = "(none)"  # the by_group key of rows whose group value is null
_FIXED = frozenset(OUTPUT_SCHEMA.names)


@dataclass(frozen=True, slots=True)
class Tally:
    """Rows scored and passed; accuracy and its standard error sqrt(p(1-p)/n)."""

    scored: int = 0
    passed: int = 0

    @property
    def accuracy(self) -> float | None:
        return self.passed / self.scored if self.scored else None

    @property
    def stderr(self) -> float | None:
        # p(1-p)/n as one ratio of integers: no rounding before the square root
        n, k = self.scored, self.passed
        return math.sqrt(k * (n - k) / n**3) if n else None

    def add(self, passed: bool) -> Tally:
        return Tally(self.scored + 1, self.passed + passed)

    def to_json(self) -> dict[str, Any]:
        return {
            "scored": self.scored,
            "passed": self.passed,
            "accuracy": self.accuracy,
            "stderr": self.stderr,
        }


@dataclass(frozen=True, slots=True)
class RowScore:
    """One row's outcome: passed (None: not scored) and the judge's reason, when judged."""

    id: str
    passed: bool | None
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EvalScores:
    """The scores of one run; `rows` in table order (export's per-row `passed`/`reason`)."""

    scorer: str
    total: Tally
    by_group: Mapping[str, Tally] = field(default_factory=dict)
    errored: tuple[str, ...] = ()
    unscored: tuple[str, ...] = ()
    rows: tuple[RowScore, ...] = ()

    def passed_by_id(self) -> dict[str, bool]:
        """Per-row pass/fail of the scored rows: what `compare` takes."""
        return {row.id: row.passed for row in self.rows if row.passed is not None}

    def to_json(self) -> dict[str, Any]:
        """The `eval` object of `report --json`."""
        return {
            "scorer": self.scorer,
            **self.total.to_json(),
            "by_group": {name: tally.to_json() for name, tally in self.by_group.items()},
            "errored": list(self.errored),
            "unscored": list(self.unscored),
        }


def result_column(key: str, name: str, columns: Collection[str]) -> str:
    """The results.parquet column holding input column `name` (`input_<name>` on a clash).

    Raises ConfigError (exit 2) naming the `[eval]` key when the table lacks it.
    """
    out = name
    while out in _FIXED:
        out = f"input_{out}"
    if out not in columns:
        raise ConfigError(f"[eval] {key} = {name!r}: results.parquet has no column {out!r}")
    return out


def _group_name(value: object) -> str:
    return NO_GROUP if value is None else expected_text(value)


def _row_outcome(
    spec: EvalSpec,
    row_id: str,
    status: object,
    text: str | None,
    expected: object,
    verdicts: Mapping[str, Verdict] | None,
) -> tuple[RowScore, bool]:
    """The row's score and whether it counts as errored (the row, or its judging, failed)."""
    if status != "succeeded":
        return RowScore(row_id, False), True
    if verdicts is None:
        return RowScore(row_id, score(spec, text, expected)), False
    verdict = verdicts.get(row_id)
    if verdict is None:
        return RowScore(row_id, False, "not judged: no verdict was recorded"), True
    passed, reason = verdict
    return RowScore(row_id, bool(passed), reason), passed is None


def score_results(
    spec: EvalSpec, table: pa.Table, *, verdicts: Mapping[str, Verdict] | None = None
) -> EvalScores:
    """Score every row of a results table (`id`, `status`, `text` and the carried columns).

    Args:
        verdicts: for `scorer = "judge"` (and only then), row id -> parse_verdict's result
            for the rows the judge answered; a row without one is not passed, and errored.
    """
    if (spec.scorer == "judge") != (verdicts is not None):
        raise ValueError("verdicts are needed for scorer = 'judge', and only then")
    names = table.column_names
    expected = table.column(result_column("expected", spec.expected, names)).to_pylist()
    groups: list[object] = [None] * table.num_rows
    if spec.group is not None:
        groups = table.column(result_column("group", spec.group, names)).to_pylist()
    ids, statuses, texts = (table.column(c).to_pylist() for c in ("id", "status", "text"))
    total, by_group = Tally(), dict[str, Tally]()
    rows, errored, unscored = [], [], []
    for i, row_id in enumerate(ids):
        if expected[i] is None:
            rows.append(RowScore(row_id, None))
            unscored.append(row_id)
            continue
        row, failed = _row_outcome(spec, row_id, statuses[i], texts[i], expected[i], verdicts)
        rows.append(row)
        if failed:
            errored.append(row_id)
        passed = bool(row.passed)
        total = total.add(passed)
        if spec.group is not None:
            name = _group_name(groups[i])
            by_group[name] = by_group.get(name, Tally()).add(passed)
    return EvalScores(
        scorer=spec.scorer,
        total=total,
        by_group=dict(sorted(by_group.items())),
        errored=tuple(errored),
        unscored=tuple(unscored),
        rows=tuple(rows),
    )
