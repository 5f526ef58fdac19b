"""The scores of a run directory: its eval settings, the judge's verdicts, a baseline, the gate.

A read-only consumer, like report.py: it reads `DIR/eval.json` (or a job file's `[eval]`),
`DIR/results.parquet` and the judge's run directories under `DIR/judge/` (judging.py
writes them); the scoring itself is evaluate's. Sends nothing and writes nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from batchrunner.errors import ConfigError
from batchrunner.evaluate import (
    EvalScores,
    EvalSpec,
    Verdict,
    compare,
    parse_eval,
    parse_verdict,
    result_column,
    score_results,
    should_fail,
)
from batchrunner.evaluate.scorers import expected_text
from batchrunner.rundir.recorded import Recorded

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from batchrunner.report_text import Report

EVAL_FILE = "eval.json"  # the run's [eval] table, written by `run` (judging.save_eval)
JUDGE_DIR = "judge"  # round-N.jsonl (the judge requests) and round-N/ (their run directory)
_ROUND = re.compile(r"round-([0-9]+)")
_SHOWN = 10  # regressions and errored ids listed in the text output
_CLIP = 80


def round_paths(run_dir: Path, number: int) -> tuple[Path, Path]:
    """Judge round `number`'s input file and run directory."""
    base = run_dir / JUDGE_DIR
    return base / f"round-{number}.jsonl", base / f"round-{number}"


def judge_rounds(run_dir: Path) -> list[int]:
    """The numbers of the judge rounds begun in `run_dir` (an input file exists), ascending."""
    base = run_dir / JUDGE_DIR
    if not base.is_dir():
        return []
    found = (_ROUND.fullmatch(p.name.removesuffix(".jsonl")) for p in base.glob("round-*.jsonl"))
    return sorted(int(m.group(1)) for m in found if m is not None)


def _parse_table(section: object, source: str) -> EvalSpec:
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: [eval] must be a table")
    spec, problems = parse_eval(section)
    if spec is None:
        raise ConfigError("; ".join(f"{source}: {p}" for p in problems))
    return spec


def read_eval_file(run_dir: Path) -> EvalSpec | None:
    """The `[eval]` settings the run was made with (`DIR/eval.json`), or None."""
    path = run_dir / EVAL_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    return _parse_table(data.get("eval") if isinstance(data, dict) else None, str(path))


def find_eval(run_dir: Path, job: Path | None) -> EvalSpec | None:
    """The settings to score with: `job`'s `[eval]` when it has one, else DIR/eval.json."""
    if job is not None:
        from batchrunner.config import read_job_file

        data, _ = read_job_file(job)  # other sections' problems are not report's business
        if "eval" in data:
            return _parse_table(data["eval"], str(job))
    return read_eval_file(run_dir)


def read_verdicts(run_dir: Path) -> tuple[dict[str, Verdict], list[str]]:
    """The judge's verdict per row id over every round (a later round wins), and warnings.

    A judge request that failed is a verdict of None with the error as its reason, so the
    row counts as errored, not as failed by the judge.
    """
    verdicts: dict[str, Verdict] = {}
    warnings: list[str] = []
    columns = ("id", "status", "text", "error_type", "error_message")
    for number in judge_rounds(run_dir):
        path = round_paths(run_dir, number)[1]
        if not (path / "manifest.json").exists():
            continue  # the round's input is written, nothing was sent yet
        recorded = Recorded(path, columns)
        for table in recorded.tables():
            for row in table.to_pylist():
                if row["status"] == "succeeded":
                    verdicts[row["id"]] = parse_verdict(row["text"] or "")
                else:
                    why = row["error_message"] or row["error_type"] or "error"
                    verdicts[row["id"]] = (None, f"the judge request failed: {why}")
        warnings += recorded.warnings
    return verdicts, warnings


@dataclass(frozen=True, slots=True)
class Scored:
    """One run's scores, and what its rows held (for the regressions listing)."""

    run_dir: Path
    scores: EvalScores
    expected: Mapping[str, object]
    answers: Mapping[str, str | None]


