"""client and attempts: status and body classification, the error boundary, send()'s
retries, streams and preflight.

Every exchange goes through an `httpx.MockTransport` handed to `make_client`, so no socket
is opened; the policies zero the backoff waits, and no test sends a Retry-After it would
have to sleep through.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest

from batchrunner import attempts as attempts_module
from batchrunner import client, preflight
from batchrunner.breakers import run_failure
from batchrunner.errors import (
    PermanentError,
    RequestError,
    ResponseFormatError,
    RetryableError,
)
from batchrunner.protocols import get_protocol
from batchrunner.records import Api, Attempt, Request, Row, Sent
from batchrunner.retrying import RetryPolicy
from batchrunner.spec import RequestSpec
from batchrunner.transport import AiohttpTransport
from tests.fakeserver import FakeServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    Handler = Callable[[httpx.Request], httpx.Response]

pytestmark = pytest.mark.anyio

KEY = "sk-test-client-0123456789-SECRET"
BASE = "http://test/v1/"

MESSAGE_BODY: dict[str, Any] = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "caicaini/auto",
    "content": [{"type": "text", "text": "Hello there"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 5, "output_tokens": 2},
}
CHAT_BODY: dict[str, Any] = {
    "id": "chatcmpl-01",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "caicaini/auto",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
}
GOOD = {"messages": MESSAGE_BODY, "chat": CHAT_BODY}
HTML_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


def make_client(handler: Callable[[httpx.Request], Any]) -> client.ApiClient:
    """`client.make_client` as the runner calls it, over a MockTransport."""
    transport = httpx.MockTransport(handler)
    return client.make_client(base_url=BASE, api_key=KEY, concurrency=4, transport=transport)


def make_request(api: Api = "messages", *, stream: bool = False) -> Request:
    row = Row(index=0, id="row-0", body={"prompt": "Say hi"}, where="in.jsonl:1")
    return get_protocol(api).build_request(row, RequestSpec(), stream=stream)


def reply(
    status: int,
    body: object = None,
    *,
    headers: dict[str, str] | None = None,
    content: bytes | Callable[[], AsyncIterator[bytes]] | None = None,
) -> Callable[[], httpx.Response]:
    """A factory of fresh responses (a response and its stream can be read only once)."""

    def make() -> httpx.Response:
        if callable(content):
            return httpx.Response(status, headers=headers, content=content())
        if content is not None:
            return httpx.Response(status, headers=headers, content=content)
        if body is None:
            return httpx.Response(status, headers=headers)
        return httpx.Response(status, headers=headers, json=body)

    return make


class Server:
    """A MockTransport handler answering with `replies` in order (the last one repeats)."""

    def __init__(self, *replies: Callable[[], httpx.Response]) -> None:
        self.replies = replies
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.replies[min(len(self.requests), len(self.replies)) - 1]()


async def run_send(
    handler: Callable[[httpx.Request], Any],
    request: Request,
    *,
    policy: RetryPolicy | None = None,
    timeout_s: float = 10.0,
) -> tuple[Sent, list[Attempt]]:
    attempts: list[Attempt] = []
    async with make_client(handler) as http:
        sent = await attempts_module.send(
            http,
            request,
            protocol=get_protocol(request.api),
            policy=policy or RetryPolicy.testing(),
            timeout_s=timeout_s,
            on_attempt=attempts.append,
        )
    return sent, attempts


async def one_error(
    status: int,
    body: object = None,
    *,
    api: Api = "messages",
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
) -> RequestError:
    """The error a single attempt meets (max_attempts 1, so nothing waits)."""
    server = Server(reply(status, body, headers=headers, content=content))
    sent, _ = await run_send(server, make_request(api), policy=RetryPolicy.testing(max_attempts=1))
    assert sent.error is not None and sent.raw is None
    return sent.error


def messages_error(error_type: str, message: str = "failed", **extra: Any) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message, **extra}}


def chat_error(error_type: str, code: str | None = None, message: str = "failed") -> Any:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


# --- classification -----------------------------------------------------------------------

RETRYABLE = [408, 409, 429, 500, 502, 503, 504, 529]
STATUS_TYPES = {408: "timeout", 409: "conflict", 429: "rate_limit_error"}
STATUS_TYPES |= {500: "api_error", 502: "api_error", 503: "api_error", 504: "api_error"}
STATUS_TYPES |= {529: "overloaded_error"}


@pytest.mark.parametrize("status", RETRYABLE)
async def test_retryable_status_with_messages_body(status: int) -> None:
    """A retryable status with an Anthropic error body keeps the body's error.type."""
    err = await one_error(status, messages_error("overloaded_error", "Overloaded"))
    assert type(err) is RetryableError
    assert (err.error_type, err.message, err.http_status) == (
        "overloaded_error",
        "Overloaded",
        status,
    )


