"""Frozen values passed between the stages of a run (source -> workers -> writer).

Nothing here does IO. Every arrow of the pipeline carries one of these; stages never call
back upstream. `json_kind` names a JSON value's kind for every message that quotes one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from batchrunner.errors import RequestError

JSONObject = dict[str, Any]
# One tool call of an answer, as the `tool_calls` column holds it: {"id", "name",
# "arguments"}, arguments as JSON text (both conventions; None where the server sent none).
ToolCall = dict[str, str | None]
Api = Literal["messages", "chat"]
Shape = Literal["simple", "openai_batch", "anthropic_batch"]
Status = Literal["succeeded", "errored"]
# Checked in this order: a bool is an int to Python, but not a number to JSON.
_KINDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "boolean"),
    ((int, float), "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
)


def json_kind(value: object) -> str:
    """The JSON name of a value's kind with its article, for messages: "got a number"
    ("null" takes none; a value JSON cannot hold gives its Python type)."""
    if value is None:
        return "null"
    for types, name in _KINDS:
        if isinstance(value, types):
            return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
    return type(value).__name__


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One input row, ready to become a request.

    `index` is the 0-based position in the input (the done-set key); `id` is the user's id
    (`id`, `custom_id`, or the position as a string). `body` holds the request fields the
    row carries (for simple rows: `prompt` or `messages` plus any request field; for batch
    lines: the `body`/`params` object as is). `extra` holds the carried-through fields.
    `api` is set when the row itself names its convention (an OpenAI batch line's `url`).
    """

    index: int
    id: str
    shape: Shape = "simple"
    body: JSONObject
    extra: JSONObject = field(default_factory=dict)
    api: Api | None = None
    where: str = ""  # "file:line" or "file:row N", for messages


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One HTTP request to send: convention, path below the base URL and JSON body."""

    row_index: int
    row_id: str
    api: Api
    path: str
    body: JSONObject
    stream: bool = False
    est_input_tokens: int = 0  # a cheap estimate (chars / 4) for token budgets
    max_tokens: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class RawResponse:
    """A complete 2xx response (streams already assembled into the final JSON)."""

    status: int
    headers: dict[str, str]
    body: JSONObject
    request_id: str | None
    body_text: str | None = None  # the body as received, or the assembled stream's JSON


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    """The fields of a successful response that the results table keeps."""

    response_id: str | None
    model: str | None
    text: str
    stop_reason: str | None
    input_tokens: int | None
    output_tokens: int | None
    tool_calls: tuple[ToolCall, ...] = ()
    parsed: str | None = None  # with --json-schema: the validated answer, JSON text


@dataclass(frozen=True, slots=True, kw_only=True)
class Sent:
    """What became of one row's request after all its attempts (the client's answer).

    `raw` is None on error, except for `invalid_output`: then it is the last answer.
    """

    raw: RawResponse | None
    completion: Completion | None
    error: RequestError | None
    attempts: int
    latency_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One HTTP attempt, as calls.log records it."""

    row_id: str
    attempt: int
    http_status: int | None
    request_id: str | None
    response_id: str | None
    latency_ms: float
    error_type: str | None
    retry_after: float | None
    error_message: str | None = None  # the server's message or the client's reason, shortened
    slowed: str | None = None  # why the run slowed down after this answer, if it did


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """The final outcome of one row: one line of the journal, one row of results.parquet."""

    index: int
    id: str
    status: Status
    response_id: str | None = None
    request_id: str | None = None
    model: str | None = None
    text: str | None = None
    stop_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    attempts: int = 0
    latency_ms: float = 0.0
    http_status: int | None = None
    error_type: str | None = None
    error_message: str | None = None
    response: str | None = None  # the complete response body as JSON text
    completed_at_us: int = 0  # microseconds since the epoch, UTC
    extra: JSONObject = field(default_factory=dict)
    tool_calls: tuple[ToolCall, ...] | None = None  # None on error
    parsed: str | None = None  # with --json-schema: the validated answer, JSON text


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStats:
    """The run's final counts over all rows (this invocation and earlier ones), and the
    warnings of this invocation (each was also given to `warn` as it arose)."""

    total: int
    succeeded: int
    errored: int
    pending: int
    sent_rows: int
    results: str | None
    warnings: tuple[str, ...] = ()
