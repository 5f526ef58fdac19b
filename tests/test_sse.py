"""SSEDecoder: event-stream framing, whatever the chunk boundaries."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchrunner.errors import RetryableError
from batchrunner.sse import SSEDecoder, SSEEvent

GOLDEN = Path(__file__).parent / "golden"
STREAMS = ["messages_stream.sse", "chat_stream.sse"]


def decode(*chunks: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.flush())
    return events


def one_byte_at_a_time(raw: bytes) -> list[SSEEvent]:
    return decode(*(raw[i : i + 1] for i in range(len(raw))))


@pytest.mark.parametrize("name", STREAMS)
@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_golden_stream_same_events_in_any_chunking(name: str, newline: bytes) -> None:
    """A golden stream gives the same events in one piece, byte by byte, or in odd chunks."""
    raw = (GOLDEN / name).read_bytes().replace(b"\n", newline)
    whole = decode(raw)
    assert whole == one_byte_at_a_time(raw)
    assert whole == decode(*(raw[i : i + 7] for i in range(0, len(raw), 7)))
    assert whole == decode(raw, b"")  # an empty chunk changes nothing


def test_messages_golden_events() -> None:
    """The messages golden stream yields named events, comments and id/retry left out."""
    events = decode((GOLDEN / "messages_stream.sse").read_bytes())
    names = [event.event for event in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert len(events) == 23
    assert "héllo — " in events[10].data
    assert all(not event.data.startswith(":") for event in events)


def test_chat_golden_events_have_no_names() -> None:
    """The chat golden stream is data-only and ends with [DONE]."""
    events = decode((GOLDEN / "chat_stream.sse").read_bytes())
    assert {event.event for event in events} == {None}
    assert events[-1] == SSEEvent(None, "[DONE]")
    assert len(events) == 12


def test_split_inside_multibyte_character() -> None:
    """A chunk boundary inside a UTF-8 character does not corrupt the text."""
    raw = "data: héllo — 日本\n\n".encode()
    cut = raw.index("日".encode()) + 1
    assert decode(raw[:cut], raw[cut:]) == [SSEEvent(None, "héllo — 日本")]


def test_crlf_split_between_cr_and_lf() -> None:
    """A \\r\\n split across chunks is one line ending, not two."""
    assert decode(b"data: a\r", b"\ndata: b\r", b"", b"\n\r\n") == [SSEEvent(None, "a\nb")]


def test_cr_only_line_endings() -> None:
    """A bare \\r ends a line, and \\r\\r is a blank line that dispatches."""
    assert decode(b"event: x\rdata: 1\r\rdata: 2\r\r") == [
        SSEEvent("x", "1"),
        SSEEvent(None, "2"),
    ]


def test_multiple_data_lines_are_joined_with_newline() -> None:
    """Several data lines of one event join with \\n."""
    assert decode(b"data: one\ndata:two\ndata\n\n") == [SSEEvent(None, "one\ntwo\n")]


def test_only_one_space_after_colon_is_stripped() -> None:
    """The single optional space after the colon goes; further spaces stay."""
    assert decode(b"data:  x \nevent:e\n\n") == [SSEEvent("e", " x ")]


def test_comments_ids_retry_and_unknown_fields_are_ignored() -> None:
    """Comment lines and the id, retry and unknown fields add nothing to an event."""
    raw = b": hello\nid: 5\nretry: 10\nfoo: bar\ndata: d\n:another\n\n"
    assert decode(raw) == [SSEEvent(None, "d")]


def test_event_without_data_is_not_dispatched() -> None:
    """An event with no data lines dispatches nothing and its name does not leak."""
    assert decode(b"event: lonely\n\ndata: x\n\n") == [SSEEvent(None, "x")]


def test_empty_data_line_dispatches_empty_event() -> None:
    """A bare `data:` line is a data line: the event has empty data."""
    assert decode(b"event: e\ndata:\n\n") == [SSEEvent("e", "")]


def test_events_are_returned_as_soon_as_complete() -> None:
    """feed returns an event on the blank line that ends it, not later."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n") == []
    assert decoder.feed(b"\ndata: b") == [SSEEvent(None, "a")]
    assert decoder.feed(b"\n") == []
    assert decoder.flush() == [SSEEvent(None, "b")]


def test_flush_dispatches_unterminated_last_line() -> None:
    """At end of stream an unterminated data line still completes its event."""
    assert decode(b"data: [DONE]") == [SSEEvent(None, "[DONE]")]


def test_flush_after_clean_end_is_empty() -> None:
    """flush after a final blank line returns nothing."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\n") == [SSEEvent(None, "a")]
    assert decoder.flush() == []


def test_leading_bom_is_stripped() -> None:
    """A UTF-8 byte-order mark before the first line is not part of the field name."""
    assert decode(b"\xef\xbb\xbfdata: x\n\n") == [SSEEvent(None, "x")]


def test_invalid_utf8_is_a_retryable_invalid_response() -> None:
    """Bytes that are not UTF-8 make the stream invalid, so the request is retried."""
    with pytest.raises(RetryableError) as info:
        decode(b"data: \xff\xfe\n\n")
    assert info.value.error_type == "invalid_response"


def test_truncated_multibyte_character_at_end_is_invalid() -> None:
    """A stream cut inside a UTF-8 character is invalid at flush."""
    decoder = SSEDecoder()
    assert decoder.feed("data: 日".encode()[:-1]) == []
    with pytest.raises(RetryableError):
        decoder.flush()