@pytest.mark.parametrize("status", RETRYABLE)
async def test_retryable_status_with_chat_body(status: int) -> None:
    """A retryable status with an OpenAI error body keeps its type, message and code."""
    body = chat_error("server_error", "server_is_overloaded", "The server is overloaded.")
    err = await one_error(status, body, api="chat")
    assert type(err) is RetryableError
    assert (err.error_type, err.code) == ("server_error", "server_is_overloaded")
    assert err.message == "The server is overloaded."


@pytest.mark.parametrize("status", RETRYABLE)
async def test_retryable_status_with_html_body(status: int) -> None:
    """A proxy's HTML page: the type comes from the status, the message is one line of it."""
    headers = {"content-type": "text/html"}
    err = await one_error(status, headers=headers, content=HTML_502.encode())
    assert type(err) is RetryableError
    assert err.error_type == STATUS_TYPES[status]
    assert err.message.startswith("<html> <head><title>502 Bad Gateway</title>")
    assert "\n" not in err.message and "\r" not in err.message
    assert err.message.endswith("</html>")


async def test_long_html_body_is_shortened() -> None:
    """A long non-JSON body is cut to a one-line snippet of about 300 characters."""
    page = "<html><body>" + "<p>upstream\nfailure</p>\n" * 200 + "</body></html>"
    err = await one_error(502, content=page.encode())
    assert err.error_type == "api_error"
    assert len(err.message) == 301 and err.message.endswith("…")
    assert "\n" not in err.message


async def test_flattened_string_error_and_empty_body() -> None:
    """A gateway's `{"error": "..."}` gives the message; an empty body gives `HTTP nnn`."""
    err = await one_error(502, {"error": "upstream connect error"})
    assert (err.error_type, err.message) == ("api_error", "upstream connect error")
    err = await one_error(503)
    assert (type(err), err.error_type, err.message) == (RetryableError, "api_error", "HTTP 503")


@pytest.mark.parametrize(
    ("status", "api", "body", "error_type"),
    [
        (400, "messages", messages_error("invalid_request_error"), "invalid_request_error"),
        (401, "messages", messages_error("authentication_error"), "authentication_error"),
        (
            401,
            "chat",
            chat_error("invalid_request_error", "invalid_api_key"),
            "invalid_request_error",
        ),
        (403, "messages", messages_error("permission_error"), "permission_error"),
        (
            404,
            "chat",
            chat_error("invalid_request_error", "model_not_found"),
            "invalid_request_error",
        ),
        (413, "messages", messages_error("request_too_large"), "request_too_large"),
        (422, "chat", None, "invalid_request_error"),
    ],
)
async def test_client_errors_are_permanent(
    status: int, api: Api, body: object, error_type: str
) -> None:
    """400, 401, 403, 404, 413 and 422 are permanent, typed from the body or the status."""
    err = await one_error(status, body, api=api)
    assert type(err) is PermanentError
    assert (err.http_status, err.error_type) == (status, error_type)


async def test_quota_429s_are_permanent() -> None:
    """An OpenAI `insufficient_quota` 429 and an Anthropic spend-limit 429 are not retried."""
    quota = chat_error("insufficient_quota", "insufficient_quota", "You exceeded your quota.")
    err = await one_error(429, quota, api="chat")
    assert (type(err), err.code) == (PermanentError, "insufficient_quota")
    spend = messages_error(
        "rate_limit_error", "spend limit", details={"error_code": "enforced_spend_limit_reached"}
    )
    err = await one_error(429, spend)
    assert (type(err), err.error_type) == (PermanentError, "rate_limit_error")
    assert err.code == "enforced_spend_limit_reached"