def score_run(run_dir: Path, spec: EvalSpec) -> tuple[Scored | None, list[str]]:
    """Score `run_dir/results.parquet` (None before the run has written it), and warnings."""
    path = run_dir / "results.parquet"
    if not path.exists():
        return None, [f"no eval scores for {run_dir}: results.parquet is not written yet"]
    names = pq.read_schema(path).names
    columns = ["id", "status", "text", result_column("expected", spec.expected, names)]
    if spec.group is not None:
        columns.append(result_column("group", spec.group, names))
    table = pq.read_table(path, columns=list(dict.fromkeys(columns)))
    verdicts, warnings = read_verdicts(run_dir) if spec.scorer == "judge" else (None, [])
    scores = score_results(spec, table, verdicts=verdicts)
    ids = table.column("id").to_pylist()
    expected = dict(zip(ids, table.column(columns[3]).to_pylist(), strict=True))
    answers = dict(zip(ids, table.column("text").to_pylist(), strict=True))
    return Scored(run_dir, scores, expected, answers), warnings


def row_scores(run_dir: Path) -> dict[str, tuple[bool | None, str | None]] | None:
    """Per row id, `passed` and the judge's `reason` (export's columns); None without
    DIR/eval.json. Rows are absent while results.parquet is not written."""
    spec = read_eval_file(run_dir)
    if spec is None:
        return None
    scored, _ = score_run(run_dir, spec)
    if scored is None:
        return {}
    return {row.id: (row.passed, row.reason) for row in scored.scores.rows}


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What `report` adds for a run with `[eval]`: its scores and, with --baseline, the
    comparison (evaluate.compare's dict and the baseline's directory)."""

    spec: EvalSpec
    scored: Scored | None  # None: the run has not written results.parquet yet
    baseline: Mapping[str, Any] | None = None
    baseline_dir: Path | None = None
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The report's `eval` and `baseline` objects."""
        base = None
        if self.baseline is not None:
            b = self.baseline
            base = {
                "run_dir": str(self.baseline_dir),
                "shared": b["shared"],
                "accuracy": b["baseline_accuracy"],
                "current_accuracy": b["accuracy"],
                "delta": b["delta"],
                "p_value": b["p_value"],
                "regressions": b["regressions"],
                "improvements": b["improvements"],
            }
        scores = self.scored.scores.to_json() if self.scored is not None else None
        return {"eval": scores, "baseline": base}


def evaluate_run(run_dir: Path, spec: EvalSpec, *, baseline: Path | None = None) -> Evaluation:
    """Score `run_dir`, and compare it with `baseline` scored by the same settings.

    Raises ConfigError when the baseline has no results.parquet (nothing to compare with).
    """
    scored, warnings = score_run(run_dir, spec)
    if baseline is None:
        return Evaluation(spec, scored, warnings=tuple(warnings))
    before, base_warnings = score_run(baseline, spec)
    if before is None:
        raise ConfigError(f"--baseline {baseline}: no results.parquet (the run is not complete)")
    comparison = None
    if scored is not None:
        comparison = compare(scored.scores.passed_by_id(), before.scores.passed_by_id())
    return Evaluation(spec, scored, comparison, baseline, warnings=tuple(warnings + base_warnings))


@dataclass(frozen=True, slots=True, kw_only=True)
class Gate:
    """`report`'s gate for cron and CI: --fail-under X, --fail-on-regression at --alpha."""

    fail_under: float | None = None
    fail_on_regression: bool = False
    alpha: float | None = None  # None: 0.05
    baseline: Path | None = None

    def __post_init__(self) -> None:
        if self.alpha is not None and not self.fail_on_regression:
            raise ConfigError("--alpha applies to --fail-on-regression only")
        if self.fail_on_regression and self.baseline is None:
            raise ConfigError("--fail-on-regression needs --baseline DIR2")

    @property
    def asked(self) -> bool:
        return self.fail_under is not None or self.fail_on_regression

    def failures(self, ev: Evaluation | None) -> list[str]:
        """Why the gate fails (an empty list: it passes). No scores fail any gate asked for."""
        if ev is None:
            return []
        reasons = []
        accuracy = ev.scored.scores.total.accuracy if ev.scored is not None else None
        under = self.fail_under
        if under is not None and accuracy is None:
            reasons.append(f"no accuracy to hold against --fail-under {under:g}")
        elif under is not None and accuracy is not None and accuracy < under:
            reasons.append(f"accuracy {accuracy:.4f} is below --fail-under {under:g}")
        alpha = 0.05 if self.alpha is None else self.alpha
        b = ev.baseline
        if self.fail_on_regression and b is None:
            reasons.append("no scores to compare with the baseline")
        elif self.fail_on_regression and b is not None and should_fail(b, alpha):
            reasons.append(
                f"a significant drop against the baseline: {len(b['regressions'])} regressions, "
                f"{len(b['improvements'])} improvements, p = {b['p_value']:.3g} < alpha {alpha:g}"
            )
        return reasons


