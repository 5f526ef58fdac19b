"""Image blocks: the checks the real APIs make, and what they hold for the request log.

Both conventions: a Messages `image` block (base64 or url source) and a chat `image_url`
part (a data: URL or a plain one). A malformed one is refused (`*_image_problem`, worded
like the real service) as the real API would. For the log (`GET /_fake/log`) a base64
image is decoded to its media type, size and sha256, so a test can compare what arrived
with the file it came from without the log holding megabytes of base64.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


def messages_image_problem(block: dict[str, Any]) -> str | None:
    """What is wrong with a Messages `image` block, as `path: reason`; None if nothing."""
    source = block.get("source")
    if not isinstance(source, dict):
        return "source: Field required"
    kind = source.get("type")
    if kind == "url":
        return None if isinstance(source.get("url"), str) else "source.url: Field required"
    if kind != "base64":
        return "source.type: Input should be 'base64' or 'url'"
    if source.get("media_type") not in MEDIA_TYPES:
        allowed = ", ".join(f"'{m}'" for m in MEDIA_TYPES)
        return f"source.base64.media_type: Input should be {allowed}"
    if not _decodes(source.get("data")):
        return "source.base64.data: The image data is not valid base64"
    return None


def chat_image_problem(part: dict[str, Any]) -> str | None:
    """What is wrong with a chat `image_url` part, as `param: reason`; None if nothing."""
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else None
    if not isinstance(url, str):
        return "image_url.url: Missing required parameter"
    if not url.startswith("data:"):
        return None
    header, _, data = url.partition(",")
    if header.removeprefix("data:").removesuffix(";base64") not in MEDIA_TYPES or not _decodes(
        data
    ):
        return "image_url.url: Invalid image data URL"
    return None


def _decodes(data: Any) -> bool:
    if not isinstance(data, str) or not data:
        return False
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


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