@pytest.mark.parametrize(
    ("body", "api"),
    [
        (chat_error("invalid_request_error", "billing_hard_limit_reached", "Billing"), "chat"),
        (messages_error("billing_error", "Your credit balance is too low"), "messages"),
    ],
)
async def test_every_quota_code_is_permanent_and_stops_the_run(body: Any, api: Api) -> None:
    """The client and the breakers read one set of quota codes (errors.QUOTA_CODES): a 429
    that carries one is not retried, and it is the run's failure, not the row's."""
    err = await one_error(429, body, api=api)
    assert type(err) is PermanentError and err.is_quota
    message = run_failure(err)
    assert message is not None and message.startswith("the account has no quota or credit")


async def test_x_should_retry_overrides_the_status() -> None:
    """`x-should-retry: false` makes a 503 permanent; `true` makes a 400 retryable."""
    err = await one_error(503, messages_error("api_error"), headers={"x-should-retry": "false"})
    assert type(err) is PermanentError
    body = messages_error("invalid_request_error")
    err = await one_error(400, body, headers={"x-should-retry": "true"})
    assert type(err) is RetryableError


def _in_30_s() -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "soon"}, None),
    ],
)
async def test_retry_after_headers(headers: dict[str, str], expected: float | None) -> None:
    """retry-after-ms first, then retry-after in seconds; junk is ignored."""
    err = await one_error(429, messages_error("rate_limit_error"), headers=headers)
    assert err.retry_after == expected


async def test_retry_after_http_date() -> None:
    """A Retry-After HTTP date becomes the seconds left until then."""
    err = await one_error(503, headers={"retry-after": _in_30_s()})
    assert err.retry_after is not None and 25.0 <= err.retry_after <= 30.0


@pytest.mark.parametrize(
    ("api", "content"),
    [
        ("messages", b'{"id": "msg_01", "content": ['),
        ("chat", b"<html>ok</html>"),
        ("messages", b"[1, 2]"),
        ("messages", json.dumps(CHAT_BODY).encode()),
        ("chat", json.dumps(MESSAGE_BODY).encode()),
        ("chat", b'{"id": "chatcmpl-01", "choices": []}'),
    ],
)
async def test_unusable_200_is_invalid_response_and_retried(api: Api, content: bytes) -> None:
    """A 200 that is not JSON, not an object or not the convention's shape is retried."""
    server = Server(
        reply(200, headers={"x-request-id": "req_bad"}, content=content), reply(200, GOOD[api])
    )
    sent, attempts = await run_send(server, make_request(api))
    assert sent.error is None and sent.completion is not None and sent.attempts == 2
    first = attempts[0]
    assert (first.error_type, first.http_status, first.request_id) == (
        "invalid_response",
        200,
        "req_bad",
    )
    server = Server(reply(200, headers={"x-request-id": "req_bad"}, content=content))
    sent, _ = await run_send(server, make_request(api), policy=RetryPolicy.testing(max_attempts=1))
    assert type(sent.error) is ResponseFormatError and sent.error.error_type == "invalid_response"
    assert isinstance(sent.error, RetryableError)
    # Made complete at the client's boundary: the status and request id, in str() too.
    assert (sent.error.http_status, sent.error.request_id) == (200, "req_bad")
    assert str(sent.error).startswith("HTTP 200 invalid_response: ")


@pytest.mark.parametrize("name", ["request-id", "x-request-id"])
async def test_request_id_from_either_header(name: str) -> None:
    """The request id comes from `request-id` or `x-request-id`, on success and on error."""
    err = await one_error(400, messages_error("invalid_request_error"), headers={name: "req_9"})
    assert err.request_id == "req_9"
    sent, attempts = await run_send(
        Server(reply(200, MESSAGE_BODY, headers={name: "req_10"})), make_request()
    )
    assert sent.raw is not None and sent.raw.request_id == "req_10"
    assert attempts[0].request_id == "req_10"


