"""Response bodies: Content-Encoding decoded with bounded output, and the size cap.

The client feeds raw chunks as the transport yields them; `BodyDecoder` returns the
decoded bytes and raises `BodyTooLarge` as soon as their total passes the cap, so neither a
huge body nor a small gzip bomb is ever held whole. Pure: no IO, no HTTP stack.
"""

from __future__ import annotations

import zlib

from batchrunner.errors import ResponseFormatError

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
# What the client asks for (the Accept-Encoding header) and so all it decodes. httpx's own
# decoders inflate each chunk without bound (a 16 KiB gzip chunk can become 16 MB, and a
# `gzip, gzip` body squares that), so they are bypassed.
ACCEPT_ENCODING = "gzip, deflate"
_WBITS = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}


class BodyTooLarge(Exception):
    """The decoded body passed the cap; what was read so far is dropped."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        super().__init__(f"larger than {cap:,} bytes")


def too_large_by_length(headers: dict[str, str], cap: int) -> bool:
    """A Content-Length over the cap on an unencoded body: refuse before reading a byte.

    An encoded body's length says little about its decoded size, so those are counted.
    """
    length = headers.get("content-length", "")
    encoding = headers.get("content-encoding", "").strip().lower()
    return length.isdigit() and int(length) > cap and encoding in ("", "identity")


class BodyDecoder:
    """Decodes one response body chunk by chunk and counts the decoded bytes against `cap`.

    One layer of gzip or deflate (what `ACCEPT_ENCODING` asks for) or none; anything else
    is a malformed answer. Inflating is done in steps of at most `STEP` bytes, so a chunk
    of a gzip bomb (a 16 KiB chunk can hold 16 MB) never exists inflated at once, and it
    stops one byte past the cap: memory stays within the cap plus one step.
    """

    STEP = 1 << 20

    __slots__ = ("_inflate", "_raw_deflate", "cap", "size")

    def __init__(self, content_encoding: str, cap: int) -> None:
        self.cap = cap
        self.size = 0
        codings = [c.strip().lower() for c in content_encoding.split(",")]
        codings = [c for c in codings if c and c != "identity"]
        self._inflate: zlib._Decompress | None = None
        self._raw_deflate = False
        if not codings:
            return
        if len(codings) > 1 or codings[0] not in _WBITS:
            raise ResponseFormatError(
                f"unsupported Content-Encoding {content_encoding!r} "
                f"(the request accepted {ACCEPT_ENCODING})",
            )
        self._inflate = zlib.decompressobj(_WBITS[codings[0]])
        self._raw_deflate = codings[0] == "deflate"  # may turn out to lack the zlib header

    def feed(self, chunk: bytes) -> list[bytes]:
        """The decoded pieces of one raw chunk; raises BodyTooLarge past the cap."""
        if self._inflate is None:
            self.size += len(chunk)
            if self.size > self.cap:
                raise BodyTooLarge(self.cap)
            return [chunk]
        pieces = []
        while chunk:
            piece, chunk = self._decompress(chunk)
            if piece:
                pieces.append(piece)
        return pieces

    def flush(self) -> bytes:
        """What the decompressor still holds once the body has ended."""
        if self._inflate is None:
            return b""
        # All input was consumed within the bound, so what is left is a few bytes at most.
        tail = self._inflate.flush()
        self.size += len(tail)
        if self.size > self.cap:
            raise BodyTooLarge(self.cap)
        return tail

    def _decompress(self, chunk: bytes) -> tuple[bytes, bytes]:
        """One bounded step: (decoded piece, input left for the next step)."""
        assert self._inflate is not None
        room = min(self.STEP, self.cap - self.size + 1)  # one byte over the cap tells
        try:
            piece = self._inflate.decompress(chunk, room)
        except zlib.error as exc:
            if self._raw_deflate:
                # Some servers send raw deflate (no zlib header) as "deflate"; httpx and
                # browsers accept both.
                self._raw_deflate = False
                self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
                return self._decompress(chunk)
            raise ResponseFormatError(f"the body does not decode: {exc}") from exc
        self._raw_deflate = False  # the header was fine: no second guess later
        self.size += len(piece)
        if self.size > self.cap:
            raise BodyTooLarge(self.cap)
        return piece, self._inflate.unconsumed_tail
