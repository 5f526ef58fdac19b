"""The generation routes (`/v1/messages`, `/v1/chat/completions`): one request's whole flow.

size -> auth -> version -> JSON -> rate limit -> validation -> quota -> fault decision ->
latency -> answer (plain or SSE) or the planned fault. Every request is logged in
FakeState from arrival to the end of its response. Content comes from answers, shapes and
streams; this module only orders the steps and writes responses.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from batchrunner.fakeapi import faults, keys, streams
from batchrunner.fakeapi.answers import compose, pick_tool
from batchrunner.fakeapi.chat_validation import parse_chat
from batchrunner.fakeapi.ids import derived_id
from batchrunner.fakeapi.limits import go_duration
from batchrunner.fakeapi.messages_validation import parse_messages
from batchrunner.fakeapi.options import REFUSAL_FAULTS, STREAM_FAULTS
from batchrunner.fakeapi.shapes import ApiError, Convention, chat_body, dumps, message_body

if TYPE_CHECKING:
    from collections.abc import Iterator

    from batchrunner.fakeapi.answers import Answer
    from batchrunner.fakeapi.ask import Ask
    from batchrunner.fakeapi.service import FakeApi

_JSON = "application/json"
_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
_STREAM_FIELDS = ("stream", "stream_options")
_MAX_REMEMBERED = 1_000_000


def content_key(path: str, body: dict[str, Any]) -> bytes:
    """Hash of what the request asks, stream flags left out (plain and SSE share it)."""
    content = {key: value for key, value in body.items() if key not in _STREAM_FIELDS}
    text = path + "\x00" + json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def _rate_limited(conv: Convention, wait: float, headers: dict[str, str]) -> ApiError:
    if conv == "anthropic":
        return ApiError(
            429,
            "rate_limit_error",
            "This request would exceed your organization's rate limit. "
            "Please reduce the request rate or try again later.",
            headers=headers,
        )
    return ApiError(
        429,
        "requests",
        f"Rate limit reached for requests. Please try again in {go_duration(wait)}.",
        code="rate_limit_exceeded",
        headers=headers,
    )


def _quota(conv: Convention) -> ApiError:
    if conv == "anthropic":
        return ApiError(
            402,
            "billing_error",
            "Your credit balance is too low to access the API. "
            "Please go to Plans & Billing to upgrade or purchase credits.",
        )
    return ApiError(
        429,
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details.",
        code="insufficient_quota",
    )


class Generation:
    """Handlers for the two generation routes, sharing the FakeApi core."""

    def __init__(self, api: FakeApi) -> None:
        self.api = api
        options = api.options
        self._rng = random.Random(options.seed)
        seed_bytes = str(options.seed).encode()
        self._fingerprint = "fp_" + hashlib.blake2b(seed_bytes, digest_size=5).hexdigest()

    async def messages(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/messages`."""
        return await self._generate(request, "anthropic")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/chat/completions`."""
        return await self._generate(request, "openai")

    async def _generate(self, request: web.Request, conv: Convention) -> web.StreamResponse:
        api = self.api
        request_id = api.begin(request, conv)
        entry: dict[str, Any] = {
            "t": time.time(),
            "path": request.path,
            "prompt": "",
            "stream": False,
            "status": None,
            "response_id": None,
            "fault": None,
            "retry_after": None,
            "request_id": request_id,
        }
        api.state.log.append(entry)
        request[keys.LOG_ENTRY] = entry
        api.state.enter()
        try:
            return await self._answer(request, conv, entry)
        except ApiError as error:
            entry["status"] = error.status
            return await api.send(request, api.error(request, error))
        except ConnectionError:
            # the client went away mid-response; an unsendable reply ends it quietly
            request[keys.DROPPED] = True
            return web.Response()
        finally:
            entry.setdefault("done", time.time())  # when the answer (or refusal) went out
            api.state.leave()

    async def _answer(
        self, request: web.Request, conv: Convention, entry: dict[str, Any]
    ) -> web.StreamResponse:
        api = self.api
        body = await api.read_json(request, conv, entry=entry)
        wait = api.limits.admit()
        if wait is not None:
            headers, entry["retry_after"] = api.limits.refusal(wait)
            raise _rate_limited(conv, wait, headers)
        models = api.options.models
        ask = parse_messages(body, models) if conv == "anthropic" else parse_chat(body, models)
        if api.options.quota_exhausted:
            raise _quota(conv)
        key = content_key(request.path, body)
        fault = api.planner.decide(key, stream=ask.stream)
        entry["fault"] = fault
        if fault is not None:
            api.state.fault_counts[fault] += 1
        low, high = api.options.latency
        delay = self._rng.uniform(low, high) if high > low else low
        if fault in REFUSAL_FAULTS and api.options.refusals_at_once:
            delay = 0.0
        if fault == "hang":
            await faults.hang()
        if delay:
            await asyncio.sleep(delay)
        if fault is not None and fault[0].isdigit():
            return await self._status_fault(request, conv, fault, entry)
        return await self._respond(request, conv, ask, key, fault, entry)

    async def _status_fault(
        self, request: web.Request, conv: Convention, kind: str, entry: dict[str, Any]
    ) -> web.StreamResponse:
        api = self.api
        planned = faults.status_fault(kind, conv, api.options.fault_retry_after)
        entry["status"] = planned.status
        entry["retry_after"] = planned.retry_after
        if planned.error is None:
            return await api.send(request, faults.html_response(planned.status))
        response = api.error(request, planned.error)
        response.headers.update(planned.headers)
        return await api.send(request, response)

    def _response_id(self, conv: Convention, key: bytes, *, stream: bool) -> str:
        """Stable per (seed, content, answers this content got before in this mode).

        Counting plain and streamed answers apart lets a plain run and a streamed run on
        one server get the same ids, while repeats of one content still get fresh ones.
        """
        counter = key + (b"s" if stream else b"p")
        state = self.api.state
        if len(state.issued) >= _MAX_REMEMBERED:
            state.issued.clear()  # bounded memory on endless dry runs; ids may then repeat
        issued = state.issued.get(counter, 0)
        state.issued[counter] = issued + 1
        if conv == "anthropic":
            return derived_id("msg_", 24, self.api.options.seed, key.hex(), issued)
        return derived_id("chatcmpl-", 29, self.api.options.seed, key.hex(), issued)

    async def _respond(
        self,
        request: web.Request,
        conv: Convention,
        ask: Ask,
        key: bytes,
        fault: str | None,
        entry: dict[str, Any],
    ) -> web.StreamResponse:
        answer = compose(
            ask.prompt,
            max_tokens=ask.max_tokens,
            thinking=ask.thinking,
            tool=pick_tool(ask.tools, ask.tool_mode, ask.prompt),
            tool_preamble=conv == "anthropic",
            stop_sequences=ask.stop_sequences,
            json_schema=ask.json_schema,
            invalid=fault == "invalid_output",
        )
        response_id = self._response_id(conv, key, stream=ask.stream)
        entry["response_id"] = response_id
        if fault == "reset":
            request[keys.DROPPED] = True
            return faults.reset_connection(request)
        entry["status"] = 200
        if ask.stream and fault not in ("truncate", "badjson"):
            events = self._events(conv, ask, answer, response_id)
            response = web.StreamResponse(status=200, headers=_SSE_HEADERS)
            complete = await streams.write_stream(
                request,
                response,
                events,
                conv=conv,
                fault=fault if fault in STREAM_FAULTS else None,
                fault_after=max(1, streams.count_deltas(answer, ask.n) // 2),
            )
        else:
            data = dumps(self._body(conv, ask, answer, response_id))
            if fault == "truncate":
                return await faults.truncated_response(request, data)
            if fault == "badjson":
                broken = web.Response(body=faults.bad_json_body(data), content_type=_JSON)
                return await self.api.send(request, broken)
            response = await self.api.send(request, web.Response(body=data, content_type=_JSON))
            complete = True
        if complete:
            self._answered(ask.input_tokens + answer.output_tokens * ask.n)
        return response

    def _events(
        self, conv: Convention, ask: Ask, answer: Answer, response_id: str
    ) -> Iterator[streams.Event]:
        """The SSE events of `answer` in the convention's dialect."""
        if conv == "anthropic":
            return streams.message_events(
                answer, response_id=response_id, model=ask.model, input_tokens=ask.input_tokens
            )
        return streams.chat_chunks(
            answer,
            response_id=response_id,
            created=int(time.time()),
            model=ask.model,
            fingerprint=self._fingerprint,
            input_tokens=ask.input_tokens,
            n=ask.n,
            include_usage=ask.include_usage,
        )

    def _body(self, conv: Convention, ask: Ask, answer: Answer, response_id: str) -> dict[str, Any]:
        """The plain JSON body of `answer` in the convention's shape."""
        if conv == "anthropic":
            return message_body(
                answer, response_id=response_id, model=ask.model, input_tokens=ask.input_tokens
            )
        return chat_body(
            answer,
            response_id=response_id,
            created=int(time.time()),
            model=ask.model,
            fingerprint=self._fingerprint,
            input_tokens=ask.input_tokens,
            n=ask.n,
        )

    def _answered(self, tokens: int) -> None:
        self.api.state.answers_total += 1
        self.api.limits.spend_tokens(tokens)