# --- send(): retries ------------------------------------------------------------------------


async def test_two_503s_then_success() -> None:
    """503, 503, 200: the row succeeds on attempt 3 and every attempt is reported."""
    overloaded = reply(503, messages_error("overloaded_error"), headers={"request-id": "req_x"})
    server = Server(overloaded, overloaded, reply(200, MESSAGE_BODY, headers={"request-id": "r3"}))
    sent, attempts = await run_send(server, make_request())
    assert sent.error is None and sent.attempts == 3 and len(server.requests) == 3
    assert sent.raw is not None and sent.raw.body == MESSAGE_BODY
    assert sent.completion == get_protocol("messages").parse_response(MESSAGE_BODY)
    assert [a.attempt for a in attempts] == [1, 2, 3]
    assert [a.http_status for a in attempts] == [503, 503, 200]
    assert [a.error_type for a in attempts] == ["overloaded_error", "overloaded_error", None]
    assert [a.response_id for a in attempts] == [None, None, "msg_01"]
    assert attempts[-1].request_id == "r3" and {a.row_id for a in attempts} == {"row-0"}


async def test_permanent_error_is_not_retried() -> None:
    """A 400 ends the row after one attempt."""
    server = Server(reply(400, messages_error("invalid_request_error", "max_tokens too big")))
    sent, attempts = await run_send(server, make_request())
    assert sent.attempts == 1 and len(server.requests) == 1 and len(attempts) == 1
    assert type(sent.error) is PermanentError and sent.error.message == "max_tokens too big"
    assert sent.raw is None and sent.completion is None


async def test_max_attempts_returns_the_last_error() -> None:
    """When every attempt fails, the row ends after max_attempts with the last error."""
    count = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal count
        count += 1
        return httpx.Response(503, json=messages_error("api_error", f"failure {count}"))

    sent, attempts = await run_send(
        handler, make_request(), policy=RetryPolicy.testing(max_attempts=4)
    )
    assert sent.attempts == 4 and count == 4 and len(attempts) == 4
    assert type(sent.error) is RetryableError and sent.error.message == "failure 4"


async def test_retry_after_is_waited_before_the_next_attempt() -> None:
    """send() waits out each Retry-After (first wait and tenacity's) before trying again."""
    hint = {"retry-after-ms": "40"}
    server = Server(
        reply(429, messages_error("rate_limit_error"), headers=hint),
        reply(529, messages_error("overloaded_error"), headers=hint),
        reply(200, MESSAGE_BODY),
    )
    sent, attempts = await run_send(server, make_request())
    assert sent.error is None and sent.attempts == 3
    assert [a.retry_after for a in attempts] == [0.04, 0.04, None]
    # A lower bound only: a sleep never ends early, however loaded the machine.
    assert sent.latency_ms >= 80.0


async def test_retry_after_above_the_cap_stops_at_once() -> None:
    """A Retry-After over retry_after_max ends the row, first attempt or later."""
    far = reply(429, messages_error("rate_limit_error"), headers={"retry-after": "600"})
    policy = RetryPolicy.testing(retry_after_max=300.0)
    server = Server(far)
    sent, _ = await run_send(server, make_request(), policy=policy)
    assert sent.attempts == 1 and len(server.requests) == 1
    assert sent.error is not None and sent.error.retry_after == 600.0
    server = Server(reply(503, messages_error("api_error")), far, reply(200, MESSAGE_BODY))
    sent, _ = await run_send(server, make_request(), policy=policy)
    assert sent.attempts == 2 and len(server.requests) == 2
    assert sent.error is not None and sent.error.http_status == 429


async def test_transport_error_is_retried() -> None:
    """A connection error is a retryable `connection_error`, and the next attempt may succeed."""
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json=CHAT_BODY)

    sent, attempts = await run_send(handler, make_request("chat"))
    assert sent.error is None and sent.attempts == 2
    assert (attempts[0].error_type, attempts[0].http_status) == ("connection_error", None)


