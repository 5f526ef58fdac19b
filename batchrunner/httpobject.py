"""An object read over `https://` (a web server, a pre-signed S3 or GCS URL): HEAD for its
size, ETag and Last-Modified, ranged GETs for random access (Parquet), one GET for a stream.

Why httpx and not fsspec: httpx is the client the API calls use already, and through
`network` these reads take the same proxy (`HTTPS_PROXY`, `NO_PROXY`, ...) and CA bundle
(`SSL_CERT_FILE`, `SSL_CERT_DIR`) as the run's API calls; no extra package. Redirects are
followed (a pre-signed URL may send one). No message quotes the URL as given: `str(uri)`
drops its query string, where a signature lives, and httpx's own texts (which quote the
URL) are never shown.
"""

from __future__ import annotations

import io
import os
import ssl
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

import httpx

from batchrunner.errors import SourceError
from batchrunner.network import proxy_for, ssl_context

if TYPE_CHECKING:
    from collections.abc import Iterator

    from batchrunner.uris import Uri

_TIMEOUT = httpx.Timeout(60.0, connect=30.0)


@dataclass(frozen=True, slots=True)
class Head:
    """What a HEAD request tells of the object."""

    size: int
    etag: str | None
    mtime_ns: int | None


def client(uri: Uri) -> httpx.Client:
    """A client for `uri`: the environment's proxy and CAs, as the API calls have them."""
    proxy = proxy_for(uri.text, os.environ)
    mounted = None
    if proxy is not None:
        headers = {"Proxy-Authorization": proxy.authorization} if proxy.authorization else None
        mounted = httpx.Proxy(proxy.url, headers=headers)
    return httpx.Client(
        proxy=mounted,
        verify=ssl_context(os.environ),
        trust_env=False,  # `network` read the environment, by the API calls' rules
        follow_redirects=True,
        timeout=_TIMEOUT,
    )


def head(uri: Uri, http: httpx.Client) -> Head:
    """Size, ETag and mtime (Last-Modified) of the object; SourceError when it cannot be had."""
    response = _send(uri, http, "HEAD")
    length = response.headers.get("content-length")
    if length is None or not length.isdigit():
        raise SourceError(str(uri), "the server gives no Content-Length: cannot read it")
    modified = response.headers.get("last-modified")
    mtime_ns = None
    if modified:
        try:
            mtime_ns = int(parsedate_to_datetime(modified).timestamp()) * 1_000_000_000
        except (TypeError, ValueError):
            mtime_ns = None  # not a date: the size, ETag and hashes still tell
    return Head(size=int(length), etag=response.headers.get("etag"), mtime_ns=mtime_ns)


def _send(
    uri: Uri, http: httpx.Client, method: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    try:
        response = http.request(method, uri.text, headers=headers)
    except httpx.HTTPError as exc:
        raise SourceError(str(uri), f"cannot read: {_reason(exc)}") from None
    if response.status_code == 404:
        raise SourceError(str(uri), "no such object (HTTP 404)")
    if response.status_code >= 400:
        raise SourceError(str(uri), f"cannot read: HTTP {response.status_code}")
    return response


def _reason(exc: httpx.HTTPError) -> str:
    """What went wrong, without httpx's message, which may quote the URL and its signature:
    an untrusted certificate says so (and what to do), anything else by its class name."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"TLS certificate not trusted ({cause.verify_message}); set SSL_CERT_FILE "
                "to the CA bundle that signed it"
            )
        cause = cause.__cause__ or cause.__context__
    return type(exc).__name__


class RangeFile(io.RawIOBase):
    """A read-only, seekable file of the object: each read one ranged GET."""

    def __init__(self, uri: Uri) -> None:
        super().__init__()
        self._uri = uri
        self._http = client(uri)
        try:
            self.size = head(uri, self._http).size
        except BaseException:
            self._http.close()
            raise
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._pos >= self.size or len(buffer) == 0:
            return 0
        end = min(self._pos + len(buffer), self.size) - 1
        response = _send(self._uri, self._http, "GET", {"Range": f"bytes={self._pos}-{end}"})
        data = response.content
        if response.status_code != 206:  # a server that ignores Range sends everything
            if self._pos != 0 or len(data) != self.size:
                raise SourceError(str(self._uri), "the server does not serve byte ranges")
            data = data[: end + 1]
        count = len(data)
        buffer[:count] = data
        self._pos += count
        return count

    def close(self) -> None:
        self._http.close()
        super().close()


class StreamFile(io.RawIOBase):
    """The object's body as one sequential stream (one GET, read as it arrives)."""

    def __init__(self, uri: Uri) -> None:
        super().__init__()
        self._uri = uri
        self._http = client(uri)
        try:
            request = self._http.build_request("GET", uri.text)
            self._response = self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            self._http.close()
            raise SourceError(str(uri), f"cannot read: {_reason(exc)}") from None
        if self._response.status_code >= 400:
            status = self._response.status_code
            self.close()
            raise SourceError(str(uri), f"cannot read: HTTP {status}")
        self._chunks: Iterator[bytes] = self._response.iter_bytes()
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            while not self._left:
                chunk = next(self._chunks, None)
                if chunk is None:
                    return 0
                self._left = chunk
        except httpx.HTTPError as exc:
            raise OSError(f"reading {self._uri} failed: {_reason(exc)}") from None
        count = min(len(buffer), len(self._left))
        buffer[:count] = self._left[:count]
        self._left = self._left[count:]
        return count

    def close(self) -> None:
        if hasattr(self, "_response"):
            self._response.close()
        self._http.close()
        super().close()
