"""--dedupe: rows whose request bodies are byte-identical are sent once.

The first row with a body (the leader) is sent; rows with the same body that arrive while
it is on the wire wait for it, and later ones take its answer at once. Each copy is
recorded under its own id, as its own journal line, with `attempts = 0` (no request of its
own) and the leader's response, usage and `response_id`.

Crash safety: the answer is appended to `dedupe.jsonl` in the run directory *before* the
leader's row is recorded, so on resume a row whose body was answered takes the stored
answer instead of being sent again. A crash before that line is written loses the answer
exactly as it would without --dedupe (the row was never recorded, and is sent again).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from typing import TYPE_CHECKING, Any

import anyio

from batchrunner.outcomes import answer_fields, stored_answer

if TYPE_CHECKING:
    from pathlib import Path

    from batchrunner.records import Request, Result

FILE_NAME = "dedupe.jsonl"


def body_key(request: Request) -> str:
    """sha256 of the convention, path and body as JSON bytes (the builder's key order)."""
    body = json.dumps(request.body, ensure_ascii=False, separators=(",", ":"))
    text = f"{request.api}\n{request.path}\n{body}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class Dedupe:
    """The answers of this run by body key, and the bodies now on the wire."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / FILE_NAME
        self.answers: dict[str, Result] = _load(self.path)
        self.pending: dict[str, anyio.Event] = {}

    async def claim(self, key: str) -> Result | None:
        """The stored answer for `key`; else None, and the caller is now its leader (and
        must call `settle`). Waits while another row with the same body is on the wire."""
        while True:
            if key in self.answers:
                return self.answers[key]
            event = self.pending.get(key)
            if event is None:
                self.pending[key] = anyio.Event()
                return None
            await event.wait()  # the leader settled; answered or not, look again

    def settle(self, key: str, answer: Result | None) -> None:
        """The leader is done: keep a success (on disk first), then wake the waiters.
        Without a success the next waiter becomes the leader and sends its own request."""
        try:
            if answer is not None and answer.status == "succeeded" and key not in self.answers:
                self._append(key, answer_fields(answer))
                self.answers[key] = answer
        finally:
            event = self.pending.pop(key, None)
            if event is not None:
                event.set()

    def _append(self, key: str, fields: dict[str, Any]) -> None:
        # ASCII: a lone surrogate (a stream cut mid-emoji) travels as its \u escape.
        line = json.dumps({"key": key, "answer": fields}, separators=(",", ":")) + "\n"
        # One write of a whole line: it survives kill -9 (the kernel has it); a torn last
        # line (a power cut) is skipped on load. A disk that refuses it costs a resume one
        # request per copy left, never a row: the journal reports the disk and stops.
        with contextlib.suppress(OSError):
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode("ascii"))
            finally:
                os.close(fd)


def _load(path: Path) -> dict[str, Result]:
    answers: dict[str, Result] = {}
    try:
        text = path.read_text("ascii", "replace")
    except FileNotFoundError:
        return answers
    for line in text.splitlines():
        try:
            obj = json.loads(line)
            answers[str(obj["key"])] = stored_answer(obj["answer"])
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line: that answer is asked again
    return answers