async def test_attempt_timeout() -> None:
    """An answer slower than timeout_s is a retryable `timeout`."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(30)
        return httpx.Response(200, json=MESSAGE_BODY)

    policy = RetryPolicy.testing(max_attempts=1)
    sent, attempts = await run_send(handler, make_request(), policy=policy, timeout_s=0.2)
    assert type(sent.error) is RetryableError and sent.error.error_type == "timeout"
    assert attempts[0].error_type == "timeout"


# --- send(): the request on the wire ---------------------------------------------------------


async def _send_via(http: client.ApiClient, request: Request, **kw: Any) -> Sent:
    return await attempts_module.send(
        http, request, protocol=get_protocol(request.api), timeout_s=10.0, **kw
    )


@pytest.mark.parametrize("api", ["messages", "chat"])
async def test_request_headers_url_and_body(api: Api) -> None:
    """Bearer key, User-Agent, anthropic-version for messages only; {base}/<path>; the body."""
    server = Server(reply(200, GOOD[api]))
    request = make_request(api)
    async with make_client(server) as http:
        sent = await _send_via(http, request, policy=RetryPolicy.testing())
    assert sent.error is None
    (wire,) = server.requests
    expected_path = {"messages": "/v1/messages", "chat": "/v1/chat/completions"}[api]
    assert wire.method == "POST" and str(wire.url) == f"http://test{expected_path}"
    assert wire.headers["authorization"] == f"Bearer {KEY}"
    assert wire.headers["user-agent"].startswith("batchrunner/")
    assert wire.headers["content-type"] == "application/json"
    # Only what bodies.BodyDecoder can decode within the size cap.
    assert wire.headers["accept-encoding"] == "gzip, deflate"
    assert wire.headers.get("anthropic-version") == (
        client.ANTHROPIC_VERSION if api == "messages" else None
    )
    assert json.loads(wire.content) == request.body
    assert request.body["model"] == "caicaini/auto" and request.body["max_tokens"] == 1024


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_only_a_stream_has_a_read_timeout(stream: bool) -> None:
    """A plain answer is bounded by the attempt's deadline alone (`exchange`): a read
    timeout as long could never fire first. A stream's chunks have the idle timeout."""
    http = make_client(Server(reply(200, GOOD["chat"])))
    out = client.post(http, make_request("chat", stream=stream), timeout_s=30, idle_timeout_s=5)
    assert (out.timeout_s, out.read_timeout_s) == (30, 5 if stream else None)
    assert client.get(http, "models", timeout_s=30).read_timeout_s is None


async def test_a_plain_body_that_stalls_halfway_ends_at_the_deadline() -> None:
    """A plain answer has no read timeout of its own: a body that stops after its first
    bytes is ended by the attempt's deadline, as a retryable timeout that keeps the status."""
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 99\r\n\r\n"
        writer.write(head + b'{"id":')
        await writer.drain()
        await done.wait()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    async with server, client.make_client(base_url=base, api_key=KEY, concurrency=2) as http:
        out = client.post(http, make_request("chat"), timeout_s=0.3, idle_timeout_s=None)
        with pytest.raises(RetryableError) as caught:
            await client.exchange(http, out, dict, timeout_s=0.3)
        done.set()
    assert (caught.value.error_type, caught.value.http_status) == ("timeout", 200)


