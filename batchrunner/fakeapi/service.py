"""FakeApi: what every /v1 route shares, and the small routes (models, count_tokens, /_fake).

Auth, body reading, error rendering, the request-id and rate-limit headers, counting. The
generation routes build on it from generation.py; app.py wires both into the application.
Imports neither of them, so the wing's imports run one way.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from batchrunner.fakeapi import keys
from batchrunner.fakeapi.answers import prompt_text
from batchrunner.fakeapi.faults import FaultPlanner
from batchrunner.fakeapi.ids import anthropic_request_id, openai_request_id
from batchrunner.fakeapi.images import image_entries
from batchrunner.fakeapi.limits import RateLimits
from batchrunner.fakeapi.messages_validation import parse_count_tokens
from batchrunner.fakeapi.shapes import (
    ApiError,
    Convention,
    anthropic_model,
    anthropic_model_page,
    dumps,
    error_body,
    openai_model,
)

if TYPE_CHECKING:
    from batchrunner.fakeapi.options import FakeOptions
    from batchrunner.fakeapi.state import FakeState

_UNPARSABLE = object()
_JSON = "application/json"


class FakeApi:
    """Shared request handling for every /v1 route, plus the small routes themselves."""

    def __init__(self, options: FakeOptions, state: FakeState) -> None:
        self.options = options
        self.state = state
        self.limits = RateLimits(options)
        self.planner = FaultPlanner(options, state)
        self._key = options.api_key.encode() if options.api_key is not None else None

    def begin(self, request: web.Request, conv: Convention) -> str:
        """Count the request and give it a request id in its convention's format."""
        self.state.requests_total += 1
        request_id = anthropic_request_id() if conv == "anthropic" else openai_request_id()
        request[keys.CONV] = conv
        request[keys.REQUEST_ID] = request_id
        return request_id

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """Add request-id and rate-limit headers to every /v1 response, and count it."""
        conv = request.get(keys.CONV)
        if conv is None or request.get(keys.DROPPED):
            return
        self.state.status_counts[response.status] += 1
        response.headers["request-id" if conv == "anthropic" else "x-request-id"] = request[
            keys.REQUEST_ID
        ]
        response.headers.update(self.limits.headers(refused=response.status == 429))

    def error(self, request: web.Request, error: ApiError) -> web.Response:
        """The error response in the request's convention, with the error's headers."""
        body = error_body(request[keys.CONV], error, request[keys.REQUEST_ID])
        response = web.Response(status=error.status, body=body, content_type=_JSON)
        response.headers.update(error.headers)
        return response

    async def send(self, request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        """Write the whole response now, so in-flight accounting ends when it is sent. A
        logged request's answer time is stamped first: a client may read the log as soon
        as it has the answer."""
        entry = request.get(keys.LOG_ENTRY)
        if entry is not None:
            entry.setdefault("done", time.time())
        await response.prepare(request)
        await response.write_eof()
        return response

    def _authorize(self, request: web.Request, conv: Convention) -> None:
        keys = [request.headers.get("x-api-key", "").strip()]
        authorization = request.headers.get("Authorization", "")
        if authorization[:7].lower() == "bearer ":
            keys.append(authorization[7:].strip())
        keys = [key for key in keys if key]
        expected = self._key
        if keys and (
            expected is None or any(hmac.compare_digest(key.encode(), expected) for key in keys)
        ):
            return
        if conv == "anthropic":
            message = "invalid x-api-key" if keys else "x-api-key header is required"
            raise ApiError(401, "authentication_error", message)
        if keys:
            raise ApiError(
                401, "invalid_request_error", "Incorrect API key provided", code="invalid_api_key"
            )
        raise ApiError(
            401,
            "invalid_request_error",
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        )

    def _too_large(self) -> ApiError:
        limit = f"{self.options.max_body_mb:g} MB"
        return ApiError(
            413,
            "request_too_large",
            f"Request exceeds the maximum allowed number of bytes ({limit}).",
            code="request_too_large",
        )

    async def read_json(
        self, request: web.Request, conv: Convention, *, entry: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Size, auth and anthropic-version checks, then the body as a JSON object.

        The body is read and parsed before auth is judged so that `entry` (a request-log
        entry) names the prompt even of a refused request.
        """
        if (request.content_length or 0) > self.options.max_body_bytes:
            raise self._too_large()
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise self._too_large() from None
        try:
            body = json.loads(raw)
        except ValueError:
            body = _UNPARSABLE
        if entry is not None and isinstance(body, dict):
            entry["prompt"] = prompt_text(body.get("messages"))
            entry["stream"] = body.get("stream") is True
            if images := image_entries(body.get("messages")):
                entry["images"] = images
        self._authorize(request, conv)
        if conv == "anthropic" and not request.headers.get("anthropic-version"):
            raise ApiError(400, "invalid_request_error", "anthropic-version: header is required")
        if body is _UNPARSABLE:
            message = (
                "There was an error parsing the body of your request. "
                "Please ensure it is valid JSON."
                if conv == "anthropic"
                else "We could not parse the JSON body of your request. The API expects a "
                "JSON payload, but what was sent was not valid JSON."
            )
            raise ApiError(400, "invalid_request_error", message)
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_request_error", "The request body must be a JSON object.")
        return body

    def _json(self, payload: Any) -> web.Response:
        return web.Response(body=dumps(payload), content_type=_JSON)

    async def count_tokens(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/messages/count_tokens`: `{"input_tokens": N}`."""
        self.begin(request, "anthropic")
        try:
            body = await self.read_json(request, "anthropic")
            tokens = parse_count_tokens(body, self.options.models)
        except ApiError as error:
            return self.error(request, error)
        return self._json({"input_tokens": tokens})

    def _models_convention(self, request: web.Request) -> Convention:
        return "anthropic" if "anthropic-version" in request.headers else "openai"

    async def list_models(self, request: web.Request) -> web.StreamResponse:
        """`GET /v1/models`: Anthropic's paginated page, or OpenAI's plain list."""
        conv = self._models_convention(request)
        self.begin(request, conv)
        try:
            self._authorize(request, conv)
            if conv == "openai":
                data = [openai_model(model) for model in self.options.models]
                return self._json({"object": "list", "data": data})
            text = request.query.get("limit", "20")
            limit = int(text) if text.isdigit() else 0
            if not 1 <= limit <= 1000:
                raise ApiError(
                    400, "invalid_request_error", "limit: Input should be between 1 and 1000"
                )
            page = anthropic_model_page(
                self.options.models,
                limit=limit,
                after_id=request.query.get("after_id"),
                before_id=request.query.get("before_id"),
            )
            return self._json(page)
        except ApiError as error:
            return self.error(request, error)

    async def get_model(self, request: web.Request) -> web.StreamResponse:
        """`GET /v1/models/{id}` (ids may contain `/`, sent raw or as %2F)."""
        conv = self._models_convention(request)
        self.begin(request, conv)
        model = request.match_info["model_id"]
        try:
            self._authorize(request, conv)
            if model not in self.options.models:
                if conv == "anthropic":
                    raise ApiError(404, "not_found_error", f"model: {model}")
                raise ApiError(
                    404,
                    "invalid_request_error",
                    f"The model `{model}` does not exist or you do not have access to it.",
                    code="model_not_found",
                )
        except ApiError as error:
            return self.error(request, error)
        return self._json(anthropic_model(model) if conv == "anthropic" else openai_model(model))

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        """Any other /v1 path: 404 in the convention's shape."""
        conv = self._models_convention(request)
        self.begin(request, conv)
        if conv == "anthropic":
            error = ApiError(404, "not_found_error", "Not Found")
        else:
            error = ApiError(
                404, "invalid_request_error", f"Invalid URL ({request.method} {request.path})"
            )
        return self.error(request, error)

    async def fake_stats(self, request: web.Request) -> web.StreamResponse:
        """`GET /_fake/stats`: the counters."""
        return self._json(self.state.stats())

    async def fake_log(self, request: web.Request) -> web.StreamResponse:
        """`GET /_fake/log`: every generation request so far."""
        return self._json(self.state.log_list())

    async def fake_reset(self, request: web.Request) -> web.StreamResponse:
        """`POST /_fake/reset`: forget counters, log, fault memory and rate-limit use."""
        self.state.reset()
        self.limits.reset()
        return self._json({"ok": True})
