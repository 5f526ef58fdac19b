"""Server-sent events: bytes in, `SSEEvent`s out, incrementally (WHATWG event-stream rules).

Pure: it never reads a socket. The client feeds it whatever chunks the transport yields;
the protocol assemblers consume the events. It knows nothing about JSON or either API.
"""

from __future__ import annotations

from dataclasses import dataclass

from batchrunner.errors import ResponseFormatError

_BOM = "\ufeff"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event: its `event:` name (None when the stream sent none) and data."""

    event: str | None
    data: str


class SSEDecoder:
    """Turns a byte stream into events, whatever the chunk boundaries.

    Lines end with `\\n`, `\\r\\n` or `\\r`. Line terminators are ASCII, and bytes of a
    multi-byte UTF-8 character are all >= 0x80, so splitting on bytes before decoding is
    safe; each complete line is then decoded strictly, which catches corrupt streams.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._skip_lf = False  # the last chunk ended on "\r": a "\n" opening the next is its pair
        self._first_line = True
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume one chunk and return the events it completed (often none)."""
        if not chunk:
            return []
        if self._skip_lf and chunk[0] == 0x0A:
            chunk = chunk[1:]
        self._skip_lf = False
        self._buffer += chunk
        events: list[SSEEvent] = []
        start = 0
        buf = self._buffer
        size = len(buf)
        while start < size:
            lf = buf.find(b"\n", start)
            cr = buf.find(b"\r", start, lf if lf >= 0 else size)
            if cr >= 0:
                end, nxt = cr, cr + 1
                if nxt < size:
                    if buf[nxt] == 0x0A:
                        nxt += 1
                else:
                    self._skip_lf = True  # the "\n" of a "\r\n" may be in the next chunk
            elif lf >= 0:
                end, nxt = lf, lf + 1
            else:
                break
            self._line(bytes(buf[start:end]), events)
            start = nxt
        del buf[:start]
        return events

    def flush(self) -> list[SSEEvent]:
        """End of stream: an unterminated last line and a pending event are dispatched.

        Proxies often drop the final blank line; a stream cut inside a line is still caught
        downstream, because the truncated data does not parse as JSON.
        """
        events: list[SSEEvent] = []
        if self._buffer:
            self._line(bytes(self._buffer), events)
            self._buffer.clear()
        self._line(b"", events)
        self._skip_lf = False
        return events

    def _line(self, raw: bytes, events: list[SSEEvent]) -> None:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ResponseFormatError(f"stream is not valid UTF-8: {exc}") from exc
        if self._first_line:
            self._first_line = False
            line = line.removeprefix(_BOM)
        if not line:
            if self._data:
                events.append(SSEEvent(self._event, "\n".join(self._data)))
            self._event = None
            self._data = []
            return
        if line[0] == ":":
            return  # a comment; servers send them as keep-alives
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        # "id", "retry" and unknown fields carry nothing a one-shot request needs.