async def test_the_aiohttp_transport_serves_an_httpx_client_too() -> None:
    """The transport keeps httpx's transport API (the client itself sends `Outgoing`s): a
    plain httpx client over it, against the fake API, gets its status, headers and body."""
    with FakeServer(api_key=KEY) as server:
        transport = AiohttpTransport(limit=2, keepalive_s=5, ssl_context=None)
        async with httpx.AsyncClient(transport=transport, base_url=server.base_url + "/") as http:
            answer = await http.get("models", headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["data"]


def _failures() -> Iterator[Handler]:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    yield refuse
    yield Server(reply(401, messages_error("authentication_error", "invalid x-api-key")))
    yield Server(reply(502, content=HTML_502.encode()))
    yield Server(reply(200, content=b"{truncated"))
    yield Server(reply(429, chat_error("insufficient_quota", "insufficient_quota")))


async def test_key_never_in_errors_or_attempts() -> None:
    """No error message and no Attempt carries the API key."""
    for handler in _failures():
        attempts: list[Attempt] = []
        async with make_client(handler) as http:
            sent = await _send_via(
                http,
                make_request(),
                policy=RetryPolicy.testing(max_attempts=2),
                on_attempt=attempts.append,
            )
        assert sent.error is not None and attempts
        assert KEY not in str(sent.error) and KEY not in repr(sent.error)
        assert KEY not in sent.error.message and KEY not in str(dict(sent.error.headers))
        assert all(KEY not in repr(a) for a in attempts)


async def test_key_echoed_by_the_server_is_not_kept() -> None:
    """A server that echoes the key in a 400's message does not get it into the error."""
    echo = messages_error("invalid_request_error", f"bad header: Authorization: Bearer {KEY}")
    async with make_client(Server(reply(400, echo))) as http:
        sent = await _send_via(http, make_request(), policy=RetryPolicy.testing())
    assert sent.error is not None
    assert KEY not in sent.error.message


# --- streams ----------------------------------------------------------------------------------


def sse(*events: object) -> bytes:
    """Data-only SSE (the chat convention): one `data:` line per event."""
    lines = (e if isinstance(e, str) else json.dumps(e) for e in events)
    return "".join(f"data: {line}\n\n" for line in lines).encode()


_MESSAGE_START = {**MESSAGE_BODY, "content": [], "stop_reason": None}
# As the wire carries it, ping and all; every event sits on its own line pair.
MESSAGES_SSE = f"""event: message_start
data: {json.dumps({"type": "message_start", "message": _MESSAGE_START})}

event: content_block_start
data: {{"type":"content_block_start","index":0,"content_block":{{"type":"text","text":""}}}}

event: ping
data: {{"type": "ping"}}

event: content_block_delta
data: {{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"Hello"}}}}

event: content_block_delta
data: {{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":" there"}}}}

event: content_block_stop
data: {{"type":"content_block_stop","index":0}}

event: message_delta
data: {{"type":"message_delta","delta":{{"stop_reason":"end_turn"}},"usage":{{"output_tokens":2}}}}

event: message_stop
data: {{"type":"message_stop"}}

""".encode()


def _chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {
        "id": "chatcmpl-01",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "caicaini/auto",
        "choices": [choice],
        **extra,
    }


CHAT_EVENTS: list[object] = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "Hello"}),
    _chunk({"content": " there"}),
    _chunk({}, "stop"),
    {**_chunk({}), "choices": [], "usage": CHAT_BODY["usage"]},
]
# api -> (the whole stream, the same stream cut just before its terminal event)
STREAMS = {
    "messages": (MESSAGES_SSE, MESSAGES_SSE.split(b"event: message_stop")[0]),
    "chat": (sse(*CHAT_EVENTS, "[DONE]"), sse(*CHAT_EVENTS)),
}
SSE_HEADERS = {"content-type": "text/event-stream", "request-id": "req_s"}


def pieces(data: bytes, size: int = 7) -> Callable[[], AsyncIterator[bytes]]:
    """The body in small chunks, cut across lines and events as a network would."""

    async def gen() -> AsyncIterator[bytes]:
        for i in range(0, len(data), size):
            yield data[i : i + size]

    return gen


@pytest.mark.parametrize("api", ["messages", "chat"])
async def test_stream_assembles_like_the_plain_body(api: Api) -> None:
    """An SSE answer gives the same Completion as the non-streamed body."""
    server = Server(reply(200, headers=SSE_HEADERS, content=pieces(STREAMS[api][0])))
    request = make_request(api, stream=True)
    assert request.body["stream"] is True
    sent, _ = await run_send(server, request)
    assert sent.error is None and sent.attempts == 1 and sent.raw is not None
    assert sent.completion == get_protocol(api).parse_response(GOOD[api])
    assert sent.raw.request_id == "req_s" and sent.raw.body_text is not None
    assert json.loads(sent.raw.body_text) == sent.raw.body


