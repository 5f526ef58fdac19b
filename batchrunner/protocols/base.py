"""What a convention provides (`Protocol`, `StreamAssembler`) and the helpers both share.

Pure: rows and JSON in, requests and JSON out. No IO, no HTTP stack, no pyarrow: the
client sends, these only shape and read the JSON.
"""

from __future__ import annotations

import json
import typing

from batchrunner.errors import ResponseFormatError, RetryableError, SourceError
from batchrunner.protocols.images import with_images
from batchrunner.protocols.jsonsafe import check_json
from batchrunner.protocols.shapes import check_messages
from batchrunner.records import json_kind

if typing.TYPE_CHECKING:
    from batchrunner.records import Api, Completion, JSONObject, Request, Row, Shape
    from batchrunner.spec import RequestSpec
    from batchrunner.sse import SSEEvent


# Field names in messages: a batch line's request fields sit inside `body` / `params`.
_PREFIXES: dict[str, str] = {"simple": "", "openai_batch": "body.", "anthropic_batch": "params."}
# json.dumps(x, ensure_ascii=False) builds a new encoder per call; these are reused.
_TEXT = json.JSONEncoder(ensure_ascii=False)
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class StreamAssembler(typing.Protocol):
    """Folds one response's SSE events into the body a non-streamed call would return."""

    @property
    def done(self) -> bool:
        """True once the stream's terminal event (`message_stop` / `[DONE]`) arrived."""
        ...

    def feed(self, event: SSEEvent) -> None:
        """Take one event; raises RetryableError on an error event, ResponseFormatError
        on malformed data."""
        ...

    def finish(self) -> JSONObject:
        """The assembled body; raises ResponseFormatError if the stream ended early."""
        ...


class ResponseReader(typing.Protocol):
    """What sending needs of an endpoint (`attempts.send`): how to read its answer."""

    def parse_response(self, body: JSONObject) -> Completion:
        """The fields the caller keeps; raises ResponseFormatError for a body that does not
        fit."""
        ...

    def new_assembler(self) -> StreamAssembler:
        """A fresh assembler for one streamed response."""
        ...


class Protocol(typing.Protocol):
    """One API convention: how a row becomes a request and a response becomes a Completion."""

    @property
    def name(self) -> Api: ...

    @property
    def path(self) -> str:
        """The endpoint below the base URL, e.g. "/messages"."""
        ...

    def build_body(
        self,
        source: object,
        defaults: RequestSpec,
        *,
        shape: Shape = "simple",
        api: Api | None = None,
        where: str = "",
    ) -> tuple[JSONObject, int]:
        """The body (without stream flags) and max_tokens for a row's `body`, `shape`, `api`.

        Every check of `build_request` happens here, so the validation pass calls this
        alone, without a Row or a Request (it runs once per input row, before any run).
        Raises SourceError when the row cannot become a request.
        """
        ...

    def build_request(self, row: Row, defaults: RequestSpec, *, stream: bool) -> Request:
        """The request for `row`, with job defaults where the row lacks them.

        `build_body`, then the stream flags and the token estimate, neither of which can
        fail. Raises SourceError when the row cannot become a request.
        """
        ...

    def parse_response(self, body: JSONObject) -> Completion:
        """The fields the results keep; raises ResponseFormatError for a body that does not
        fit."""
        ...

    def new_assembler(self) -> StreamAssembler:
        """A fresh assembler for one streamed response."""
        ...


def parse_error_body(body: object) -> tuple[str | None, str | None, str | None]:
    """(error_type, message, code) from either convention's error body; Nones otherwise.

    Messages: `{"type":"error","error":{"type","message","details":{"error_code"}}}`.
    Chat: `{"error":{"message","type","code"}}`. Proxies send anything, so nothing is assumed.
    """
    if not isinstance(body, dict):
        return None, None, None
    error = body.get("error")
    if isinstance(error, str):  # some gateways flatten the error to a string
        return None, error, None
    if not isinstance(error, dict):
        return None, None, None
    error_type = error.get("type")
    message = error.get("message")
    code = _code(error.get("code"))
    details = error.get("details")
    if isinstance(details, dict):
        code = _code(details.get("error_code")) or code
    return (
        error_type if isinstance(error_type, str) else None,
        message if isinstance(message, str) else None,
        code,
    )


