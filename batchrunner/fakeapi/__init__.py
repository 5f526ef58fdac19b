"""A local Caicaini-compatible API server (aiohttp.web) speaking both conventions.

Tests, the demo, benchmarks and users' dry runs talk to it: deterministic answers that
embed their prompt, both SSE dialects, injected faults, rate limits, and counters under
`/_fake/*`. It never contacts anything but its own listening socket.
"""

from __future__ import annotations

from batchrunner.fakeapi.answers import answer_for, prompt_text
from batchrunner.fakeapi.app import RunningServer, make_app, start_server
from batchrunner.fakeapi.options import DEFAULT_FAULTS, DEFAULT_MODELS, FAULT_KINDS, FakeOptions
from batchrunner.fakeapi.state import FakeState

__all__ = [
    "DEFAULT_FAULTS",
    "DEFAULT_MODELS",
    "FAULT_KINDS",
    "FakeOptions",
    "FakeState",
    "RunningServer",
    "answer_for",
    "make_app",
    "prompt_text",
    "start_server",
]
