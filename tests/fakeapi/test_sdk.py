"""The fake API's answers parse with the official anthropic and openai SDKs, plain and streamed."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anthropic
import openai
import pytest

from batchrunner.fakeapi import answer_for
from tests.fakeserver import serve_in_thread

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.fakeserver import ThreadServer

WEATHER_TOOL: dict[str, Any] = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "unit": {"type": "string", "enum": ["C", "F"]},
        },
        "required": ["city"],
    },
}


@pytest.fixture
def claude(server: ThreadServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.root, api_key="test-key", max_retries=0) as client:
        yield client


@pytest.fixture
def gpt(server: ThreadServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key="test-key", max_retries=0) as client:
        yield client


def test_anthropic_create_matches_answer_for(claude: anthropic.Anthropic) -> None:
    """messages.create returns a Message whose text is answer_for(prompt)."""
    message = claude.messages.create(
        model="caicaini/auto",
        max_tokens=512,
        messages=[{"role": "user", "content": "What is 2+2?"}],
    )
    text, kind = answer_for("What is 2+2?", max_tokens=512)
    assert kind == "end"
    assert message.id.startswith("msg_")
    assert message.model == "caicaini/auto"
    assert message.content[0].type == "text"
    assert message.content[0].text == text
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == len(text.split(": ", 1)[1].split()) + 1
    assert message.usage.input_tokens == 3  # ceil(12 chars / 4)
    assert message._request_id is not None and message._request_id.startswith("req_")


def test_anthropic_stream_agrees_with_plain(claude: anthropic.Anthropic) -> None:
    """messages.stream assembles the same text, usage and stop reason as messages.create."""
    kwargs: dict[str, Any] = {
        "model": "caicaini/small",
        "max_tokens": 256,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Tell me [long]"}]}],
    }
    plain = claude.messages.create(**kwargs)
    with claude.messages.stream(**kwargs) as stream:
        deltas = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(deltas) > 100
    assert "".join(deltas) == final.content[0].text == plain.content[0].text  # type: ignore[union-attr]
    assert final.usage.model_dump() == plain.usage.model_dump()
    assert final.stop_reason == plain.stop_reason == "end_turn"
    assert final.id == plain.id  # first plain and first streamed answer of one content


def test_anthropic_thinking_and_tool_use_plain_and_streamed(claude: anthropic.Anthropic) -> None:
    """Thinking comes first, then text, then a tool_use whose input parses, in both modes."""
    kwargs: dict[str, Any] = {
        "model": "caicaini/auto",
        "max_tokens": 2048,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [WEATHER_TOOL],
        "messages": [{"role": "user", "content": "Weather in Zürich? [tool]"}],
    }
    plain = claude.messages.create(**kwargs)
    with claude.messages.stream(**kwargs) as stream:
        streamed = stream.get_final_message()
    for message in (plain.model_dump(), streamed.model_dump()):
        assert [block["type"] for block in message["content"]] == ["thinking", "text", "tool_use"]
        assert message["stop_reason"] == "tool_use"
        thinking, tool = message["content"][0], message["content"][2]
        assert thinking["signature"]
        assert tool["id"].startswith("toolu_")
        assert tool["name"] == "get_weather"
        assert tool["input"]["city"] == "Weather in Zürich? [tool]"
        assert isinstance(tool["input"]["days"], int)
        assert tool["input"]["unit"] in ("C", "F")
    assert streamed.model_dump(exclude={"usage"}) == plain.model_dump(exclude={"usage"})
    assert streamed.usage.output_tokens == plain.usage.output_tokens


def test_anthropic_max_tokens_stop(claude: anthropic.Anthropic) -> None:
    """An answer longer than max_tokens is cut to max_tokens words with stop_reason max_tokens."""
    message = claude.messages.create(
        model="caicaini/auto", max_tokens=4, messages=[{"role": "user", "content": "x [long]"}]
    )
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 4
    assert message.content[0].text == answer_for("x [long]", max_tokens=4)[0]  # type: ignore[union-attr]


def test_anthropic_models_and_count_tokens(claude: anthropic.Anthropic) -> None:
    """models.list pages through every model; count_tokens counts chars / 4."""
    ids = [model.id for model in claude.models.list(limit=2)]
    assert ids == ["caicaini/auto", "caicaini/small", "caicaini/large"]
    assert claude.models.retrieve("caicaini/large").display_name == "Caicaini Large"
    counted = claude.messages.count_tokens(
        model="caicaini/auto", messages=[{"role": "user", "content": "x" * 40}], system="y" * 4
    )
    assert counted.input_tokens == 11


def test_anthropic_errors_map_to_sdk_exceptions(server: ThreadServer) -> None:
    """Unknown model -> NotFoundError, temperature 7 -> BadRequestError, with request ids."""
    with anthropic.Anthropic(base_url=server.root, api_key="k", max_retries=0) as client:
        with pytest.raises(anthropic.NotFoundError) as missing:
            client.messages.create(
                model="nope", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
            )
        assert missing.value.body == {
            "type": "error",
            "error": {"type": "not_found_error", "message": "model: nope"},
            "request_id": missing.value.request_id,
        }
        with pytest.raises(anthropic.BadRequestError, match="temperature"):
            client.messages.create(
                model="caicaini/auto",
                max_tokens=5,
                extra_body={"temperature": 7},
                messages=[{"role": "user", "content": "hi"}],
            )


def test_openai_create_matches_answer_for(gpt: openai.OpenAI) -> None:
    """chat.completions.create returns a ChatCompletion whose content is answer_for(prompt)."""
    completion = gpt.chat.completions.create(
        model="caicaini/large",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a colour"},
        ],
        max_completion_tokens=100,
    )
    choice = completion.choices[0]
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "caicaini/large"
    assert choice.message.content == answer_for("Name a colour")[0]
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 6  # ceil((9 + 13) / 4)
    assert completion.usage.total_tokens == 6 + completion.usage.completion_tokens


def test_openai_stream_with_usage_agrees_with_plain(gpt: openai.OpenAI) -> None:
    """stream=True with include_usage yields the same text, finish_reason and usage."""
    messages: Any = [{"role": "user", "content": "Stream me"}]
    plain = gpt.chat.completions.create(model="caicaini/auto", messages=messages, max_tokens=10)
    chunks = list(
        gpt.chat.completions.create(
            model="caicaini/auto",
            messages=messages,
            max_tokens=10,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    finish = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert text == plain.choices[0].message.content
    assert finish[-1] == plain.choices[0].finish_reason == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage == plain.usage
    assert {chunk.id for chunk in chunks} == {chunks[0].id}


def test_openai_tool_calls_plain_and_streamed(gpt: openai.OpenAI) -> None:
    """A [tool] prompt gives tool_calls with JSON arguments; the stream assembles the same."""
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER_TOOL["input_schema"],
            },
        }
    ]
    messages: Any = [{"role": "user", "content": "Weather in Zürich? [tool]"}]
    plain = gpt.chat.completions.create(model="caicaini/auto", messages=messages, tools=tools)
    message = plain.choices[0].message
    assert plain.choices[0].finish_reason == "tool_calls"
    assert message.content is None
    assert message.tool_calls is not None
    call = message.tool_calls[0]
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    arguments = json.loads(call.function.arguments)  # type: ignore[union-attr]
    assert arguments["city"] == "Weather in Zürich? [tool]"
    with gpt.chat.completions.stream(
        model="caicaini/auto", messages=messages, tools=tools
    ) as stream:
        final = stream.get_final_completion()
    streamed = final.choices[0].message.tool_calls
    assert streamed is not None
    assert streamed[0].function.arguments == call.function.arguments  # type: ignore[union-attr]
    assert streamed[0].id == call.id
    assert final.choices[0].finish_reason == "tool_calls"


def test_openai_models_and_errors(gpt: openai.OpenAI) -> None:
    """models.list is the OpenAI list; unknown model and bad temperature raise SDK errors."""
    assert [model.id for model in gpt.models.list()] == [
        "caicaini/auto",
        "caicaini/small",
        "caicaini/large",
    ]
    with pytest.raises(openai.NotFoundError) as missing:
        gpt.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.code == "model_not_found"
    assert missing.value.request_id is not None
    with pytest.raises(openai.BadRequestError) as bad:
        gpt.chat.completions.create(
            model="caicaini/auto", temperature=7, messages=[{"role": "user", "content": "hi"}]
        )
    assert bad.value.code == "decimal_above_max_value"
    assert bad.value.param == "temperature"


def test_sdks_see_auth_errors_with_a_server_key() -> None:
    """With a server key, both SDKs get AuthenticationError for any other key."""
    with serve_in_thread(api_key="right") as server:
        with (
            anthropic.Anthropic(base_url=server.root, api_key="wrong", max_retries=0) as claude,
            pytest.raises(anthropic.AuthenticationError),
        ):
            claude.messages.create(
                model="caicaini/auto", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
            )
        with (
            openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0) as gpt,
            pytest.raises(openai.AuthenticationError) as denied,
        ):
            gpt.chat.completions.create(
                model="caicaini/auto", messages=[{"role": "user", "content": "hi"}]
            )
        assert denied.value.code == "invalid_api_key"
        with anthropic.Anthropic(base_url=server.root, auth_token="right", max_retries=0) as ok:
            reply = ok.messages.create(
                model="caicaini/auto", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
            )
        assert reply.stop_reason in ("end_turn", "max_tokens")
