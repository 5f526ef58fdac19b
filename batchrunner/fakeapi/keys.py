"""Typed per-request storage keys shared by the routes (aiohttp >= 3.14 `web.RequestKey`).

Plain string keys would raise NotAppKeyWarning on every request. Nothing else lives here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from batchrunner.fakeapi.shapes import Convention

CONV: web.RequestKey[Convention] = web.RequestKey("fakeapi_conv")
REQUEST_ID = web.RequestKey("fakeapi_request_id", str)
DROPPED = web.RequestKey("fakeapi_dropped", bool)  # connection gone: nothing to count or send
# The request log entry of a generation request: `send` stamps its "done" time.
LOG_ENTRY = web.RequestKey("fakeapi_log_entry", dict)
