"""Identifiers the fake API hands out: request ids, response ids, tool-call ids.

Request ids are random (one per HTTP response, like the real services); response and tool
ids are derived from a hash, so a fresh server replays the same ids. No IO, no state.
"""

from __future__ import annotations

import hashlib
import os

_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def b62(data: bytes, length: int) -> str:
    """Spell the first `length` bytes of `data` as base-62 characters, one per byte.

    Byte-wise modulo is slightly uneven across the alphabet; ids only need to look the
    part and not collide, and this is several times cheaper than big-integer division.
    """
    return "".join([_B62[byte % 62] for byte in data[:length]])


def derived_id(prefix: str, length: int, *parts: object) -> str:
    """A stable id such as `msg_...` from the given parts (same parts, same id)."""
    text = "\x1f".join(str(part) for part in parts).encode()
    return prefix + b62(hashlib.blake2b(text, digest_size=32).digest(), length)


def anthropic_request_id() -> str:
    """`req_` + 24 base-62 characters, the Anthropic `request-id` header shape."""
    return "req_" + b62(os.urandom(24), 24)


def openai_request_id() -> str:
    """`req_` + 32 hex digits, the OpenAI `x-request-id` header shape."""
    return "req_" + os.urandom(16).hex()
