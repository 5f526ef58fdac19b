"""--cache DIR: successful answers kept across runs, keyed by (convention, model, body).

One SQLite file (`DIR/cache.sqlite3`, stdlib `sqlite3`) in WAL mode, so several runs (and
processes) read and write it at once: readers never wait for the writer, and writers wait
for one another up to `_BUSY_S`. Only succeeded rows are stored; a hit is recorded with
the stored answer (its `response_id`, usage and attempts) under the new row's own id.
Queries run in a worker thread: a busy writer elsewhere must not stall the event loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
import time
from typing import TYPE_CHECKING

import anyio

from batchrunner.errors import ConfigError
from batchrunner.outcomes import answer_fields, stored_answer

if TYPE_CHECKING:
    from pathlib import Path

    from batchrunner.records import Request, Result
    from batchrunner.spec import CacheMode

FILE_NAME = "cache.sqlite3"
_BUSY_S = 60.0


def cache_key(request: Request) -> str:
    """sha256 of the convention, the model and the body as JSON bytes."""
    body = json.dumps(request.body, ensure_ascii=False, separators=(",", ":"))
    text = f"{request.api}\n{request.body.get('model', '')}\n{body}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class ResponseCache:
    """One connection (used from worker threads, one query at a time) to the cache file."""

    def __init__(self, directory: Path, *, ttl_s: float, mode: CacheMode) -> None:
        self.ttl_s = ttl_s  # 0: no age limit
        self.reads = mode in ("read", "readwrite")
        self.writes = mode in ("write", "readwrite")
        self._lock = threading.Lock()
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                directory / FILE_NAME, timeout=_BUSY_S, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the cache in {directory}: {exc}") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS answers"
                " (key TEXT PRIMARY KEY, created REAL NOT NULL, answer TEXT NOT NULL)"
            )
            self._db.commit()
        except sqlite3.Error as exc:
            self._db.close()
            raise ConfigError(f"cannot open the cache in {directory}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    async def get(self, key: str) -> Result | None:
        if not self.reads:
            return None
        return await anyio.to_thread.run_sync(self._get, key)

    async def put(self, key: str, result: Result) -> None:
        if self.writes and result.status == "succeeded":
            await anyio.to_thread.run_sync(self._put, key, result)

    def _get(self, key: str) -> Result | None:
        try:
            with self._lock:
                row = self._db.execute(
                    "SELECT created, answer FROM answers WHERE key = ?", (key,)
                ).fetchone()
        except sqlite3.Error:
            return None  # unreadable now: a miss, and the row is sent
        if row is None or (self.ttl_s > 0 and time.time() - row[0] > self.ttl_s):
            return None
        try:
            return stored_answer(json.loads(row[1]))
        except (ValueError, TypeError):
            return None  # written by another version: ask again (and overwrite it)

    def _put(self, key: str, result: Result) -> None:
        text = json.dumps(answer_fields(result))  # ASCII: a lone surrogate is no error
        # A cache that refuses a write (disk full, locked too long) costs a later run a
        # request, never this run its row: it was recorded already.
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.execute(
                "INSERT OR REPLACE INTO answers (key, created, answer) VALUES (?, ?, ?)",
                (key, time.time(), text),
            )
            self._db.commit()
