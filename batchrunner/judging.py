"""`run` with `[eval]`: the run, then the eval settings kept with it, then the judge phase.

The judge phase (`scorer = "judge"`) sends one judge request per succeeded row through the
runner itself: each round is an ordinary run directory, `DIR/judge/round-N/`, whose input
`DIR/judge/round-N.jsonl` is built from the run's results and input rows. So the judge's
calls get the same retries, pacing, journal, resume and kill -9 safety, and their own
response ids. A killed round is resumed (recorded verdicts are not asked again); rows that
succeed later (a resume with --retry-errors) are judged in a new round. Never re-judges a
recorded row, and never mixes verdicts of two judge settings in one run directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import anyio
import pyarrow.parquet as pq

from batchrunner.errors import ConfigError, RunAbortedError
from batchrunner.evaluate import build_judge_prompt, eval_table, result_column
from batchrunner.inputs import read_rows
from batchrunner.rundir.files import atomic_write
from batchrunner.runner import run_job
from batchrunner.scoring import EVAL_FILE, JUDGE_DIR, judge_rounds, read_verdicts, round_paths
from batchrunner.spec import RequestSpec

if TYPE_CHECKING:
    import signal
    from collections.abc import AsyncIterable, Callable, Iterator
    from pathlib import Path

    from batchrunner.evaluate import EvalSpec
    from batchrunner.progress import Progress, RunEnd
    from batchrunner.records import JSONObject, RunStats
    from batchrunner.retrying import RetryPolicy
    from batchrunner.spec import JobSpec

# The default template asks for two short lines; room for a model that explains first.
JUDGE_MAX_TOKENS = 512
_SETTINGS_FILE = "settings.json"  # in DIR/judge: the settings every verdict there was made with


@dataclass(frozen=True, slots=True, kw_only=True)
class JudgeStats:
    """Verdicts recorded in the run directory after the judge phase, over all rounds."""

    judged: int
    passed: int
    failed: int
    errored: int  # the judge request failed, or its reply held no verdict
    sent_rows: int  # judge outcomes recorded by this invocation
    path: Path

    def summary(self) -> str:
        """`run`'s judge line."""
        return (
            f"judge: {self.judged} answers judged: {self.passed} passed, {self.failed} failed, "
            f"{self.errored} errored ({self.sent_rows} recorded by this run) -> {self.path}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RunHooks:
    """The caller's callbacks, passed to every run_job of the run and its judge rounds."""

    policy: RetryPolicy | None = None
    progress: Callable[[Progress], None] | None = None
    call_echo: Callable[[str], None] | None = None
    warn: Callable[[str], None] | None = None
    note: Callable[[str], None] | None = None  # what the judge phase is doing, for stderr
    # Stop signals from the caller (api.execute, arun) instead of the process's handlers.
    interrupts: AsyncIterable[signal.Signals] | None = None
    ended: Callable[[RunEnd], None] | None = None  # how the run's own invocation ended


def _judge_settings(spec: EvalSpec, api: str) -> dict[str, Any]:
    return {
        "api": api,
        "expected": spec.expected,
        "judge_model": spec.judge_model,
        "judge_template": spec.judge_template,
        "max_tokens": JUDGE_MAX_TOKENS,
    }


def check_judge_settings(spec: JobSpec) -> None:
    """Refuse (ConfigError, before anything is sent) judge settings other than those the
    verdicts already recorded in DIR/judge were made with."""
    if spec.eval is None or spec.eval.scorer != "judge":
        return
    path = spec.output / JUDGE_DIR / _SETTINGS_FILE
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    wanted = _judge_settings(spec.eval, spec.api)
    differ = [key for key in wanted if stored.get(key) != wanted[key]]
    if differ:
        was = ", ".join(f"{key} = {stored.get(key)!r}" for key in differ)
        raise ConfigError(
            f"{spec.output} was judged with {was}; [eval] now differs. Use a new run "
            f"directory, or move {spec.output / JUDGE_DIR} away to judge every row again"
        )


def _write_json(path: Path, value: object, run_dir: Path) -> None:
    with atomic_write(path, run_dir=run_dir) as fh:
        fh.write(json.dumps(value, indent=1).encode("utf-8") + b"\n")


def save_eval(spec: JobSpec) -> None:
    """Keep the run's `[eval]` as DIR/eval.json, which `report` and `export` score by."""
    assert spec.eval is not None
    _write_json(spec.output / EVAL_FILE, {"eval": eval_table(spec.eval)}, spec.output)


async def run_and_judge(
    spec: JobSpec, *, api_key: str, hooks: RunHooks
) -> tuple[RunStats, JudgeStats | None]:
    """`run_job`, then (with `[eval]`) DIR/eval.json, then the judge phase when the scorer
    is `judge` and every row has an outcome.

    The RunStats are the run's own rows: judge failures are not row failures of the run
    (they count as errored in the scores). A judge round that stops raises like any run
    (exit 3, 130, 143); the same command resumes it.
    """
    check_judge_settings(spec)
    stats = await _run(spec, api_key, hooks)
    if spec.eval is None:
        return stats, None
    await anyio.to_thread.run_sync(save_eval, spec)
    if spec.eval.scorer != "judge" or stats.results is None:
        return stats, None
    return stats, await judge(spec, api_key=api_key, hooks=hooks)


async def _run(spec: JobSpec, api_key: str, hooks: RunHooks) -> RunStats:
    if spec.engine is not None:  # --engine ray
        from batchrunner.rayengine import run_ray

        return await run_ray(
            spec,
            api_key=api_key,
            policy=hooks.policy,
            progress=hooks.progress,
            warn=hooks.warn,
            interrupts=hooks.interrupts,
            ended=hooks.ended,
        )
    return await run_job(
        spec,
        api_key=api_key,
        policy=hooks.policy,
        progress=hooks.progress,
        call_echo=hooks.call_echo,
        warn=hooks.warn,
        interrupts=hooks.interrupts,
        ended=hooks.ended,
    )


@contextlib.contextmanager
def _judge_lock(base: Path) -> Iterator[None]:
    """One judge phase per run directory: two would race to number a new round."""
    base.mkdir(exist_ok=True)
    fd = os.open(base / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Exit 3, not 2: the run itself may have sent requests in this invocation.
            raise RunAbortedError(
                f"{base} is being judged by another process; run the same command again "
                "once it has finished"
            ) from None
        yield
    finally:
        os.close(fd)


async def judge(spec: JobSpec, *, api_key: str, hooks: RunHooks) -> JudgeStats:
    """Judge every succeeded row of the finished run that has no verdict recorded yet."""
    assert spec.eval is not None
    base = spec.output / JUDGE_DIR
    sent = 0
    with _judge_lock(base):
        settings = base / _SETTINGS_FILE
        if not settings.exists():
            _write_json(settings, _judge_settings(spec.eval, spec.api), spec.output)
        rounds = judge_rounds(spec.output)
        for number in rounds:
            done = (round_paths(spec.output, number)[1] / "results.parquet").exists()
            if not done or spec.retry_errors:
                _say(hooks, f"judge: resuming round {number}")
                sent += (
                    await _run(_round_spec(spec, number), api_key, replace(hooks, ended=None))
                ).sent_rows
        number = (rounds[-1] if rounds else 0) + 1
        count = await anyio.to_thread.run_sync(_write_round, spec, number)
        if count:
            _say(hooks, f"judge: {count} answers to {spec.eval.judge_model} (round {number})")
            sent += (
                await _run(_round_spec(spec, number), api_key, replace(hooks, ended=None))
            ).sent_rows
        verdicts, _ = await anyio.to_thread.run_sync(read_verdicts, spec.output)
    passed = [v[0] for v in verdicts.values()]
    return JudgeStats(
        judged=len(passed),
        passed=passed.count(True),
        failed=passed.count(False),
        errored=passed.count(None),
        sent_rows=sent,
        path=base,
    )


def _say(hooks: RunHooks, message: str) -> None:
    if hooks.note is not None:
        hooks.note(message)


def _round_spec(spec: JobSpec, number: int) -> JobSpec:
    """The job of judge round `number`: its own input and run directory, the judge model,
    no system prompt or template; limits, api, base URL and durability as the run's."""
    assert spec.eval is not None
    rows, out = round_paths(spec.output, number)
    request = RequestSpec(
        model=spec.eval.judge_model,
        max_tokens=JUDGE_MAX_TOKENS,
        temperature=0.0,  # the same verdict for the same answer, as far as the model allows
        stream=spec.request.stream,
    )
    # Judge rounds are small: they run here, not on Ray.
    return replace(
        spec, input=rows, output=out, request=request, eval=None, limit=None, engine=None
    )


def _to_judge(spec: JobSpec) -> dict[str, tuple[object, str]]:
    """Row id -> (expected, answer) of the succeeded rows with an expected value that no
    round has recorded a verdict for."""
    assert spec.eval is not None
    path = spec.output / "results.parquet"
    names = pq.read_schema(path).names
    expected = result_column("expected", spec.eval.expected, names)
    table = pq.read_table(path, columns=list(dict.fromkeys(["id", "status", "text", expected])))
    recorded, _ = read_verdicts(spec.output)
    wanted: dict[str, tuple[object, str]] = {}
    for row in table.to_pylist():
        judged = row["id"] in recorded
        if row["status"] == "succeeded" and row[expected] is not None and not judged:
            wanted[row["id"]] = (row[expected], row["text"] or "")
    return wanted


def _write_round(spec: JobSpec, number: int) -> int:
    """Write round `number`'s input (one judge prompt per row to judge, in input order);
    the number of rows (0: nothing to judge, and nothing is written)."""
    assert spec.eval is not None
    wanted = _to_judge(spec)
    if not wanted:
        return 0
    rows_file = round_paths(spec.output, number)[0]
    written = 0
    with atomic_write(rows_file, run_dir=spec.output) as fh:
        for row in read_rows(spec.input, spec.source_options()):
            if row.id not in wanted:
                continue
            expected, answer = wanted[row.id]
            prompt = build_judge_prompt(spec.eval, question_text(row.body), expected, answer)
            fh.write(json.dumps({"id": row.id, "prompt": prompt}).encode("ascii") + b"\n")
            written += 1
            if written == len(wanted):
                break
    return written


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = (b.get("text") for b in content if isinstance(b, dict) and b.get("type") == "text")
        return "\n".join(t for t in texts if isinstance(t, str))
    return ""


def question_text(body: JSONObject) -> str:
    """What the judge sees as the question: the row's prompt, or its messages' text (one
    message: its text alone; several: `role: text` each, blank lines between)."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ""
    turns = [
        (str(m.get("role")), _content_text(m.get("content")))
        for m in messages
        if isinstance(m, dict)
    ]
    if len(turns) == 1:
        return turns[0][1]
    return "\n\n".join(f"{role}: {text}" for role, text in turns)
