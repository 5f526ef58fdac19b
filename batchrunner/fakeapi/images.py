"""What the image blocks of a request hold, for the request log (`GET /_fake/log`).

Both conventions: a Messages `image` block (base64 or url source) and a chat `image_url`
part (a data: URL or a plain one). A base64 image is decoded and logged as its media type,
size and sha256, so a test can compare what arrived with the file it came from without
the log holding megabytes of base64.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any


def image_entries(messages: Any) -> list[dict[str, Any]]:
    """One entry per image block of every message, in order."""
    found: list[dict[str, Any]] = []
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "image":
                found.append(_messages_image(block.get("source")))
            elif block.get("type") == "image_url":
                image = block.get("image_url")
                found.append(_chat_image(image.get("url") if isinstance(image, dict) else None))
    return found


def _messages_image(source: Any) -> dict[str, Any]:
    if not isinstance(source, dict):
        return {"error": "no source"}
    if source.get("type") == "url":
        return {"url": source.get("url")}
    return _decoded(source.get("media_type"), source.get("data"))


def _chat_image(url: Any) -> dict[str, Any]:
    if not isinstance(url, str):
        return {"error": "no url"}
    if not url.startswith("data:"):
        return {"url": url}
    header, _, data = url.partition(",")
    return _decoded(header.removeprefix("data:").removesuffix(";base64"), data)


def _decoded(media_type: Any, data: Any) -> dict[str, Any]:
    try:
        raw = base64.b64decode(data if isinstance(data, str) else "", validate=True)
    except (binascii.Error, ValueError):
        return {"media_type": media_type, "error": "invalid base64"}
    return {"media_type": media_type, "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