def evaluate_report(run_dir: Path, *, job: Path | None, gate: Gate) -> Evaluation | None:
    """The scores `report` shows: by `job`'s [eval] or DIR/eval.json; None without either.

    Raises ConfigError when the gate or the baseline asks for scores the run has no
    [eval] for.
    """
    spec = find_eval(run_dir, job)
    if spec is None:
        if gate.asked or gate.baseline is not None:
            raise ConfigError(
                f"no [eval] for {run_dir}: it has no eval.json; give --job FILE with [eval]"
            )
        return None
    return evaluate_run(run_dir, spec, baseline=gate.baseline)


def _clip(value: object) -> str:
    text = " ".join(expected_text(value).split()) if value is not None else "(none)"
    return repr(text if len(text) <= _CLIP else text[: _CLIP - 1] + "…")


def _ids(ids: list[str] | tuple[str, ...]) -> str:
    more = f" (and {len(ids) - _SHOWN} more)" if len(ids) > _SHOWN else ""
    return ", ".join(ids[:_SHOWN]) + more


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def text_lines(ev: Evaluation) -> list[str]:
    """The scores for people: totals, groups, the baseline and its first regressions."""
    if ev.scored is None:
        return [f"eval      {ev.spec.scorer}: no scores yet (results.parquet is not written)"]
    s = ev.scored.scores
    t = s.total
    lines = [
        f"eval      {s.scorer} on {ev.spec.expected!r}: {t.passed:,} of {t.scored:,} passed, "
        f"accuracy {_num(t.accuracy)} (stderr {_num(t.stderr)}); "
        f"{len(s.errored):,} errored, {len(s.unscored):,} unscored"
    ]
    if s.by_group:
        groups = ", ".join(
            f"{name} {g.passed}/{g.scored} ({_num(g.accuracy)})" for name, g in s.by_group.items()
        )
        lines.append(f"by {ev.spec.group}  {groups}")
    if s.errored:
        lines.append(f"errored   {_ids(s.errored)}")
    if ev.baseline is not None:
        lines += _baseline_lines(ev, ev.baseline)
    return lines


def _baseline_lines(ev: Evaluation, b: Mapping[str, Any]) -> list[str]:
    assert ev.scored is not None
    delta = "n/a" if b["delta"] is None else f"{b['delta']:+.4f}"
    lines = [
        f"baseline  {ev.baseline_dir}: accuracy {_num(b['baseline_accuracy'])} -> "
        f"{_num(b['accuracy'])} (delta {delta}) over {b['shared']:,} shared rows; "
        f"{len(b['improvements']):,} improvements, {len(b['regressions']):,} regressions, "
        f"McNemar exact p = {b['p_value']:.4g}"
    ]
    reasons = {row.id: row.reason for row in ev.scored.scores.rows}
    for row_id in b["regressions"][:_SHOWN]:
        why = f"; judge: {reasons[row_id]}" if reasons.get(row_id) else ""
        lines.append(
            f"  regressed {row_id}: expected {_clip(ev.scored.expected.get(row_id))}, "
            f"answer {_clip(ev.scored.answers.get(row_id))}{why}"
        )
    if len(b["regressions"]) > _SHOWN:
        lines.append(f"  ... and {len(b['regressions']) - _SHOWN} more regressions (--json)")
    return lines


def report_json(report: Report, ev: Evaluation | None) -> str:
    """`report --json`: the summary, then `eval` and `baseline` (null without [eval])."""
    data = report.to_dict()
    if ev is None:
        return json.dumps({**data, "eval": None, "baseline": None})
    data["warnings"] = list(dict.fromkeys([*data["warnings"], *ev.warnings]))
    return json.dumps({**data, **ev.to_json()})


def report_text(report: Report, ev: Evaluation | None) -> str:
    """`report`: the summary's lines, then the scores'."""
    lines = [report.to_text()]
    if ev is not None:
        lines += text_lines(ev)
        lines += [f"warning: {w}" for w in ev.warnings]
    return "\n".join(lines)