@pytest.mark.parametrize("api", ["messages", "chat"])
async def test_truncated_stream_is_retried(api: Api) -> None:
    """A stream that ends before its terminal event is retried; a whole one then succeeds."""
    whole_sse, short_sse = STREAMS[api]
    short = reply(200, headers=SSE_HEADERS, content=pieces(short_sse))
    whole = reply(200, headers=SSE_HEADERS, content=pieces(whole_sse))
    server = Server(short, whole)
    sent, attempts = await run_send(server, make_request(api, stream=True))
    assert sent.error is None and sent.attempts == 2
    assert sent.completion == get_protocol(api).parse_response(GOOD[api])
    assert (attempts[0].error_type, attempts[0].http_status) == ("invalid_response", 200)
    assert attempts[0].request_id == "req_s"


async def test_stream_cut_by_the_network_is_retried() -> None:
    """A read error after the 200 is a `connection_error` with status 200, and retried."""
    data = MESSAGES_SSE

    async def cut() -> AsyncIterator[bytes]:
        yield data[:60]
        raise httpx.ReadError("peer closed connection")

    whole = reply(200, headers=SSE_HEADERS, content=pieces(data))
    server = Server(reply(200, headers=SSE_HEADERS, content=cut), whole)
    sent, attempts = await run_send(server, make_request(stream=True))
    assert sent.error is None and sent.attempts == 2
    assert (attempts[0].error_type, attempts[0].http_status) == ("connection_error", 200)


async def test_stream_request_error_status_is_classified() -> None:
    """A non-2xx answer to a stream request is classified like a plain one."""
    server = Server(reply(529, messages_error("overloaded_error", "Overloaded")))
    policy = RetryPolicy.testing(max_attempts=1)
    sent, _ = await run_send(server, make_request(stream=True), policy=policy)
    assert type(sent.error) is RetryableError
    assert (sent.error.error_type, sent.error.http_status) == ("overloaded_error", 529)


# --- preflight -------------------------------------------------------------------------------


async def _preflight(handler: Handler) -> Any:
    async with make_client(handler) as http:
        check = await preflight.preflight(http, timeout_s=5.0)
    return check.error, check.headers


async def test_preflight_ok_returns_headers() -> None:
    """A 200 from GET {base}/models returns no error and the lower-cased headers."""
    headers = {"Anthropic-RateLimit-Requests-Limit": "50", "request-id": "req_p"}
    server = Server(reply(200, {"data": [{"id": "caicaini/auto"}]}, headers=headers))
    error, got = await _preflight(server)
    assert error is None and got["anthropic-ratelimit-requests-limit"] == "50"
    (wire,) = server.requests
    assert wire.method == "GET" and str(wire.url) == "http://test/v1/models"


async def test_preflight_401_is_permanent() -> None:
    """A refused key is a PermanentError with status 401, alongside the headers."""
    body = messages_error("authentication_error", "invalid x-api-key")
    server = Server(reply(401, body, headers={"request-id": "req_401"}))
    error, headers = await _preflight(server)
    assert type(error) is PermanentError
    assert (error.http_status, error.error_type, error.request_id) == (
        401,
        "authentication_error",
        "req_401",
    )
    assert headers["request-id"] == "req_401"


async def test_a_body_cut_after_the_status_carries_it() -> None:
    """The boundary gives a transport error the status and request id of the answer it
    cut (a plain body here; a stream above), made once: str() says the status too."""

    async def cut() -> AsyncIterator[bytes]:
        yield b'{"id": "msg_01", '
        raise httpx.ReadError("peer closed connection")

    server = Server(reply(200, headers={"request-id": "req_cut"}, content=cut))
    sent, attempts = await run_send(
        server, make_request(), policy=RetryPolicy.testing(max_attempts=1)
    )
    assert type(sent.error) is RetryableError
    err = sent.error
    assert err.error_type == "connection_error"
    assert (err.http_status, err.request_id) == (200, "req_cut")
    assert str(err).startswith("HTTP 200 connection_error: ")
    assert (attempts[0].http_status, attempts[0].request_id) == (200, "req_cut")


