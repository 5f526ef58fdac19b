"""The Ray engine's actor class run in this process (no Ray): Ray only calls it, so its
batch logic is tested here fast, against the fake API on loopback."""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING

import pyarrow as pa

from batchrunner.config import KEY_ENV, load_job
from batchrunner.errors import RunAbortedError
from batchrunner.inputs import read_rows
from batchrunner.rayactor import BatchOutcome, Job, Worker
from batchrunner.retrying import RetryPolicy
from batchrunner.rundir import StoredSummary
from batchrunner.rundir.actors import ACTORS_DIR, actor_dirs, request_stop, take_over
from tests.helpers import TEST_KEY, make_result, open_run, write_jsonl

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from tests.fakeserver import FakeServer

FP: dict[str, object] = {"input": {"size": 1}, "settings": {}}


def _job(tmp_path: Path, url: str, rows: int) -> tuple[Job, pa.Table]:
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"actor p{i}"} for i in range(rows)])
    spec = load_job(None, input_path=src, output=tmp_path / "run", overrides={"base_url": url})
    spec.output.mkdir()
    token = take_over(spec.output)  # as the driver does
    job = Job(spec, FP, rows, StoredSummary(rows=rows, extra_columns={}), RetryPolicy(), token)
    pickled = [pickle.dumps(row) for row in read_rows(src, spec.source_options())]
    return job, pa.table({"row": pa.array(pickled, pa.binary())})


def _outcome(table: pa.Table) -> BatchOutcome:
    outcome: BatchOutcome = pickle.loads(table.column("outcome")[0].as_py())
    return outcome


def test_a_batch_run_again_skips_the_rows_another_actor_recorded(
    tmp_path: Path, shared_api: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows 0-3 journaled by an actor that died: the batch sends only rows 4-9."""
    monkeypatch.setenv(KEY_ENV, TEST_KEY)
    job, batch = _job(tmp_path, shared_api.base_url, 10)
    with open_run(tmp_path / "run" / ACTORS_DIR / "actor-dead", fingerprint=FP) as dead:
        for i in range(4):
            dead.record(make_result(i))
    outcome = _outcome(Worker(job)(batch))
    assert (outcome.succeeded, outcome.skipped, outcome.error) == (6, 4, None)
    sent = sorted(e["prompt"] for e in shared_api.log())
    assert sent == sorted(f"actor p{i}" for i in range(4, 10))
    assert len(actor_dirs(tmp_path / "run")) == 2  # its own directory beside the dead one's


def test_without_the_key_in_its_environment_an_actor_sends_nothing(
    tmp_path: Path, shared_api: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    job, batch = _job(tmp_path, shared_api.base_url, 3)
    outcome = _outcome(Worker(job)(batch))
    assert isinstance(outcome.error, RunAbortedError)
    assert KEY_ENV in str(outcome.error)
    assert shared_api.stats()["requests_total"] == 0


def test_after_a_stop_request_a_batch_is_handed_back_untouched(
    tmp_path: Path, shared_api: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, TEST_KEY)
    job, batch = _job(tmp_path, shared_api.base_url, 3)
    request_stop(tmp_path / "run", "SIGINT")
    outcome = _outcome(Worker(job)(batch))
    assert outcome.stop is not None and outcome.succeeded == 0
    assert shared_api.stats()["requests_total"] == 0


def test_an_actor_of_an_older_driver_sends_nothing_once_a_newer_one_took_over(
    tmp_path: Path, shared_api: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed driver's actor starting a queued batch after the resume took over."""
    monkeypatch.setenv(KEY_ENV, TEST_KEY)
    job, batch = _job(tmp_path, shared_api.base_url, 3)
    take_over(tmp_path / "run")  # the resume
    outcome = _outcome(Worker(job)(batch))
    assert outcome.stop is not None and outcome.succeeded == 0
    assert shared_api.stats()["requests_total"] == 0