def _code(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # a numeric code from a proxy is still a code
    return None


def start_body(
    source: object,
    api: Api,
    *,
    shape: Shape,
    row_api: Api | None,
    where: str,
) -> JSONObject:
    """A new top-level body dict for a row's body, with a new, validated `messages` list.

    Only the top-level dict and the messages list are new; the protocols change nothing
    below them, so the row's own objects are never mutated. In a simple row a null field
    means "not set" (a Parquet column gives every row every field). Every value is checked
    to be strict JSON (`check_json`): the client could not send it otherwise; the messages
    follow the one message-shape rulebook (`shapes.check_messages`).
    """
    if row_api is not None and row_api != api:
        raise SourceError(where, f"the row is a {row_api} request but the job uses --api {api}")
    if type(source) is not dict:
        raise SourceError(where, f"the request body must be an object, got {json_kind(source)}")
    body: JSONObject = {}
    simple = shape == "simple"
    for key, value in source.items():
        if value is None and simple:
            continue
        if type(value) is not str or not value.isascii():  # ASCII text needs no call
            check_json(value, key if simple else _PREFIXES[shape] + key, where)
        body[key] = value
    # A simple row's images (read by inputs.images): blocks in its last user message.
    images = body.pop("images", None) if simple else None
    label = _PREFIXES[shape] + "messages"
    if not simple:
        if "messages" not in body:
            raise SourceError(where, f"{label} is missing")
    elif "prompt" in body:
        prompt = body.pop("prompt")
        if "messages" in body:
            raise SourceError(where, "the row has both messages and prompt: give one")
        if type(prompt) is not str:
            raise SourceError(where, f"prompt must be a string, got {json_kind(prompt)}")
        if not prompt:
            raise SourceError(where, "prompt is empty")
        # Built here from a checked string: nothing in it for check_messages to find.
        body["messages"] = [{"role": "user", "content": prompt}]
        return body if images is None else with_images(body, images, api, where)
    elif "messages" not in body:
        raise SourceError(where, "the row has neither prompt nor messages")
    messages = body["messages"]
    check_messages(messages, where, api=api, label=label)
    body["messages"] = list(messages)
    return body if images is None else with_images(body, images, api, where)


def set_default(body: JSONObject, key: str, value: object) -> None:
    """Apply a job default where the body lacks the field (absent or null)."""
    if value is not None and body.get(key) is None:
        body[key] = value


def require_tokens(body: JSONObject, key: str, where: str) -> int:
    """The token limit at `key`: an integer >= 1 (the APIs refuse less), or SourceError."""
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise SourceError(where, f"{key} must be an integer, got {json_kind(value)}")
    if value < 1:
        raise SourceError(where, f"{key} must be at least 1, got {value}")
    return value


def require_str(body: JSONObject, key: str, where: str) -> None:
    """Reject a non-string value at `key` (model names, mostly)."""
    value = body.get(key)
    if type(value) is not str or not value:
        shown = "an empty string" if value == "" else json_kind(value)
        raise SourceError(where, f"{key} must be a non-empty string, got {shown}")


def set_stream(body: JSONObject, stream: bool, *, include_usage: bool) -> None:
    """Ask for SSE (and for chat, the final usage chunk), or strip a row's stream flags."""
    if stream:
        body["stream"] = True
        if include_usage:
            options = body.get("stream_options")
            kept = options if isinstance(options, dict) else {}
            body["stream_options"] = {**kept, "include_usage": True}
    else:
        body.pop("stream", None)
        body.pop("stream_options", None)


def estimate_tokens(*parts: object) -> int:
    """About four characters per token over the JSON of the parts: cheap, not exact."""
    chars = 0
    for part in parts:
        if part is None:
            continue
        chars += len(part) if isinstance(part, str) else len(_TEXT.encode(part))
    return (chars + 3) // 4


def invalid_response(reason: str) -> ResponseFormatError:
    """The error for a 2xx whose body or stream does not fit: transient, so retried. The
    client's error boundary makes it anew with the answer's status and request id."""
    return ResponseFormatError(reason)


def load_event(data: str) -> JSONObject:
    """The JSON object of one SSE data field."""
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise invalid_response(f"malformed JSON in stream event: {exc}") from exc
    if not isinstance(value, dict):
        raise invalid_response(f"stream event is not a JSON object: {data[:80]!r}")
    return value


def stream_error(payload: object, fallback_type: str) -> RetryableError:
    """The error for an error event that arrived after the 200."""
    error_type, message, code = parse_error_body(payload)
    return RetryableError(
        error_type or fallback_type, message or "error event in stream", code=code
    )


def json_text(value: object) -> str:
    """Compact JSON text of a value decoded from JSON (a tool input, a parsed answer)."""
    return _COMPACT.encode(value)


def text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def usage_int(usage: object, key: str) -> int | None:
    """An integer usage count, or None when the server left it out."""
    if not isinstance(usage, dict):
        return None
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None
