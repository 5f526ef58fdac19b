"""Exit codes: the table in errors.py, the CLI's boundary, and errors leaving a task group."""

from __future__ import annotations

import errno
import os

import pytest

from batchrunner.clihelp import user_errors as _user_errors
from batchrunner.errors import (
    BatchRunnerError,
    ConfigError,
    DiskError,
    InterruptedRunError,
    OutputError,
    RunAbortedError,
    SourceError,
    TerminatedRunError,
    run_level_error,
)


def test_each_error_has_the_exit_code_of_the_table() -> None:
    """2 nothing sent; 3 stopped with rows pending; 130 SIGINT; 143 SIGTERM."""
    codes: dict[type[BatchRunnerError], int] = {
        ConfigError: 2,
        SourceError: 2,
        OutputError: 2,
        DiskError: 3,
        RunAbortedError: 3,
        InterruptedRunError: 130,
        TerminatedRunError: 143,
    }
    assert {cls: cls.exit_code for cls in codes} == codes
    assert issubclass(TerminatedRunError, InterruptedRunError)


def test_out_of_file_descriptors_at_the_cli_boundary_is_exit_3_without_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An EMFILE no module mapped still leaves as one line and exit 3; other OSErrors stay."""
    with pytest.raises(SystemExit) as leaving, _user_errors():
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), "runs/x/journal")
    assert leaving.value.code == 3
    err = capsys.readouterr().err
    assert err.startswith("Error: cannot open a file in runs/x/journal: Too many open files")
    assert "ulimit -n" in err
    with pytest.raises(OSError, match="Input/output"), _user_errors():
        raise OSError(errno.EIO, os.strerror(errno.EIO))


def test_errors_leaving_the_task_group_after_requests_were_sent() -> None:
    """An exit-2 error (a SourceError while reading) becomes a stop with rows pending (3);
    EMFILE becomes a DiskError; anything else is left to show as the bug it is."""
    read_failed = SourceError("in.jsonl:7", "invalid JSON")
    group = BaseExceptionGroup("run", [ValueError("x"), ExceptionGroup("inner", [read_failed])])
    error = run_level_error(group, "runs/x", sent=True)
    assert isinstance(error, RunAbortedError) and "in.jsonl:7: invalid JSON" in str(error)
    assert run_level_error(group, "runs/x", sent=False) is read_failed
    emfile = OSError(errno.EMFILE, os.strerror(errno.EMFILE))
    error = run_level_error(ExceptionGroup("run", [emfile]), "runs/x", sent=True)
    assert isinstance(error, DiskError) and "ulimit -n" in str(error)
    assert run_level_error(ExceptionGroup("run", [ValueError("bug")]), "runs/x", sent=True) is None
