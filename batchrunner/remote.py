"""Reading and writing objects in remote stores through `pyarrow.fs`; `https://` through
`httpobject` (read only).

Why pyarrow.fs and not fsspec: pyarrow is a dependency already, its S3, GCS and Azure
clients are native (C++, no extra package), and its random-access files serve Parquet's
footer-first reads as they are. Configuration is each store's standard one, read by
pyarrow itself: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
`AWS_PROFILE`, `AWS_REGION`, `AWS_ENDPOINT_URL`/`AWS_ENDPOINT_URL_S3` for S3;
`GOOGLE_APPLICATION_CREDENTIALS` for GCS; for `az://container/key`,
`AZURE_STORAGE_ACCOUNT_NAME` (and `AZURE_STORAGE_ACCOUNT_KEY`, else Azure's default
credential chain). Nothing here logs, and every message names the object by `str(uri)`,
which drops user info and query strings.

The fingerprint of a remote object (`identity`) is its size, ETag and mtime, and a sha256
of its first and last MiB: 2 MiB read, never the whole object.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from batchrunner import httpobject, stores
from batchrunner.errors import OutputError, SourceError

if TYPE_CHECKING:
    from pathlib import Path

    from batchrunner.uris import Uri

_SPAN = 1 << 20  # the head and the tail hashed for the identity
_CHUNK = 1 << 20
_QUERY = re.compile(r"\?[^\s'\"]*")


def filesystem(uri: Uri) -> tuple[Any, str]:
    """The pyarrow filesystem holding `uri`, and the object's path in it."""
    pafs = stores.load()
    try:
        if uri.scheme in ("az", "abfs", "abfss") and "@" not in uri.text.split("/")[2]:
            # `az://container/key`: the account comes from the environment, as adlfs has it.
            container_key = uri.text.split("://", 1)[1].split("?", 1)[0]
            fs = pafs.AzureFileSystem(
                account_name=os.environ.get("AZURE_STORAGE_ACCOUNT_NAME", ""),
                account_key=os.environ.get("AZURE_STORAGE_ACCOUNT_KEY") or None,
            )
            return fs, container_key
        text = uri.text.replace("gcs://", "gs://", 1).replace("az://", "abfs://", 1)
        fs, path = pafs.FileSystem.from_uri(text)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise SourceError(str(uri), f"cannot open: {safe(exc, uri)}") from None
    return fs, path


def safe(exc: BaseException, uri: Uri) -> str:
    """`exc` as text with the URI as given (it may hold a signature) replaced by `str(uri)`
    and any other query string cut."""
    return _QUERY.sub("?...", str(exc).replace(uri.text, str(uri)))


def open_file(uri: Uri) -> Any:
    """A random-access pyarrow file of the object (Parquet reads its footer first)."""
    if uri.scheme == "https":
        return pa.PythonFile(httpobject.RangeFile(uri), mode="r")
    fs, path = filesystem(uri)
    try:
        return fs.open_input_file(path)
    except FileNotFoundError:
        raise SourceError(str(uri), "no such object") from None
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(str(uri), f"cannot open: {safe(exc, uri)}") from None


def open_stream(uri: Uri) -> Any:
    """A sequential pyarrow stream of the object, .gz and .zst decompressed by the name."""
    if uri.scheme == "https":
        raw = pa.PythonFile(httpobject.StreamFile(uri), mode="r")
        codec = {".gz": "gzip", ".zst": "zstd"}.get((uri.suffixes or [""])[-1].lower())
        return pa.CompressedInputStream(raw, codec) if codec else raw
    fs, path = filesystem(uri)
    try:
        return fs.open_input_stream(path, compression="detect", buffer_size=_CHUNK)
    except FileNotFoundError:
        raise SourceError(str(uri), "no such object") from None
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(str(uri), f"cannot open: {safe(exc, uri)}") from None


def identity(uri: Uri) -> dict[str, object]:
    """The object's identity for the run fingerprint: size, ETag, mtime, and a sha256 of
    the size, the first MiB and the last MiB. Two reads of at most 1 MiB each."""
    found = _stat(uri)
    with open_file(uri) as handle:
        try:
            size = handle.size()
            digest = hashlib.sha256(size.to_bytes(8, "little"))
            digest.update(handle.read(_SPAN))
            if size > _SPAN:
                handle.seek(max(_SPAN, size - _SPAN))
                digest.update(handle.read(_SPAN))
        except (pa.ArrowException, OSError) as exc:
            raise SourceError(str(uri), f"cannot read: {safe(exc, uri)}") from None
    if size != found["size"]:
        raise SourceError(str(uri), "the object changed while it was read")
    return {"uri": str(uri), **found, "sha256": digest.hexdigest()}


def _stat(uri: Uri) -> dict[str, object]:
    """Size, ETag and mtime: what a HEAD request tells of the object (ETag and mtime
    where the store gives them)."""
    if uri.scheme == "https":
        with httpobject.client(uri) as http:
            head = httpobject.head(uri, http)
        found: dict[str, object] = {"size": head.size, "etag": head.etag, "mtime_ns": head.mtime_ns}
        return {key: value for key, value in found.items() if value is not None}
    fs, path = filesystem(uri)
    try:
        with fs.open_input_file(path) as handle:
            meta = handle.metadata() or {}
            found = {"size": handle.size()}
        info = fs.get_file_info(path)
    except FileNotFoundError:
        raise SourceError(str(uri), "no such object") from None
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(str(uri), f"cannot read: {safe(exc, uri)}") from None
    etag = meta.get(b"ETag") or meta.get("ETag")
    if etag:
        found["etag"] = etag.decode() if isinstance(etag, bytes) else str(etag)
    if info.mtime_ns is not None:
        found["mtime_ns"] = info.mtime_ns
    return found


def moved(uri: Uri, stored: dict[str, Any]) -> str | None:
    """How the object differs from `stored` (`identity`) by size, ETag and mtime: a HEAD
    request or two, cheap enough to ask every 30 s while the run reads. None if not."""
    try:
        now = _stat(uri)
    except (SourceError, pa.ArrowException, OSError) as exc:
        return f"{uri} cannot be read any more ({exc})"
    if now.get("size") != stored.get("size"):
        return f"{uri} was {stored.get('size')} bytes when the run began, {now.get('size')} now"
    if any(now.get(key) != stored.get(key) for key in ("etag", "mtime_ns")):
        return f"{uri} was replaced after the run began"
    return None


def upload(local: Path, uri: Uri) -> None:
    """Copy the local file `local` to `uri`. S3 and GCS make an object visible only when
    its upload completes, so a reader sees the old object or the whole new one."""
    if uri.scheme == "https":
        raise OutputError(f"{uri}: https:// is read only here; export to s3://, gs:// or az://")
    fs, path = filesystem(uri)
    try:
        with local.open("rb") as src, fs.open_output_stream(path) as dst:
            while chunk := src.read(_CHUNK):
                dst.write(chunk)
    except (pa.ArrowException, OSError) as exc:
        raise OutputError(f"cannot write {uri}: {safe(exc, uri)}") from None