async def test_an_error_event_in_a_stream_gets_the_answers_status() -> None:
    """An error event after the 200 (raised by the protocol without a status) leaves the
    client as an error with the stream's status and request id."""
    start = {"type": "message_start", "message": _MESSAGE_START}
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    data = f"event: message_start\ndata: {json.dumps(start)}\n\n"
    data += f"event: error\ndata: {json.dumps(overloaded)}\n\n"
    server = Server(reply(200, headers=SSE_HEADERS, content=pieces(data.encode())))
    policy = RetryPolicy.testing(max_attempts=1)
    sent, _ = await run_send(server, make_request(stream=True), policy=policy)
    assert type(sent.error) is RetryableError
    err = sent.error
    assert (err.error_type, err.message) == (
        "overloaded_error",
        "busy",
    )
    assert (err.http_status, err.request_id) == (200, "req_s")


def _facts(facts: list[preflight.Fact]) -> list[tuple[str, bool | None]]:
    return [(fact.name, fact.ok) for fact in facts]


async def test_check_tells_three_facts_through_a_given_transport() -> None:
    """`check` (check_api) goes through make_client's transport and says, each apart: the
    URL answers, the key is accepted, the model is listed; a refused key leaves the model
    unasked, and the key's refusal quotes nothing the server said."""
    ok = httpx.MockTransport(Server(reply(200, {"data": [{"id": "m1"}, {"id": "m2"}]})))
    facts = await preflight.check_api(base_url=BASE, api_key=KEY, model="m2", transport=ok)
    assert _facts(facts) == [("base URL", True), ("key", True), ("model", True)]
    facts = await preflight.check_api(base_url=BASE, api_key=KEY, model="m9", transport=ok)
    assert _facts(facts)[2] == ("model", False) and "m1, m2" in facts[2].detail
    refused = Server(reply(401, messages_error("authentication_error", "bad key sk-abc")))
    facts = await preflight.check_api(
        base_url=BASE, api_key=KEY, model="m1", transport=httpx.MockTransport(refused)
    )
    assert _facts(facts) == [("base URL", True), ("key", False), ("model", None)]
    assert "sk-abc" not in facts[1].detail and "HTTP 401" in facts[1].detail


async def test_check_asks_for_the_model_itself_when_the_list_has_more_pages() -> None:
    """A first page without the model but with `has_more`: GET /models/{id} decides."""
    page = reply(200, {"data": [{"id": "m1"}], "has_more": True})
    server = Server(page, reply(200, {"id": "vendor/m7", "type": "model"}))
    facts = await preflight.check_api(
        base_url=BASE, api_key=KEY, model="vendor/m7", transport=httpx.MockTransport(server)
    )
    assert _facts(facts)[2] == ("model", True)
    assert server.requests[1].url.path.endswith("/models/vendor/m7")
    missing = Server(page, reply(404, messages_error("not_found_error", "model: vendor/m8")))
    facts = await preflight.check_api(
        base_url=BASE, api_key=KEY, model="vendor/m8", transport=httpx.MockTransport(missing)
    )
    assert _facts(facts)[2] == ("model", False)


async def test_preflight_transport_error_is_silent() -> None:
    """An unreachable server gives (None, {}): the run's own retries will meet it."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    assert await _preflight(handler) == (None, {})


# --- the size cap -------------------------------------------------------------------------------


async def test_a_content_length_over_the_cap_is_refused_unread() -> None:
    """A 2xx announcing more bytes than the cap: response_too_large, not one byte read,
    one attempt only (the same request would bring the same answer)."""
    read: list[bytes] = []

    async def body() -> AsyncIterator[bytes]:
        read.append(b"x")
        yield b"{}"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-length": "5000001"}, content=body())

    async with make_client(handler) as http:
        sent = await attempts_module.send(
            http,
            make_request(),
            protocol=get_protocol("messages"),
            policy=RetryPolicy.testing(),
            timeout_s=10.0,
            max_response_bytes=5_000_000,
        )
    assert type(sent.error) is PermanentError and sent.attempts == 1
    assert (sent.error.error_type, sent.error.http_status) == ("response_too_large", 200)
    assert read == []
