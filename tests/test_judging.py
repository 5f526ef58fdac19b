"""The judge scorer end to end: judge requests through the runner, verdicts, kill -9 and resume.

The fake API grades batchrunner's judge prompts by a rule tests can predict: PASS when the
expected answer (stripped, any case) appears in the graded answer.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
import pytest

from batchrunner.evaluate import JUDGE_MARKER
from batchrunner.fakeapi import answer_for
from batchrunner.fakeapi.judge import verdict
from batchrunner.judging import question_text
from batchrunner.rundir.recorded import Recorded
from tests.fakeserver import FakeServer
from tests.helpers import TEST_KEY, read_results, run_cli, start_run, write_jsonl

if TYPE_CHECKING:
    from pathlib import Path

JUDGE_JOB = '[eval]\nscorer = "judge"\ngroup = "topic"\n'


def judge_input(tmp_path: Path, n: int) -> Path:
    """n rows; a third expect a phrase of their answer, a third the same shouted, a third
    something the fake never says."""
    rows = []
    for i in range(n):
        prompt = f"judged question {i:03d}"
        expected = [prompt, prompt.upper(), f"not said {i}"][i % 3]
        rows.append({"id": f"j{i:03d}", "prompt": prompt, "expected": expected, "topic": i % 2})
    return write_jsonl(tmp_path / "in.jsonl", rows)


def job(tmp_path: Path, body: str = JUDGE_JOB) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(body, encoding="utf-8")
    return path


def exported(out: Path) -> list[dict[str, Any]]:
    lines = run_cli(["export", str(out), "--format", "jsonl"]).stdout.splitlines()
    return [json.loads(line) for line in lines]


def test_judge_on_100_rows_matches_the_fakes_rule(tmp_path: Path, shared_api: FakeServer) -> None:
    """Every verdict (and reason) is the one the fake's rule predicts; the judge's calls are
    recorded in DIR/judge with their own response ids; a second run sends nothing."""
    src, out = judge_input(tmp_path, 100), tmp_path / "run"
    args = ["run", str(src), "--job", str(job(tmp_path)), "-o", str(out)]
    args += ["--base-url", shared_api.base_url, "-q"]
    res = run_cli(args)
    assert res.exit_code == 0, res.stderr
    assert "judge: 100 answers judged: 67 passed, 33 failed, 0 errored" in res.stdout
    log = shared_api.log()
    assert len(log) == 200 and sum(JUDGE_MARKER in e["prompt"] for e in log) == 100
    rows = [json.loads(line) for line in src.read_text().splitlines()]
    for row, got in zip(rows, exported(out), strict=True):
        answer = answer_for(row["prompt"])[0]
        rule = row["expected"].strip().casefold() in answer.casefold()
        assert got["passed"] is rule, row
        prompt = f"{JUDGE_MARKER}\n"  # the fake's own grading of the prompt that was sent
        sent = [
            e["prompt"]
            for e in log
            if e["prompt"].startswith(prompt) and row["prompt"] in e["prompt"]
        ]
        graded = verdict(sent[0])
        assert graded is not None and graded[0] is rule and got["reason"] == graded[1] + "."
    ev = json.loads(run_cli(["report", str(out), "--json"]).stdout)["eval"]
    assert (ev["scorer"], ev["scored"], ev["passed"], ev["errored"]) == ("judge", 100, 67, [])
    assert set(ev["by_group"]) == {"0", "1"}
    main_ids = {r["response_id"] for r in read_results(out)}
    judge_rows = pq.read_table(out / "judge" / "round-1" / "results.parquet").to_pylist()
    judge_ids = {r["response_id"] for r in judge_rows}
    assert len(judge_ids) == 100 and None not in judge_ids and not judge_ids & main_ids
    assert {r["model"] for r in judge_rows} == {"caicaini/auto"}
    assert (out / "judge" / "round-1" / "calls.log").read_text().count("\n") == 100
    shared_api.reset()
    again = run_cli(args)
    assert again.exit_code == 0 and "(0 recorded by this run)" in again.stdout
    assert shared_api.stats()["requests_total"] == 0


def test_a_reply_without_verdict_is_errored(tmp_path: Path, shared_api: FakeServer) -> None:
    """A custom template the fake does not grade: its replies hold no verdict, so every row
    is errored (not passed, listed apart) with the reason said."""
    template = "Grade this. Q: {question} / E: {expected} / A: {answer}"
    src, out = judge_input(tmp_path, 3), tmp_path / "run"
    body = f"{JUDGE_JOB}judge_template = {json.dumps(template)}\n"
    args = ["run", str(src), "--job", str(job(tmp_path, body)), "-o", str(out)]
    res = run_cli([*args, "--base-url", shared_api.base_url, "-q"])
    assert res.exit_code == 0, res.stderr
    assert "0 passed, 0 failed, 3 errored" in res.stdout
    ev = json.loads(run_cli(["report", str(out), "--json"]).stdout)["eval"]
    assert (ev["passed"], ev["errored"]) == (0, ["j000", "j001", "j002"])
    assert all(r["reason"].startswith("no verdict in the judge's reply") for r in exported(out))


def test_changed_judge_settings_are_refused(tmp_path: Path, shared_api: FakeServer) -> None:
    """Another judge_model on a judged run dir: exit 2, nothing sent, the fix named."""
    src, out = judge_input(tmp_path, 3), tmp_path / "run"
    args = ["run", str(src), "-o", str(out), "--base-url", shared_api.base_url, "-q"]
    assert run_cli([*args, "--job", str(job(tmp_path))]).exit_code == 0
    shared_api.reset()
    other = job(tmp_path, f'{JUDGE_JOB}judge_model = "caicaini/large"\n')
    res = run_cli([*args, "--job", str(other)])
    assert res.exit_code == 2
    assert "judged with judge_model = 'caicaini/auto'" in res.stderr and "move" in res.stderr
    assert shared_api.stats()["requests_total"] == 0


def test_rows_that_succeed_later_are_judged_in_a_new_round(tmp_path: Path) -> None:
    """With one attempt a row and half the first arrivals failing: errored rows are not
    judged, errored judge requests count as errored; each --retry-errors resume re-asks
    only those, rows that succeed later go to round 2, and no answer is asked twice."""
    src, out = judge_input(tmp_path, 12), tmp_path / "run"
    args = ["run", str(src), "--job", str(job(tmp_path)), "-o", str(out), "-q"]
    args += ["--max-attempts", "1"]
    faults = ("--fault-rate", "0.5", "--faults", "500", "--fault-max-per-prompt", "1")
    with FakeServer(*faults, api_key=TEST_KEY) as server:
        args += ["--base-url", server.base_url]
        first = run_cli(args)
        assert first.exit_code == 1, first.stderr
        early = json.loads(run_cli(["report", str(out), "--json"]).stdout)["eval"]
        assert 0 < len(early["errored"]) < 12 and early["passed"] < 8
        for _ in range(2):
            res = run_cli([*args, "--retry-errors"])
        assert res.exit_code == 0, res.stderr
        log = server.log()
    rounds = sorted(p.name for p in (out / "judge").glob("round-*.jsonl"))
    assert rounds == ["round-1.jsonl", "round-2.jsonl"]
    ev = json.loads(run_cli(["report", str(out), "--json"]).stdout)["eval"]
    assert (ev["scored"], ev["passed"], ev["errored"]) == (12, 8, [])
    answered = Counter(e["prompt"] for e in log if e.get("status") == 200)
    assert len(answered) == 24 and set(answered.values()) == {1}
    assert sum(JUDGE_MARKER in p for p in answered) == 12


@pytest.mark.crash
def test_kill_during_judging_then_resume_sends_no_recorded_row_twice(tmp_path: Path) -> None:
    """SIGKILL while the judge phase runs; the resume finishes it, and no judge request of a
    row recorded before the kill is sent again (nor any request of the run itself)."""
    src, out = judge_input(tmp_path, 120), tmp_path / "run"
    extra = ("--job", str(job(tmp_path)), "--concurrency", "4")
    with FakeServer(*["--latency", "0.02-0.06"], api_key=TEST_KEY) as server:
        proc = start_run(src, out, server.base_url, *extra)
        calls = out / "judge" / "round-1" / "calls.log"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if calls.exists() and calls.stat().st_size > 2000:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, "the kill must land during judging"
        recorded = {
            row_id
            for table in Recorded(out / "judge" / "round-1", ("id",)).tables()
            for row_id in table.column("id").to_pylist()
        }
        assert 0 < len(recorded) < 120
        final = start_run(src, out, server.base_url, *extra)
        stdout, err = final.communicate(timeout=120)
        assert final.returncode == 0, err
        assert "judge: 120 answers judged: 80 passed, 40 failed" in stdout
        sent = Counter(entry["prompt"] for entry in server.log())
    judge_prompts = {}
    for line in (out / "judge" / "round-1.jsonl").read_text().splitlines():
        row = json.loads(line)
        judge_prompts[row["id"]] = row["prompt"]
    assert len(judge_prompts) == 120
    for row_id in recorded:
        assert sent[judge_prompts[row_id]] == 1, row_id
    assert all(sent[prompt] >= 1 for prompt in judge_prompts.values())
    main = [p for p in sent if JUDGE_MARKER not in p]
    assert len(main) == 120 and all(sent[p] == 1 for p in main)
    assert sorted(p.name for p in (out / "judge").glob("round-*.jsonl")) == ["round-1.jsonl"]


def test_question_text_of_every_row_shape() -> None:
    """A prompt as it is; one message's text alone; several as `role: text` turns."""
    assert question_text({"prompt": "What is 2+2?"}) == "What is 2+2?"
    one = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]}
    assert question_text(one) == "Hi"
    several = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Name?"}]},
        ]
    }
    assert question_text(several) == "system: Be brief.\n\nuser: Name?"
    assert question_text({"params": {}}) == ""


def test_a_second_judge_phase_on_the_same_dir_is_refused(
    tmp_path: Path, shared_api: FakeServer
) -> None:
    """While one process judges DIR, another stops with exit 3 and sends no judge request."""
    src, out = judge_input(tmp_path, 3), tmp_path / "run"
    args = ["run", str(src), "-o", str(out), "--base-url", shared_api.base_url, "-q"]
    assert run_cli([*args, "--job", str(job(tmp_path, "[eval]\n"))]).exit_code == 0
    (out / "judge").mkdir()
    fd = os.open(out / "judge" / "lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another judge phase, as far as the run can tell
        res = run_cli([*args, "--job", str(job(tmp_path))])
    finally:
        os.close(fd)
    assert res.exit_code == 3 and "is being judged by another process" in res.stderr
    assert len(shared_api.log()) == 3  # the run's own rows, from the first run
    assert not any(JUDGE_MARKER in e["prompt"] for e in shared_api.log())
