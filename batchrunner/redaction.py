"""Keep the API key out of everything the server sends back: the one place secrets are cut.

The client runs every server-supplied value through a `Redactor` before anything else sees
it: body bytes and stream events as they arrive (so no later truncation can split the key
and leave half of it), header values, and every server-supplied field of a `RequestError`
as it is made (`responses.classify`, the client's error boundary). `redact` also catches
key-shaped words in prose (an echo of a different key, or OpenAI's `sk-abc***xyz`). Pure:
no IO.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from batchrunner.errors import RequestError
    from batchrunner.records import JSONObject

REDACTED = "[redacted]"
# A real key is 40+ characters. A shorter one (`CAICAINI_API_KEY=dry` against the fake API)
# cannot be told from ordinary words, and replacing it would corrupt answers that use them.
MIN_SECRET_LEN = 8
# Key-shaped words (`sk-…`, `key_…`) and bearer tokens, in case a server echoes one back.
_SECRET = re.compile(
    r"(?i)\b(?:bearer\s+\S+|(?:sk|pk|rk|key|api|token)[-_][A-Za-z0-9._*\-]{6,})",
)


def redact(text: str) -> str:
    """`text` with anything shaped like a key or a bearer token replaced by `[redacted]`.

    For prose only (error messages): it would also hit words like `api-reference`, so it
    is never applied to answers, types or ids.
    """
    return _SECRET.sub(REDACTED, text)


# Header names seen -> their lower-case text. A server sends the same score of names in
# every answer; decoding them anew cost ~1 µs per answer. Bounded, against one that makes
# names up.
_NAMES: dict[bytes, str] = {}
_MAX_NAMES = 1024


def _name(raw: bytes) -> str:
    name = raw.decode("latin-1").lower()
    if len(_NAMES) < _MAX_NAMES:
        _NAMES[raw] = name
    return name


class Redactor:
    """Replaces one secret (the run's key) wherever the server echoed it."""

    __slots__ = ("_bytes", "secret")

    def __init__(self, secret: str) -> None:
        self.secret = secret if len(secret) >= MIN_SECRET_LEN else ""
        self._bytes = self.secret.encode()

    def raw(self, data: bytes) -> bytes:
        """Body bytes as received; `in` first, because it is cheap and almost always False."""
        if self._bytes and self._bytes in data:
            return data.replace(self._bytes, REDACTED.encode())
        return data

    def text(self, value: str) -> str:
        """An id, a type or an answer: the exact key only, nothing that merely looks like one."""
        if self.secret and self.secret in value:
            return value.replace(self.secret, REDACTED)
        return value

    def optional(self, value: str | None) -> str | None:
        return None if value is None else self.text(value)

    def prose(self, value: str) -> str:
        """A message from the server: the key, and anything key-shaped."""
        return redact(self.text(value))

    def headers(self, pairs: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
        """Raw header pairs -> {lower-case name: value}, values redacted.

        Decoded from the raw bytes: httpx's items() re-detects the encoding per header
        (~0.05 ms per response). Names are decoded once per process (`_name`).
        """
        names = _NAMES
        headers = {(names.get(k) or _name(k)): v.decode("latin-1") for k, v in pairs}
        if self.secret:
            for name, value in headers.items():
                if self.secret in value:
                    headers[name] = value.replace(self.secret, REDACTED)
        return headers

    def stored(self, body: JSONObject, text: str | None) -> tuple[JSONObject, str]:
        """A body that will be stored, and its JSON text, with the key gone even if escaped.

        `text` is the body as received (already through `raw`), or None for an assembled
        stream, which is serialised here. A `\\u0073k-…` escape hides the key from a byte
        search but not from whoever decodes the stored JSON, so a received body with `\\u`
        escapes is compared in decoded form; only such bodies pay for it (one dumps).
        """
        if text is None or (self.secret and "\\u" in text):
            canonical = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
            if self.secret and self.secret in canonical:
                text = canonical.replace(self.secret, REDACTED)
                return json.loads(text), text
            return body, text if text is not None else canonical
        return body, text

    def error(
        self,
        exc: RequestError,
        *,
        http_status: int | None = None,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> RequestError:
        """The same error made anew with every server-supplied field redacted; the status,
        request id and headers given fill in what it lacks (the answer it is about).

        The client's error boundary completes the errors raised below it this way.
        """
        return exc.remade(
            error_type=self.text(exc.error_type),
            message=self.prose(exc.message),
            http_status=exc.http_status if exc.http_status is not None else http_status,
            request_id=self.optional(exc.request_id or request_id),
            code=self.optional(exc.code),
            headers={k: self.text(v) for k, v in (exc.headers or headers or {}).items()},
        )
