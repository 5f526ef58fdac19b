"""The fake API refuses like the real services: auth, validation, size and quota."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.fakeserver import serve_in_thread
from tests.helpers import ANTHROPIC, OPENAI, ask, chat

# -- auth -------------------------------------------------------------------------------


def test_missing_key_is_401_in_both_shapes(client: httpx.Client) -> None:
    """No key at all: 401 authentication_error (messages) / invalid_request_error (chat)."""
    response = client.post("/messages", json=ask("hi"), headers={"anthropic-version": "1"})
    assert response.status_code == 401
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert body["request_id"] == response.headers["request-id"]
    response = client.post("/chat/completions", json=chat("hi"))
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_server_key_mismatch_is_401_and_never_echoed() -> None:
    """With a server key, other keys get the documented 401 bodies; the key is not echoed."""
    with (
        serve_in_thread(api_key="right-key") as server,
        httpx.Client(base_url=server.base_url) as http,
    ):
        wrong = {**ANTHROPIC, "x-api-key": "wrong-key"}
        response = http.post("/messages", json=ask("hi"), headers=wrong)
        assert response.status_code == 401
        assert response.json() == {
            "type": "error",
            "error": {"type": "authentication_error", "message": "invalid x-api-key"},
            "request_id": response.headers["request-id"],
        }
        response = http.post(
            "/chat/completions",
            json=chat("hi"),
            headers={"Authorization": "Bearer wrong-key"},
        )
        assert response.json() == {
            "error": {
                "message": "Incorrect API key provided",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        }
        assert "wrong-key" not in response.text and "right-key" not in response.text
        bearer = {"Authorization": "Bearer right-key", "anthropic-version": "2023-06-01"}
        assert http.post("/messages", json=ask("hi"), headers=bearer).status_code == 200
        assert http.get("/models", headers={"Authorization": "Bearer nope"}).status_code == 401


# -- validation -------------------------------------------------------------------------

MESSAGES_BAD: list[tuple[dict[str, Any], dict[str, str], str]] = [
    (ask("hi"), {"x-api-key": "k"}, "anthropic-version: header is required"),
    (
        {"model": "caicaini/auto", "messages": [{"role": "user", "content": "hi"}]},
        ANTHROPIC,
        "max_tokens: Field required",
    ),
    (
        ask("hi", max_tokens=0),
        ANTHROPIC,
        "max_tokens: Input should be greater than or equal to 1",
    ),
    (
        ask("hi", max_tokens="9"),
        ANTHROPIC,
        "max_tokens: Input should be a valid integer",
    ),
    (
        ask("hi", messages=[]),
        ANTHROPIC,
        "messages: at least one message is required",
    ),
    (
        ask("hi", messages=[{"role": "robot", "content": "x"}]),
        ANTHROPIC,
        "messages.0.role",
    ),
    (
        ask("hi", messages=[{"role": "user", "content": 5}]),
        ANTHROPIC,
        "messages.0.content",
    ),
    (
        ask("hi", temperature=7),
        ANTHROPIC,
        "temperature: Input should be less than or equal to 1",
    ),
    (ask("hi", model=None), ANTHROPIC, "model: Field required"),
    (
        ask("hi", thinking={"type": "enabled", "budget_tokens": 10}),
        ANTHROPIC,
        "budget_tokens",
    ),
]
CHAT_BAD: list[tuple[dict[str, Any], str, str | None]] = [
    ({"messages": [{"role": "user", "content": "hi"}]}, "you must provide a model parameter", None),
    (
        {"model": "caicaini/auto"},
        "Missing required parameter: 'messages'.",
        "missing_required_parameter",
    ),
    (chat("hi", messages=[]), "Invalid 'messages': empty array", "empty_array"),
    (
        chat("hi", messages=[{"role": "robot", "content": "x"}]),
        "Invalid value: 'robot'",
        "invalid_value",
    ),
    (
        chat("hi", temperature=7),
        "Expected a value <= 2, but got 7 instead.",
        "decimal_above_max_value",
    ),
    (chat("hi", max_tokens=0), "integer below minimum value", "integer_below_min_value"),
    (
        chat("hi", stream_options={"include_usage": True}),
        "only allowed when 'stream'",
        None,
    ),
    (
        chat("hi", response_format={"type": "yaml"}),
        "Invalid value: 'yaml'. Supported values are: 'text', 'json_object'",
        "invalid_value",
    ),
    (
        chat("hi", response_format={"type": "json_schema", "json_schema": {"schema": {}}}),
        "Missing required parameter: 'response_format.json_schema.name'.",
        "missing_required_parameter",
    ),
    (
        chat("hi", response_format={"type": "json_schema", "json_schema": {"name": "a b"}}),
        "string does not match pattern",
        "invalid_value",
    ),
    (
        chat("hi", response_format="json"),
        "Invalid type for 'response_format': expected an object",
        "invalid_type",
    ),
]


@pytest.mark.parametrize(("body", "headers", "message"), MESSAGES_BAD)
def test_messages_validation_is_400(
    client: httpx.Client, body: dict[str, Any], headers: dict[str, str], message: str
) -> None:
    """Invalid messages requests get 400 invalid_request_error with a telling message."""
    response = client.post("/messages", json=body, headers=headers)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert message in error["message"]


@pytest.mark.parametrize(("body", "message", "code"), CHAT_BAD)
def test_chat_validation_is_400(
    client: httpx.Client, body: dict[str, Any], message: str, code: str | None
) -> None:
    """Invalid chat requests get 400 invalid_request_error with OpenAI's wording and code."""
    response = client.post("/chat/completions", json=body, headers=OPENAI)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert message in error["message"]
    assert error["code"] == code


