"""The fake API takes image blocks on both conventions, refuses malformed ones as the real
APIs do, and logs each base64 image as its media type, size and sha256."""

from __future__ import annotations

import base64
import hashlib
from typing import TYPE_CHECKING, Any

from tests.helpers import ANTHROPIC, OPENAI, ask, chat

if TYPE_CHECKING:
    import httpx

    from tests.fakeserver import ThreadServer

DATA = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
B64 = base64.b64encode(DATA).decode()
LOGGED = {"media_type": "image/png", "bytes": len(DATA), "sha256": hashlib.sha256(DATA).hexdigest()}


def _messages(prompt: str, source: dict[str, Any]) -> dict[str, Any]:
    content = [{"type": "image", "source": source}, {"type": "text", "text": prompt}]
    return ask(prompt, messages=[{"role": "user", "content": content}])


def _chat(prompt: str, url: str) -> dict[str, Any]:
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": prompt}]
    return chat(prompt, messages=[{"role": "user", "content": content}])


def test_image_blocks_are_taken_and_logged(server: ThreadServer, client: httpx.Client) -> None:
    """A base64 block and a URL block on each convention: 200, and the log says what came."""
    sources = [
        ("/messages", _messages("m64", {"type": "base64", "media_type": "image/png", "data": B64})),
        ("/messages", _messages("murl", {"type": "url", "url": "https://example.invalid/a.png"})),
        ("/chat/completions", _chat("c64", f"data:image/png;base64,{B64}")),
        ("/chat/completions", _chat("curl", "https://example.invalid/a.png")),
    ]
    for path, body in sources:
        headers = ANTHROPIC if path == "/messages" else OPENAI
        assert client.post(path, json=body, headers=headers).status_code == 200
    logged = {e["prompt"]: e["images"] for e in server.state.log_list() if "images" in e}
    assert logged["m64"] == logged["c64"] == [LOGGED]
    assert logged["murl"] == logged["curl"] == [{"url": "https://example.invalid/a.png"}]


def test_malformed_image_blocks_are_refused(client: httpx.Client) -> None:
    """An unsupported media type or data that is not base64: 400 naming the field."""
    bad_type = {"type": "base64", "media_type": "image/bmp", "data": B64}
    res = client.post("/messages", json=_messages("x", bad_type), headers=ANTHROPIC)
    assert res.status_code == 400
    assert "media_type" in res.json()["error"]["message"]
    bad_data = {"type": "base64", "media_type": "image/png", "data": "not base64!"}
    res = client.post("/messages", json=_messages("x", bad_data), headers=ANTHROPIC)
    assert res.status_code == 400
    assert "base64" in res.json()["error"]["message"]
    res = client.post(
        "/chat/completions", json=_chat("x", "data:image/png;base64,%%"), headers=OPENAI
    )
    assert res.status_code == 400
    assert res.json()["error"]["param"] == "messages[0].content[0].image_url.url"
