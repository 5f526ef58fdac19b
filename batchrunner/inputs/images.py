"""The images a simple row names: local files, https:// URLs and data: URIs.

`rows.RowMaker` keeps a row's references as strings in `body["images"]`, local paths
joined to the image directory. The validation pass checks every one (`ImageCheck`: the
file exists, is PNG, JPEG, GIF or WebP by its bytes, is within the API's size limit) and
hashes each file once, for the run's fingerprint; it keeps no image. A run reads a row's
files only as its request is built (`request_for`), so only the rows in flight hold
image bytes. Both hand the protocols the same neutral form: `{"media_type", "data"}`
(base64) or `{"url"}`, which `protocols.images` turns into the convention's blocks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from batchrunner.errors import SourceError
from batchrunner.records import json_kind

if TYPE_CHECKING:
    from batchrunner.protocols import Protocol
    from batchrunner.records import Api, JSONObject, Request, Row
    from batchrunner.spec import RequestSpec
    from batchrunner.uris import Source

MB = 1024 * 1024
# The largest image file each convention's API takes (Anthropic: 5 MB per image;
# OpenAI: 20 MB per image), counted on the file's bytes, before base64.
MAX_BYTES: dict[Api, int] = {"messages": 5 * MB, "chat": 20 * MB}
MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")  # what both take
_KINDS = "PNG, JPEG, GIF or WebP"
_HEAD = 12  # bytes sniff() needs


def sniff(head: bytes) -> str | None:
    """The media type of an image by its first bytes (magic numbers), not its name."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_refs(value: object, name: str, where: str, folder: Path | None) -> list[str]:
    """A row's images (a list of strings, or one string: a CSV cell) as references,
    relative local paths joined to `folder`; SourceError for anything else. Pure."""
    items = [value] if type(value) is str else value
    if type(items) is not list or not items:
        raise SourceError(where, f"{name} must be a list of paths or URLs, got {json_kind(value)}")
    refs: list[str] = []
    for i, item in enumerate(items):
        if type(item) is not str or not item:
            shown = "an empty string" if item == "" else json_kind(item)
            raise SourceError(where, f"{name}[{i}] must be a path or URL, got {shown}")
        if item.startswith("http://"):
            raise SourceError(where, f"{name}[{i}]: only https:// URLs are sent, got {item!r}")
        local = not item.startswith(("https://", "data:"))
        refs.append(str(folder / item) if local and folder is not None else item)
    return refs


class ImageCheck:
    """The validation pass's check of every row's images, and the digest of their files.

    The digest (sha256 over each local file's absolute path, size and content sha256, in
    row order)
    goes into the run's fingerprint: a resume after an image changed is refused.
    """

    def __init__(self, api: Api, name: str) -> None:
        """`name`: the row field holding the images, for messages."""
        self._limit = MAX_BYTES[api]
        self._api = api
        self._name = name
        self._digest = hashlib.sha256()
        self.files = 0

    @property
    def digest(self) -> str | None:
        """The files' digest; None when no row named a local file."""
        return self._digest.hexdigest() if self.files else None

    def check(self, refs: list[str], where: str) -> list[JSONObject]:
        """The neutral form of each image, a file's data left empty (only its type and
        size matter to the body's checks); SourceError naming the image otherwise."""
        out: list[JSONObject] = []
        for i, ref in enumerate(refs):
            label = _label(self._name, i, ref)
            if ref.startswith(("https://", "data:")):
                out.append(_inline(ref, self._limit, self._api, label, where))
                continue
            media_type, size, sha = self._file(ref, label, where)
            # The absolute path: the same file named from another directory is the same.
            absolute = os.path.abspath(ref)  # noqa: PTH100 (no symlinks resolved: no IO)
            self._digest.update(f"{absolute}\0{size}\0{sha}\n".encode(errors="surrogatepass"))
            self.files += 1
            out.append({"media_type": media_type, "data": ""})
        return out

    def _file(self, ref: str, label: str, where: str) -> tuple[str, int, str]:
        try:
            file = Path(ref)
            info = file.stat()
            if not stat.S_ISREG(info.st_mode):  # opening a FIFO would wait for a writer
                raise SourceError(where, f"{label}: not a regular file")
            with file.open("rb") as handle:
                media_type = _media_type(handle.read(_HEAD), label, where)
                _check_size(info.st_size, self._limit, self._api, label, where)
                handle.seek(0)
                sha = hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError as exc:
            raise SourceError(where, f"{label}: {_os_reason(exc)}") from None
        return media_type, info.st_size, sha


