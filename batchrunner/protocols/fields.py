"""Which fields of a simple input row belong in the request body, per convention.

The input's row shaping splits each simple row with these sets: a field named here goes
to the request, any other field is carried through to the results. Data only; no logic
lives here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchrunner.records import Api

# The row's content; every convention takes one of them (the protocol turns `prompt` into
# a user message). Listed so that a splitter using only REQUEST_FIELDS keeps them.
CONTENT_FIELDS = frozenset({"prompt", "messages"})

MESSAGES_FIELDS = CONTENT_FIELDS | {
    "model",
    "max_tokens",
    "system",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "metadata",
    "thinking",
    "tools",
    "tool_choice",
    "service_tier",
    "container",
    "output_config",
    "inference_geo",
    "cache_control",
}

CHAT_FIELDS = CONTENT_FIELDS | {
    "model",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "seed",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "logprobs",
    "top_logprobs",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "user",
    "safety_identifier",
    "metadata",
    "store",
    "service_tier",
    "reasoning_effort",
    "prediction",
    "modalities",
    "audio",
    # Not a chat body field: the protocol turns it into a leading system message, so one
    # input file can serve both conventions.
    "system",
}

REQUEST_FIELDS: dict[Api, frozenset[str]] = {"messages": MESSAGES_FIELDS, "chat": CHAT_FIELDS}
