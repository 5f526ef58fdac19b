"""A complete HTTP answer (status, headers, body bytes) -> RawResponse or its RequestError.

Pure: the client reads the bytes and hands them here; this decides what they mean (which
statuses are worth another attempt, which 429s are quota refusals, what a body over the
cap is). It never sees a socket. What it receives is already redacted; what it quotes
from a decoded body goes through the redactor again (a `\\u`-escaped key), so the errors
made here are complete as they are and leave the client's boundary unchanged.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from batchrunner import jsoncodec
from batchrunner.errors import (
    PermanentError,
    RequestError,
    ResponseFormatError,
    RetryableError,
    quota_refusal,
)
from batchrunner.protocols import parse_error_body
from batchrunner.ratelimits import parse_retry_after
from batchrunner.records import RawResponse

if TYPE_CHECKING:
    from collections.abc import Mapping

    from batchrunner.redaction import Redactor

# The SDKs retry these; 409 is a lock conflict, 408 a server-side timeout.
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
_STATUS_TYPES = {
    408: "timeout",
    409: "conflict",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def classify(
    status: int, headers: dict[str, str], data: bytes | None, redactor: Redactor, cap: int
) -> RawResponse:
    """The RawResponse of a 2xx, or raise the RequestError the answer stands for.

    `data` is None when the body was over the cap: a 2xx is then `response_too_large`; an
    error status keeps its own meaning (a 503 is still worth another attempt).
    """
    rid = request_id(headers)
    if data is None and 200 <= status < 300:
        raise too_large(status, headers, cap)
    body = _json_or_none(data)
    if 200 <= status < 300:
        assert data is not None
        if not isinstance(body, dict):
            raise ResponseFormatError(
                f"the {status} response body is not a JSON object",
                http_status=status,
                request_id=rid,
                headers=headers,
            )
        body, text = redactor.stored(body, data.decode("utf-8", errors="replace"))
        return RawResponse(
            status=status, headers=headers, body=body, request_id=rid, body_text=text
        )
    error_type, message, code = parse_error_body(body)
    error_type = (
        error_type
        or _STATUS_TYPES.get(status)
        or ("api_error" if status >= 500 else "invalid_request_error")
    )
    if data is None:
        message = f"HTTP {status} with an error body over {cap:,} bytes (not read)"
    else:
        message = message or snippet(data.decode("utf-8", errors="replace")) or f"HTTP {status}"
    cls = _error_class(status, headers, code, error_type)
    raise cls(
        redactor.text(error_type),
        redactor.prose(message),
        http_status=status,
        request_id=rid,
        retry_after=parse_retry_after(headers, now=time.time()),
        code=redactor.optional(code),
        headers=headers,
    )


def too_large(status: int | None, headers: dict[str, str], cap: int) -> PermanentError:
    """A 2xx body (or stream) over the cap.

    Permanent: the same request would bring the same answer, so another attempt would
    only pay for it again (and hold as much memory again).
    """
    return PermanentError(
        "response_too_large",
        f"the response body is larger than {cap:,} bytes (--max-response-bytes)",
        http_status=status,
        request_id=request_id(headers),
        headers=headers,
    )


def _error_class(
    status: int, headers: Mapping[str, str], code: str | None, error_type: str
) -> type[RequestError]:
    override = headers.get("x-should-retry", "").strip().lower()
    if override in ("true", "false"):
        return RetryableError if override == "true" else PermanentError
    if quota_refusal(status, code, error_type):  # 429s no wait will cure
        return PermanentError
    if status in RETRYABLE_STATUSES or status >= 500:
        return RetryableError
    return PermanentError


def request_id(headers: Mapping[str, str]) -> str | None:
    """`request-id` (Anthropic style) or `x-request-id` (OpenAI style); lower-case names."""
    return headers.get("request-id") or headers.get("x-request-id")


def snippet(text: str, limit: int = 300) -> str:
    """Non-JSON error bodies (a proxy's HTML page) shortened to one line."""
    flat = " ".join(text.split())
    return flat[:limit] + ("…" if len(flat) > limit else "")


def _json_or_none(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return jsoncodec.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
