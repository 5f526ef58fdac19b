"""The two API conventions behind one `Protocol` interface, looked up by `--api` name.

Pure: building requests and reading responses and streams. Sending is `client`'s job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from batchrunner.protocols.base import Protocol, StreamAssembler, parse_error_body
from batchrunner.protocols.chat import CHAT, ChatAssembler, ChatProtocol
from batchrunner.protocols.fields import REQUEST_FIELDS
from batchrunner.protocols.messages import MESSAGES, MessagesAssembler, MessagesProtocol

if TYPE_CHECKING:
    from batchrunner.records import Api

PROTOCOLS: dict[Api, Protocol] = {"messages": MESSAGES, "chat": CHAT}


def get_protocol(api: Api) -> Protocol:
    """The protocol for a convention name; KeyError names the known ones."""
    try:
        return PROTOCOLS[api]
    except KeyError:
        raise KeyError(f"unknown api {api!r}; known: {', '.join(PROTOCOLS)}") from None


__all__ = [
    "CHAT",
    "MESSAGES",
    "PROTOCOLS",
    "REQUEST_FIELDS",
    "ChatAssembler",
    "ChatProtocol",
    "MessagesAssembler",
    "MessagesProtocol",
    "Protocol",
    "StreamAssembler",
    "get_protocol",
    "parse_error_body",
]
