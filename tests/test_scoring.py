"""scoring: where a run's eval settings come from, and the judge's verdicts read back from disk."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from batchrunner.errors import ConfigError
from batchrunner.evaluate import EvalSpec
from batchrunner.scoring import Gate, find_eval, read_eval_file, read_verdicts, round_paths
from tests.helpers import make_result, open_run

if TYPE_CHECKING:
    from pathlib import Path


def test_eval_settings_from_the_job_file_else_eval_json(tmp_path: Path) -> None:
    """--job's [eval] wins; a job without one falls back to DIR/eval.json; neither: None."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert find_eval(run_dir, None) is None
    (run_dir / "eval.json").write_text('{"eval": {"scorer": "contains"}}', encoding="utf-8")
    job = tmp_path / "job.toml"
    job.write_text('[eval]\nscorer = "regex"\n[pricing]\nbogus = 1\n', encoding="utf-8")
    assert find_eval(run_dir, job) == EvalSpec(scorer="regex")
    job.write_text('[request]\nmodel = "m"\n', encoding="utf-8")
    assert find_eval(run_dir, job) == EvalSpec(scorer="contains")
    assert read_eval_file(run_dir) == EvalSpec(scorer="contains")


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("{not json", "cannot read"),
        ('{"eval": 3}', "[eval] must be a table"),
        ('{"eval": {"scorer": "fuzzy"}}', "[eval] scorer must be one of"),
    ],
)
def test_a_damaged_eval_json_is_refused(tmp_path: Path, text: str, named: str) -> None:
    """eval.json that is not JSON, or holds a bad table: ConfigError (exit 2) naming it."""
    (tmp_path / "eval.json").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"eval\.json") as caught:
        read_eval_file(tmp_path)
    assert named in str(caught.value) and caught.value.exit_code == 2


def test_verdicts_over_rounds(tmp_path: Path) -> None:
    """Succeeded judge rows give parsed verdicts, errored ones None with the error; a later
    round wins; a round whose input exists but was never run gives nothing."""
    first_input, first = round_paths(tmp_path, 1)
    first.parent.mkdir()
    first_input.write_text("", encoding="utf-8")
    with open_run(first, total=3) as rd:
        rd.record(make_result(0, text="VERDICT: PASS\nREASON: right."))
        rd.record(make_result(1, "errored", error_type="timeout", error_message="no answer"))
        rd.record(make_result(2, text="I am not sure."))
        rd.seal()
    second_input, second = round_paths(tmp_path, 2)
    second_input.write_text("", encoding="utf-8")
    with open_run(second, total=2) as rd:
        rd.record(make_result(1, text="**Verdict:** FAIL - off by one"))
        rd.seal()
    round_paths(tmp_path, 3)[0].write_text("", encoding="utf-8")
    verdicts, warnings = read_verdicts(tmp_path)
    assert warnings == []
    assert verdicts["r0"] == (True, "right.")
    assert verdicts["r1"] == (False, "off by one")
    assert verdicts["r2"][0] is None and "no verdict" in verdicts["r2"][1]
    assert set(verdicts) == {"r0", "r1", "r2"}


def test_errored_judge_request_reason(tmp_path: Path) -> None:
    """A judge request that failed: verdict None, the error in the reason."""
    rows, out = round_paths(tmp_path, 1)
    out.parent.mkdir()
    rows.write_text("", encoding="utf-8")
    with open_run(out, total=1) as rd:
        rd.record(make_result(0, "errored", error_type="timeout", error_message="read timed out"))
        rd.seal()
    assert read_verdicts(tmp_path)[0] == {"r0": (None, "the judge request failed: read timed out")}


def test_gate_options_that_need_each_other() -> None:
    """--alpha needs --fail-on-regression, which needs --baseline; no evaluation: no gate."""
    with pytest.raises(ConfigError, match="--alpha applies"):
        Gate(alpha=0.1)
    with pytest.raises(ConfigError, match="needs --baseline"):
        Gate(fail_on_regression=True)
    assert not Gate().asked and Gate(fail_under=0.5).asked
    assert Gate(fail_under=0.5).failures(None) == []
