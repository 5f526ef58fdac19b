"""Acceptance (issue 9): every row `validate` accepts can be sent, ids are kept exactly, and
user mistakes are one line with exit 2, never a traceback.

Each case drives the real CLI in-process against the fake API subprocess on loopback and
asserts on the server's own request count: a refused input must cost nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import TEST_KEY, file_with_line_7, run_cli, write_jsonl

if TYPE_CHECKING:
    from pathlib import Path

    from click.testing import Result

    from tests.fakeserver import FakeServer

# Line 7 of 21, as it stands in the file: (the line, what the error must say).
_UNSENDABLE_LINE_7: dict[str, tuple[str, str]] = {
    "nan": ('{"id": "r6", "prompt": "hi", "temperature": NaN}', "temperature is NaN"),
    "infinity": ('{"id": "r6", "prompt": "hi", "top_p": Infinity}', "top_p is Infinity"),
    "overflow": ('{"id": "r6", "prompt": "hi", "temperature": 1e999}', "temperature is Infin"),
    "surrogate-prompt": ('{"id": "r6", "prompt": "smile \\ud83d"}', "prompt holds a lone surr"),
    "empty-prompt": ('{"id": "r6", "prompt": ""}', "prompt is empty"),
    "empty-role": (
        '{"id": "r6", "messages": [{"role": "", "content": "hi"}]}',
        "messages[0] has an empty role",
    ),
    "model-number": ('{"id": "r6", "prompt": "hi", "model": 5}', "model must be a non-empty"),
    "max-tokens-text": (
        '{"id": "r6", "prompt": "hi", "max_tokens": "lots"}',
        "max_tokens must be an integer, got a string",
    ),
    "surrogate-id": ('{"id": "\\ud800", "prompt": "hi"}', "id holds a lone surrogate ('\\ud800'"),
}


def _refused(result: Result, *fragments: str) -> None:
    """Exit 2, one line on stderr holding every fragment, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


@pytest.mark.parametrize("case", sorted(_UNSENDABLE_LINE_7))
def test_unsendable_line_7_is_refused_by_validate_and_run_sends_nothing(
    tmp_path: Path, shared_api: FakeServer, case: str
) -> None:
    """validate and run both exit 2 naming in.jsonl:7 and the field; the API sees 0 requests."""
    line, reason = _UNSENDABLE_LINE_7[case]
    src = file_with_line_7(tmp_path, line)
    _refused(run_cli(["validate", str(src)]), "in.jsonl:7: ", reason)
    for api in ("messages", "chat"):
        out = tmp_path / f"run-{api}"
        args = ["run", str(src), "-o", str(out), "--base-url", shared_api.base_url, "-q"]
        _refused(run_cli([*args, "--api", api]), "in.jsonl:7: ", reason)
        assert not (out / "results.parquet").exists()
    assert shared_api.stats()["requests_total"] == 0


def test_ids_that_collapse_to_question_marks_are_refused(tmp_path: Path) -> None:
    """Ids "?", "\\ud801", "\\ud800" once all became "?"; the first lone surrogate is refused."""
    src = tmp_path / "ids.jsonl"
    src.write_text(
        '{"id": "?", "prompt": "a"}\n{"id": "\\ud801", "prompt": "b"}\n'
        '{"id": "\\ud800", "prompt": "c"}\n',
        encoding="utf-8",
    )
    _refused(run_cli(["validate", str(src)]), "ids.jsonl:2: ", "'\\ud801'")
    batch = write_jsonl(
        tmp_path / "batch.jsonl",
        [
            {
                "custom_id": "c\udc80",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"messages": [{"role": "user", "content": "hi"}]},
            }
        ],
    )
    _refused(run_cli(["validate", str(batch)]), "batch.jsonl:1: ", "custom_id holds a lone")


_MSG = [{"role": "user", "content": "hi"}]
_PARQUET_CASES: dict[str, tuple[dict[str, list[Any]], str]] = {
    "nan-temperature": (
        {"id": ["a", "b", "c"], "prompt": ["x", "y", "z"], "temperature": [0.5, 0.1, float("nan")]},
        "in.parquet row 3: temperature is NaN",
    ),
    "null-id": (
        {"id": ["a", None, "c"], "prompt": ["x", "y", "z"]},
        "in.parquet row 2: id is null",
    ),
    "null-custom-id": (
        {"custom_id": ["a", None], "params": [json.dumps({"max_tokens": 5, "messages": _MSG})] * 2},
        "in.parquet row 2: custom_id is null",
    ),
}


@pytest.mark.parametrize("case", sorted(_PARQUET_CASES))
def test_parquet_rows_get_the_same_checks(
    tmp_path: Path, shared_api: FakeServer, case: str
) -> None:
    """A NaN request field or a null id in Parquet: exit 2 naming the row; nothing is sent."""
    columns, message = _PARQUET_CASES[case]
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table(columns), src)
    _refused(run_cli(["validate", str(src)]), message)
    out = tmp_path / "run"
    res = run_cli(["run", str(src), "-o", str(out), "--base-url", shared_api.base_url, "-q"])
    _refused(res, message)
    assert shared_api.stats()["requests_total"] == 0