def test_bad_json_and_non_object_bodies_are_400(client: httpx.Client) -> None:
    """A body that is not a JSON object is 400 in both conventions."""
    for path, headers in (("/messages", ANTHROPIC), ("/chat/completions", OPENAI)):
        for content in (b"{not json", b"[1, 2]", b"\xff\xfe"):
            response = client.post(path, content=content, headers=headers)
            assert response.status_code == 400
            assert response.json()["error"]["type"] == "invalid_request_error"


def test_unknown_model_is_404_in_both_shapes(client: httpx.Client) -> None:
    """An unknown model: not_found_error `model: X` / model_not_found."""
    response = client.post("/messages", json=ask("hi", model="gpt-9"), headers=ANTHROPIC)
    assert response.status_code == 404
    assert response.json()["error"] == {"type": "not_found_error", "message": "model: gpt-9"}
    response = client.post("/chat/completions", json=chat("hi", model="gpt-9"), headers=OPENAI)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert client.get("/models/gpt-9", headers=OPENAI).status_code == 404
    assert client.get("/nowhere", headers=OPENAI).status_code == 404


def test_oversized_body_is_413() -> None:
    """A body over --max-body-mb gets 413 request_too_large, chunked or not."""
    with (
        serve_in_thread(max_body_mb=0.01) as server,
        httpx.Client(base_url=server.base_url) as http,
    ):
        big = ask("x" * 20_000)
        response = http.post("/messages", json=big, headers=ANTHROPIC)
        assert response.status_code == 413
        assert response.json()["error"]["type"] == "request_too_large"
        chunks = iter([json.dumps(chat("y" * 20_000)).encode()])
        response = http.post("/chat/completions", content=chunks, headers=OPENAI)
        assert response.status_code == 413


def test_quota_exhausted_refuses_every_generation() -> None:
    """--quota-exhausted: messages 402 billing_error, chat 429 insufficient_quota."""
    with (
        serve_in_thread(quota_exhausted=True) as server,
        httpx.Client(base_url=server.base_url) as http,
    ):
        response = http.post("/messages", json=ask("hi"), headers=ANTHROPIC)
        assert response.status_code == 402
        assert response.json()["error"]["type"] == "billing_error"
        response = http.post("/chat/completions", json=chat("hi"), headers=OPENAI)
        assert response.status_code == 429
        error = response.json()["error"]
        assert error["type"] == error["code"] == "insufficient_quota"
        assert "retry-after" not in response.headers
