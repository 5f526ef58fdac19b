"""The key never leaves through what the server echoes: types, headers, events, answers.

Pure tests of `Redactor`, then whole runs with `-v` against a hostile server that echoes
the key it was sent (a sentinel) into `error.type`, a `request-id` header, a stream's
error event, an answer's text (also split across stream deltas, and `\\u`-escaped): the
sentinel is in no byte of any file of the run directory, in no decoded Parquet value, and
not on stdout or stderr.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
import pytest

from batchrunner.errors import PermanentError
from batchrunner.redaction import REDACTED, Redactor, redact
from tests.helpers import run_cli, write_jsonl
from tests.hostile import hostile_api

if TYPE_CHECKING:
    from pathlib import Path

SENTINEL = "sk-SENTINEL-7f3a9c2e5b1d4680"


def test_the_exact_key_goes_from_bytes_text_and_headers() -> None:
    """Bytes, ids and header values lose the key; other text is left exactly as it was."""
    r = Redactor(SENTINEL)
    assert r.raw(f'{{"a": "{SENTINEL}"}}'.encode()) == b'{"a": "[redacted]"}'
    assert r.text(f"req_{SENTINEL}") == "req_[redacted]"
    assert r.text("api-reference token_count") == "api-reference token_count"
    headers = r.headers([(b"Request-Id", SENTINEL.encode()), (b"X-Other", b"ok")])
    assert headers == {"request-id": REDACTED, "x-other": "ok"}


def test_header_names_come_lower_case_however_many_a_server_makes_up() -> None:
    """Names are decoded once and remembered, up to a bound: names past it (a server that
    makes them up) come out the same, and the key still goes from every value."""
    r = Redactor(SENTINEL)
    for n in range(3000):
        pairs = [(f"X-Made-Up-{n}".encode(), SENTINEL.encode()), (b"Content-TYPE", b"a/b")]
        assert r.headers(pairs) == {f"x-made-up-{n}": REDACTED, "content-type": "a/b"}


def test_prose_also_loses_key_shaped_words() -> None:
    """Messages lose the exact key and anything shaped like one (OpenAI's `sk-abc***xyz`)."""
    r = Redactor(SENTINEL)
    assert r.prose(f"bad {SENTINEL}; also sk-abc***wxyz") == "bad [redacted]; also [redacted]"
    assert redact("Bearer abc.def") == "[redacted]"


def test_a_short_key_is_not_searched_for() -> None:
    """A key under 8 characters (a dry run's `dry`) would corrupt answers: left alone."""
    r = Redactor("dry")
    assert r.text("dry weather") == "dry weather"
    assert r.raw(b"dry") == b"dry"


def test_an_escaped_key_in_a_stored_body_is_found() -> None:
    """A `\\u`-escaped key is found in decoded form; the stored text and body are clean."""
    r = Redactor(SENTINEL)
    escaped = "".join(f"\\u{ord(c):04x}" for c in SENTINEL)
    body, text = r.stored({"text": SENTINEL}, f'{{"text": "{escaped}"}}')
    assert SENTINEL not in text and json.loads(text) == {"text": REDACTED}
    assert body == {"text": REDACTED}
    plain = '{"text": "caf\\u00e9"}'
    assert r.stored({"text": "café"}, plain) == ({"text": "café"}, plain)  # untouched


def test_an_error_is_rebuilt_with_every_field_clean() -> None:
    """type, message, code, request id, headers and str() all lose the key."""
    err = PermanentError(
        SENTINEL,
        f"no {SENTINEL}",
        http_status=400,
        request_id=SENTINEL,
        code=SENTINEL,
        headers={"request-id": SENTINEL},
    )
    clean = Redactor(SENTINEL).error(err)
    assert type(clean) is PermanentError and clean.http_status == 400
    assert SENTINEL not in repr(vars(clean)) and SENTINEL not in str(clean)


# --- whole runs -------------------------------------------------------------------------------

PLAIN_ROWS = ["echo-type", "echo-request-id", "echo-text", "echo-escaped", "hello"]
STREAM_ROWS = ["echo-type", "echo-request-id", "echo-text", "stream-echo", "hello"]


def _all_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _all_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _all_strings(v)]
    return []


@pytest.mark.parametrize("stream", [False, True])
def test_an_echoed_key_is_in_no_file_and_no_output(tmp_path: Path, stream: bool) -> None:
    """Every echo of the key (error.type, request-id, SSE error event, answer text split
    across deltas or escaped) comes out as [redacted] in results, parts, calls.log, -v."""
    kinds = STREAM_ROWS if stream else PLAIN_ROWS
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": k, "prompt": f"{k} now"} for k in kinds])
    out = tmp_path / "run"
    with hostile_api() as server:
        res = run_cli(
            [
                "run", str(src), "-o", str(out), "--base-url", server.base_url, "-v",
                "--no-progress", "--max-attempts", "2", "--stream" if stream else "--no-stream",
            ],
            key=SENTINEL,
        )  # fmt: skip
    assert res.exit_code == 1, res.output  # the echo-type and stream-echo rows error
    assert SENTINEL not in res.stdout and SENTINEL not in res.stderr
    assert "[redacted]" in res.stderr  # -v echoed the redacted calls.log lines
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files)
    for path in files:
        assert SENTINEL.encode() not in path.read_bytes(), path
        if path.suffix == ".parquet":  # compressed pages could hide it from a byte search
            for value in _all_strings(pq.read_table(path).to_pylist()):
                assert SENTINEL not in value, (path, value)
    rows = {r["id"]: r for r in pq.read_table(out / "results.parquet").to_pylist()}
    assert rows["echo-type"]["error_type"] == REDACTED
    assert rows["echo-type"]["request_id"] == REDACTED
    assert rows["echo-request-id"]["request_id"] == "req_[redacted]"
    assert rows["echo-text"]["text"] == "your key: [redacted]"
    assert REDACTED in json.loads(rows["echo-text"]["response"])["content"][0]["text"]
    if stream:
        assert rows["stream-echo"]["error_message"] == "bad [redacted]"
    else:
        assert rows["echo-escaped"]["text"] == "key [redacted]"
        assert rows["echo-text"]["model"] == REDACTED
    assert rows["hello"]["text"] == "answer to hello now"
