"""JSON bodies of both conventions: messages, chat completions, models, and error shapes.

Builds plain dicts/bytes from an Answer and ids; knows nothing of sockets, state or faults.
Compact JSON only (no pretty printing): this runs once per request.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

from batchrunner.fakeapi.ids import derived_id

if TYPE_CHECKING:
    from batchrunner.fakeapi.answers import Answer

Convention = Literal["anthropic", "openai"]

STOP_REASONS = {"end": "end_turn", "max": "max_tokens", "tool": "tool_use"}
FINISH_REASONS = {"end": "stop", "max": "length", "tool": "tool_calls", "stop_sequence": "stop"}
_MODEL_CREATED = 1735689600  # 2025-01-01T00:00:00Z: fixed so listings are reproducible
_MODEL_CREATED_AT = "2025-01-01T00:00:00Z"


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, the way the services send it."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


class ApiError(Exception):
    """An HTTP error answer; rendered in the shape of the request's convention."""

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}


def error_body(conv: Convention, error: ApiError, request_id: str) -> bytes:
    """`{"type":"error","error":{..},"request_id":..}` or `{"error":{message,type,param,code}}`."""
    if conv == "anthropic":
        return dumps(
            {
                "type": "error",
                "error": {"type": error.error_type, "message": error.message},
                "request_id": request_id,
            }
        )
    return dumps(
        {
            "error": {
                "message": error.message,
                "type": error.error_type,
                "param": error.param,
                "code": error.code,
            }
        }
    )


def tool_call_id(conv: Convention, response_id: str, index: int) -> str:
    """`toolu_...` (messages) or `call_...` (chat), unique per response and block."""
    return derived_id("toolu_" if conv == "anthropic" else "call_", 24, response_id, index)


def anthropic_usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """Messages usage with the cache fields at 0 (so totals add up as documented)."""
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _anthropic_block(block_index: int, answer: Answer, response_id: str) -> dict[str, Any]:
    block = answer.blocks[block_index]
    if block.kind == "thinking":
        return {"type": "thinking", "thinking": block.text, "signature": block.signature}
    if block.kind == "tool_use":
        return {
            "type": "tool_use",
            "id": tool_call_id("anthropic", response_id, block_index),
            "name": block.name,
            "input": block.tool_input,
        }
    return {"type": "text", "text": block.text}


def message_body(
    answer: Answer, *, response_id: str, model: str, input_tokens: int
) -> dict[str, Any]:
    """The plain `POST /v1/messages` response."""
    return {
        "id": response_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [_anthropic_block(i, answer, response_id) for i in range(len(answer.blocks))],
        "stop_reason": STOP_REASONS.get(answer.stop, answer.stop),
        "stop_sequence": answer.stop_sequence,
        "usage": anthropic_usage(input_tokens, answer.output_tokens),
    }


def chat_usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """Chat usage with its details objects, all zero where this server has nothing to count."""
    return {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_tool_calls(answer: Answer, response_id: str) -> list[dict[str, Any]]:
    """The `tool_calls` list of a chat message (arguments as a JSON string)."""
    return [
        {
            "id": tool_call_id("openai", response_id, index),
            "type": "function",
            "function": {"name": block.name, "arguments": block.text},
        }
        for index, block in enumerate(answer.blocks)
        if block.kind == "tool_use"
    ]


def chat_body(
    answer: Answer,
    *,
    response_id: str,
    created: int,
    model: str,
    fingerprint: str,
    input_tokens: int,
    n: int,
) -> dict[str, Any]:
    """The plain `POST /v1/chat/completions` response; `n` identical choices."""
    tool_calls = chat_tool_calls(answer, response_id)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if tool_calls else answer.text,
        "refusal": None,
        "annotations": [],
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    finish = FINISH_REASONS[answer.stop]
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": i, "message": message, "logprobs": None, "finish_reason": finish}
            for i in range(n)
        ],
        "usage": chat_usage(input_tokens, answer.output_tokens * n),
        "service_tier": "default",
        "system_fingerprint": fingerprint,
    }


def anthropic_model(model: str) -> dict[str, Any]:
    """One Anthropic `ModelInfo`."""
    display = model.rsplit("/", 1)[-1].replace("-", " ").title()
    return {
        "type": "model",
        "id": model,
        "display_name": f"Caicaini {display}",
        "created_at": _MODEL_CREATED_AT,
    }


def openai_model(model: str) -> dict[str, Any]:
    """One OpenAI model object."""
    return {"id": model, "object": "model", "created": _MODEL_CREATED, "owned_by": "caicaini"}


def anthropic_model_page(
    models: tuple[str, ...], *, limit: int, after_id: str | None, before_id: str | None
) -> dict[str, Any]:
    """One page of the cursor-paginated Anthropic model list."""
    ids = list(models)
    if after_id is not None:
        start = ids.index(after_id) + 1 if after_id in ids else len(ids)
        window, more = ids[start : start + limit], start + limit < len(ids)
    elif before_id is not None:
        end = ids.index(before_id) if before_id in ids else 0
        window, more = ids[max(0, end - limit) : end], end - limit > 0
    else:
        window, more = ids[:limit], limit < len(ids)
    return {
        "data": [anthropic_model(model) for model in window],
        "has_more": more,
        "first_id": window[0] if window else None,
        "last_id": window[-1] if window else None,
    }