def test_parquet_string_that_is_not_utf8_names_row_and_column(tmp_path: Path) -> None:
    """Arrow does not check what a writer put in a string column: the row is named."""
    data = b"okbad\xed\xa0\x80"
    offsets = pa.array([0, 2, 8], pa.int32()).buffers()[1]
    ids = pa.Array.from_buffers(pa.string(), 2, [None, offsets, pa.py_buffer(data)])
    src = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": ids, "prompt": ["a", "b"]}), src)
    _refused(run_cli(["validate", str(src)]), "bad.parquet row 2: column 'id' is not UTF-8")


# --- user mistakes: one line, exit 2 ------------------------------------------------------


def _job(tmp_path: Path, toml: str) -> str:
    path = tmp_path / f"job-{len(list(tmp_path.glob('job-*')))}.toml"
    path.write_text(toml, encoding="utf-8")
    return str(path)


def _mistakes(tmp_path: Path) -> dict[str, tuple[list[str], dict[str, str], str]]:
    """name -> (argv after `batchrunner`, extra environment, what stderr must say)."""
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "hi"}])
    a_file = tmp_path / "a-file"
    a_file.write_text("not a run dir\n")
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(loop)
    out = str(tmp_path / "out")
    run = ["run", str(src), "-o", out, "-q"]
    secret_url = "http://user:hunter2@127.0.0.1:9/v1"
    return {
        "output-is-a-file": (["run", str(src), "-o", str(a_file)], {}, "not a directory"),
        "status-of-a-file": (["status", str(a_file)], {}, "is a file, not a run directory"),
        "timeout-nan": ([*run, "--timeout", "nan"], {}, "timeout must be"),
        "timeout-inf": ([*run, "--timeout", "inf"], {}, "timeout must be"),
        "temperature-nan": ([*run, "--temperature", "nan"], {}, "temperature must be"),
        "rpm-nan": ([*run, "--rpm", "nan"], {}, "rpm must be"),
        "job-timeout-nan": (
            [*run, "--job", _job(tmp_path, "[limits]\ntimeout = nan\ntpm = inf\n")],
            {},
            "tpm must be a number >= 0, not inf; timeout must be a number of seconds > 0, not nan",
        ),
        "job-temperature-inf": (
            [*run, "--job", _job(tmp_path, "[request]\ntemperature = -inf\n")],
            {},
            "temperature must be a number, not -inf",
        ),
        "key-control-char": (run, {"CAICAINI_API_KEY": "sk-live-\x01SECRET"}, "control or non"),
        "key-non-ascii": (run, {"CAICAINI_API_KEY": "sk-livé-SECRET"}, "control or non-ASCII"),
        "base-url-password-flag": ([*run, "--base-url", secret_url], {}, "credentials"),
        "base-url-password-env": (run, {"CAICAINI_BASE": secret_url}, "credentials"),
        "base-url-password-check": (["check", "--base-url", secret_url], {}, "credentials"),
        "input-symlink-loop-run": (
            ["run", str(loop), "-o", out],
            {},
            "Too many levels of symbolic links",
        ),
        "input-symlink-loop-validate": (["validate", str(loop)], {}, "symbolic links"),
    }


_MISTAKE_NAMES = (
    "output-is-a-file",
    "status-of-a-file",
    "timeout-nan",
    "timeout-inf",
    "temperature-nan",
    "rpm-nan",
    "job-timeout-nan",
    "job-temperature-inf",
    "key-control-char",
    "key-non-ascii",
    "base-url-password-flag",
    "base-url-password-env",
    "base-url-password-check",
    "input-symlink-loop-run",
    "input-symlink-loop-validate",
)


@pytest.mark.parametrize("name", _MISTAKE_NAMES)
def test_user_mistakes_are_one_line_exit_2(tmp_path: Path, name: str) -> None:
    """Each user mistake: exit 2, a single line on stderr, no traceback, no secret echoed."""
    cases = _mistakes(tmp_path)
    assert sorted(cases) == sorted(_MISTAKE_NAMES)
    argv, env, fragment = cases[name]
    res = run_cli(argv, env=env)
    _refused(res, fragment)
    for secret in ("SECRET", "hunter2", TEST_KEY):
        assert secret not in res.stderr + res.stdout
    assert not (tmp_path / "out").exists() or name == "output-is-a-file"


def test_user_mistakes_in_a_real_process_print_no_traceback(tmp_path: Path) -> None:
    """The same, as a subprocess: a key with a control character and an input symlink loop."""
    cases = _mistakes(tmp_path)
    for name in ("key-control-char", "input-symlink-loop-run"):
        argv, extra, fragment = cases[name]
        env = {**os.environ, "CAICAINI_API_KEY": TEST_KEY, "CAICAINI_BASE": "http://127.0.0.1:9/v1"}
        proc = subprocess.run(
            [sys.executable, "-m", "batchrunner", *argv],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert fragment in proc.stderr
        assert "SECRET" not in proc.stderr
