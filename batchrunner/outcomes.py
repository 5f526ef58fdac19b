"""Turn what a worker got (a Sent, or a reason) into the Result row that gets recorded.

Pure: no IO. Error rows keep the server's status, type, message and request id.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from batchrunner.records import Result

if TYPE_CHECKING:
    from batchrunner.records import Row, Sent


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
