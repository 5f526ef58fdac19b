"""calls.log: lines gather and go out whole, one write per flush; none is lost on close."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import anyio

from batchrunner import calllog
from batchrunner.calllog import CallLog
from batchrunner.records import Attempt

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def _attempt(row_id: str) -> Attempt:
    return Attempt(
        row_id=row_id,
        attempt=1,
        http_status=200,
        request_id=f"req-{row_id}",
        response_id=f"resp-{row_id}",
        latency_ms=12.5,
        error_type=None,
        retry_after=None,
    )


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["row_id"] for line in path.read_bytes().splitlines()]


def test_lines_wait_for_a_flush_and_the_rest_go_out_on_close(tmp_path: Path) -> None:
    path = tmp_path / "calls.log"
    echoed: list[str] = []
    with CallLog(path, echo=echoed.append) as log:
        log.write(_attempt("a"))
        log.write(_attempt("b"))
        assert path.read_bytes() == b""  # gathered, not yet written
        assert len(echoed) == 2  # -v shows each attempt at once all the same
        log.flush()
        assert _ids(path) == ["a", "b"]
        log.write(_attempt("c"))
    assert _ids(path) == ["a", "b", "c"]
    assert path.read_bytes().endswith(b"\n")


def test_a_full_buffer_is_written_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calllog, "FLUSH_BYTES", 300)
    path = tmp_path / "calls.log"
    with CallLog(path) as log:
        for n in range(3):
            log.write(_attempt(str(n)))
        assert 0 < len(_ids(path)) < 3, "the lines past 300 bytes went out with no flush"
    assert _ids(path) == ["0", "1", "2"]


def test_flushing_writes_while_attempts_are_sparse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crash bound: a line reaches the file within FLUSH_S, with no attempt after it."""
    monkeypatch.setattr(calllog, "FLUSH_S", 0.01)
    path = tmp_path / "calls.log"

    async def main() -> None:
        with CallLog(path) as log:
            async with anyio.create_task_group() as tg:
                tg.start_soon(log.flushing)
                log.write(_attempt("only"))
                for _ in range(2000):  # 10 s at most
                    await anyio.sleep(0.005)
                    if path.read_bytes():
                        break
                tg.cancel_scope.cancel()
            assert _ids(path) == ["only"]

    anyio.run(main)
