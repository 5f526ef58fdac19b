"""A simple row's images as each convention's content blocks, before the text they go with.

Pure: `inputs.images` has already read the files and checked every image; what arrives
here is its neutral form, `{"media_type", "data"}` (base64) or `{"url"}` (https). The
blocks go at the start of the last user message (the one the model answers), so the
model sees the images before the prompt that asks about them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from batchrunner.errors import SourceError

if TYPE_CHECKING:
    from batchrunner.records import Api, JSONObject

# What one image counts for in the token estimate (pacing's budgets): its pixels decide
# what it costs, not its bytes, and neither convention bills much more than this for one.
IMAGE_TOKENS = 1600
_BLOCK_TYPES = frozenset({"image", "image_url"})


def with_images(body: JSONObject, images: object, api: Api, where: str) -> JSONObject:
    """`body` with the image blocks put before the content of its last user message.

    The message is replaced, not changed: the row's own objects are never mutated.
    """
    if type(images) is not list:
        raise SourceError(where, "images must be a list")
    blocks = [_block(image, api, where) for image in images]
    messages: list[Any] = body["messages"]
    for i in range(len(messages) - 1, -1, -1):
        message = messages[i]
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            text = [{"type": "text", "text": content}] if type(content) is str else content
            messages[i] = {**message, "content": blocks + list(text or [])}
            return body
    raise SourceError(where, "the row has images but no user message to send them with")


def _block(image: object, api: Api, where: str) -> JSONObject:
    if type(image) is not dict:
        # A path still unread: a caller built the body without inputs.images reading it.
        raise SourceError(where, f"image {image!r} was not read before the request was built")
    url = image.get("url")
    if url is not None:
        if api == "chat":
            return {"type": "image_url", "image_url": {"url": url}}
        return {"type": "image", "source": {"type": "url", "url": url}}
    media_type, data = image["media_type"], image["data"]
    if api == "chat":
        return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    source = {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "image", "source": source}


def without_images(messages: list[Any]) -> tuple[list[Any], int]:
    """The messages with image blocks left out, and how many there were (for estimates:
    the base64 of a 5 MB image is no measure of its tokens)."""
    kept: list[Any] = []
    count = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if type(content) is list:
            blocks = [b for b in content if not (type(b) is dict and b.get("type") in _BLOCK_TYPES)]
            count += len(content) - len(blocks)
            message = {**message, "content": blocks}
        kept.append(message)
    return kept, count
