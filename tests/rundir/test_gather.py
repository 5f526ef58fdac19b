"""The Ray actors' directories: gathered into the run's parts, read by other actors, locked
while a batch runs, and counted as outcomes by a resume's fingerprint check. No Ray here:
actor directories are written with RunDir, as an actor writes them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from batchrunner.errors import OutputError
from batchrunner.rundir.actors import (
    ACTORS_DIR,
    Elsewhere,
    actor_dirs,
    in_use,
    owner,
    release,
    request_stop,
    stop_words,
    take_over,
)
from batchrunner.rundir.files import list_parts
from batchrunner.rundir.gather import gather, wait_idle
from tests.helpers import commit_all, make_result, open_run, read_results

if TYPE_CHECKING:
    from pathlib import Path


def _actor(run: Path, name: str, indices: list[int], *, commit: bool) -> Path:
    """An actor directory holding `indices` (as a part, or left in the journal: a kill)."""
    path = run / ACTORS_DIR / name
    with open_run(path) as rd:
        for i in indices:
            rd.record(make_result(i))
        if commit:
            commit_all(rd)
    return path


def test_gather_moves_parts_and_journals_once_then_results_hold_every_row(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with open_run(run) as rd:
        rd.record(make_result(0))
        commit_all(rd)
    _actor(run, "actor-1", [1, 2, 3], commit=True)
    _actor(run, "actor-2", [4, 5], commit=False)  # killed before its segment became a part
    _actor(run, "actor-3", [6, 7, 8, 9], commit=True)
    with open_run(run) as rd:
        assert rd.counts().succeeded == 1
        assert gather(rd, total_rows=10) == 3
        assert rd.counts().succeeded == 10
        rd.finalize({})
    assert [r["id"] for r in read_results(run)] == [f"r{i}" for i in range(10)]
    assert actor_dirs(run) == []
    assert len(list_parts(run / "parts")) == 4
    with open_run(run) as rd:  # a reopen counts the gathered parts from disk alone
        assert rd.counts().succeeded == 10


def test_a_gathering_cut_short_leaves_each_part_in_one_place(tmp_path: Path) -> None:
    """Parts move by rename: one moved, then a crash, then the rest; no row counted twice."""
    run = tmp_path / "run"
    actor = _actor(run, "actor-1", [0, 1], commit=True)
    with open_run(actor) as rd:
        rd.record(make_result(2))
        commit_all(rd)
    with open_run(run) as rd:
        first = list_parts(actor / "parts")[0][1]
        rd.adopt(first)  # ... and the driver dies here
    assert len(list_parts(actor / "parts")) == 1
    with open_run(run) as rd:
        assert rd.counts().succeeded == 2
        gather(rd, total_rows=10)
        assert rd.counts().succeeded == 3
        assert len(list_parts(run / "parts")) == 2


def test_elsewhere_reads_other_actors_parts_and_journals_not_its_own(tmp_path: Path) -> None:
    run = tmp_path / "run"
    own = _actor(run, "actor-1", [0], commit=True)
    _actor(run, "actor-2", [1, 2], commit=True)
    _actor(run, "actor-3", [3], commit=False)
    assert Elsewhere(run, own).indices() == {1, 2, 3}


def test_a_batch_in_progress_holds_its_lock_and_a_resume_waits_for_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    path = run / ACTORS_DIR / "actor-1"
    with open_run(path) as rd:
        rd.record(make_result(0))
        assert in_use(path)
        with pytest.raises(OutputError, match="actor-1"):
            wait_idle(run, timeout_s=0.3)
    assert not in_use(path)
    wait_idle(run, timeout_s=0.3)


def test_actor_outcomes_make_a_resume_with_other_settings_refused(tmp_path: Path) -> None:
    """A killed Ray run whose rows are only in actor directories still holds outcomes."""
    run = tmp_path / "run"
    with open_run(run):
        pass
    _actor(run, "actor-1", [0], commit=False)
    with pytest.raises(OutputError, match="holds a different run"):
        open_run(run, fingerprint={"input": "other"})


def test_stop_requests_are_read_in_order_and_forgotten_by_the_next_driver(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    assert stop_words(run) == []
    first = take_over(run)
    request_stop(run, "SIGINT")
    request_stop(run, "now")
    assert stop_words(run) == ["SIGINT", "now"]
    second = take_over(run)
    assert stop_words(run) == []
    assert owner(run) == second != first
    release(run)
    assert not (run / ACTORS_DIR).exists()