def load_images(row: Row, api: Api, name: str = "images") -> Row:
    """`row` with its images read: files as base64, URLs as they are. SourceError if a
    file changed since validation into something the API would refuse. `name`: the row
    field holding them, for messages."""
    refs = row.body["images"]
    limit = MAX_BYTES[api]
    images: list[JSONObject] = []
    for i, ref in enumerate(refs):
        label = _label(name, i, ref)
        if ref.startswith(("https://", "data:")):
            images.append(_inline(ref, limit, api, label, row.where))
            continue
        try:
            file = Path(ref)
            info = file.stat()
            if not stat.S_ISREG(info.st_mode):  # validated a file: replaced since
                raise SourceError(row.where, f"{label}: not a regular file")
            # Stat before reading: a file grown past the limit is never read whole.
            _check_size(info.st_size, limit, api, label, row.where)
            with file.open("rb") as handle:
                data = handle.read(limit + 1)
        except OSError as exc:
            raise SourceError(row.where, f"{label}: {_os_reason(exc)}") from None
        _check_size(len(data), limit, api, label, row.where)
        media_type = _media_type(data[:_HEAD], label, row.where)
        images.append({"media_type": media_type, "data": base64.b64encode(data).decode()})
    return replace(row, body={**row.body, "images": images})


async def request_for(protocol: Protocol, row: Row, defaults: RequestSpec) -> Request:
    """The request for `row`, its image files read in a worker thread (a few MB each:
    the event loop must not wait on the disk)."""
    if row.shape == "simple" and row.body.get("images"):
        name = defaults.image_column or "images"
        row = await anyio.to_thread.run_sync(load_images, row, protocol.name, name)
    return protocol.build_request(row, defaults, stream=defaults.stream)


def _inline(ref: str, limit: int, api: Api, label: str, where: str) -> JSONObject:
    """A URL as it is; a data: URI checked (a supported type, base64, the bytes of the
    type it says, within the limit) and split into its type and data."""
    if ref.startswith("https://"):
        return {"url": ref}
    header, comma, data = ref.partition(",")
    media_type = header.removeprefix("data:").removesuffix(";base64")
    if not comma or not header.endswith(";base64") or media_type not in MEDIA_TYPES:
        raise SourceError(
            where,
            f"{label}: a data: URI must be data:TYPE;base64,... with TYPE one of "
            f"{', '.join(MEDIA_TYPES)}",
        )
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise SourceError(where, f"{label}: the data: URI holds invalid base64") from None
    if sniff(raw[:_HEAD]) != media_type:
        raise SourceError(where, f"{label}: the data is not the {media_type} it says it is")
    _check_size(len(raw), limit, api, label, where)
    return {"media_type": media_type, "data": data}


def _label(name: str, i: int, ref: str) -> str:
    """How a message names an image: a path or URL whole; a data: URI, which can be
    megabytes long, by its start."""
    shown = ref[:40] + "..." if ref.startswith("data:") and len(ref) > 43 else ref
    return f"{name}[{i}] {shown}"


def _media_type(head: bytes, label: str, where: str) -> str:
    media_type = sniff(head)
    if media_type is None:
        raise SourceError(where, f"{label}: not a {_KINDS} image (judged by its bytes)")
    return media_type


def _check_size(size: int, limit: int, api: Api, label: str, where: str) -> None:
    if size > limit:
        raise SourceError(
            where,
            f"{label}: {size / MB:.1f} MB, over the {limit // MB} MB the {api} API takes per image",
        )


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    return f"cannot read: {exc.strerror or exc}"


def image_folder(path: Source, given: Path | None) -> Path:
    """Where a row's relative image paths start: `given` (the current directory for stdin
    and rows given to the Python API), else a local input's own directory, else (a remote
    input: images are read from this machine) the current directory."""
    if given is not None:
        return given
    if not isinstance(path, Path):
        return Path.cwd()
    return path if path.is_dir() else path.parent
