"""Turn what a worker got (a Sent, or a reason) into the Result row that gets recorded.

Pure: no IO. Error rows keep the server's status, type, message and request id.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import TYPE_CHECKING, Any

from batchrunner.records import Result

if TYPE_CHECKING:
    from batchrunner.records import Row, Sent

# The per-row fields of a Result: an answer kept for reuse (--dedupe, --cache) leaves them
# out, and whichever row takes it fills them in.
_OWN = ("index", "id", "extra", "completed_at_us", "latency_ms")


def now_us() -> int:
    return time.time_ns() // 1000


def success_result(row: Row, sent: Sent) -> Result:
    """A succeeded row: the parsed completion plus the complete response body."""
    assert sent.raw is not None and sent.completion is not None
    c = sent.completion
    return Result(
        index=row.index,
        id=row.id,
        status="succeeded",
        response_id=c.response_id,
        request_id=sent.raw.request_id,
        model=c.model,
        text=c.text,
        stop_reason=c.stop_reason,
        input_tokens=c.input_tokens,
        output_tokens=c.output_tokens,
        attempts=sent.attempts,
        latency_ms=sent.latency_ms,
        http_status=sent.raw.status,
        response=_body_text(sent),
        completed_at_us=now_us(),
        extra=row.extra,
        tool_calls=c.tool_calls,
        parsed=c.parsed,
    )


def _body_text(sent: Sent) -> str | None:
    if sent.raw is None:
        return None
    return sent.raw.body_text or json.dumps(
        sent.raw.body, ensure_ascii=False, separators=(",", ":")
    )


def error_result(row: Row, error_type: str, message: str, *, sent: Sent | None = None) -> Result:
    """An errored row: what the last attempt said, and how many attempts were made.

    An `invalid_output` row also keeps the last answer it got, in `response`.
    """
    err = sent.error if sent is not None else None
    return Result(
        index=row.index,
        id=row.id,
        status="errored",
        request_id=err.request_id if err else None,
        attempts=sent.attempts if sent else 0,
        latency_ms=sent.latency_ms if sent else 0.0,
        http_status=err.http_status if err else None,
        error_type=error_type,
        error_message=message,
        response=_body_text(sent) if sent is not None else None,
        completed_at_us=now_us(),
        extra=row.extra,
    )


def answer_fields(result: Result) -> dict[str, Any]:
    """A succeeded Result without its per-row fields, as JSON-ready values."""
    return {
        f.name: getattr(result, f.name)
        for f in dataclasses.fields(Result)
        if f.name not in _OWN and getattr(result, f.name) is not None
    }


def stored_answer(fields: dict[str, Any]) -> Result:
    """`answer_fields` read back (through JSON) as a Result of no row yet. Raises
    TypeError or ValueError when `fields` is no such answer (another version wrote it)."""
    fields = dict(fields)
    if fields.get("tool_calls") is not None:
        fields["tool_calls"] = tuple(fields["tool_calls"])  # JSON gives back a list
    if fields.get("status") != "succeeded" or not set(fields).isdisjoint(_OWN):
        raise ValueError("not a stored answer")
    return Result(index=-1, id="", **fields)


def reused_answer(answer: Result, row: Row, **changes: Any) -> Result:
    """A stored answer recorded for `row`: its own index, id and carried fields,
    completed now, with no latency of its own."""
    mine = dataclasses.replace(
        answer, index=row.index, id=row.id, extra=row.extra, completed_at_us=now_us()
    )
    return dataclasses.replace(mine, latency_ms=0.0, **changes)
