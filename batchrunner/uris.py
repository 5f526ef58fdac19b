"""Remote inputs and export targets named by URI: `s3://`, `gs://`, `az://`, `abfs://`,
and (inputs only) `https://`.

A URI is kept as a string from the command line to the reader: `pathlib` would fold
`s3://bucket/key` into `s3:/bucket/key`. `Uri` is the value the spec carries in place of
a Path; its `str()` is what messages show, with no user info, query string or fragment,
since a pre-signed URL carries its signature there. Pure: no IO (`remote` does that).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

# The schemes pyarrow.fs reads natively (see `remote`), "gcs" and "abfss" being the
# spellings other tools use for the same stores; and https (`httpobject`).
SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "abfss", "https")


@dataclass(frozen=True, slots=True)
class Uri:
    """An object in a remote store. `text` is the URI as given (it may hold secrets)."""

    text: str

    def __str__(self) -> str:
        parts = urlsplit(self.text)
        host = parts.netloc.rpartition("@")[2]  # no user:password@
        return f"{parts.scheme}://{host}{parts.path}"

    @property
    def scheme(self) -> str:
        return urlsplit(self.text).scheme.lower()

    @property
    def name(self) -> str:
        """The object's name: the last segment of its key."""
        return PurePosixPath(urlsplit(self.text).path).name

    @property
    def suffixes(self) -> list[str]:
        return PurePosixPath(urlsplit(self.text).path).suffixes


Source = Path | Uri  # where an input is read from


def is_uri(text: str) -> bool:
    """Whether `text` names a remote object (`scheme://...`) rather than a local path."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.isascii() and scheme.replace("+", "").isalnum()


def as_source(text: str) -> Source:
    """A URI as a `Uri`, anything else as a Path. ValueError for a scheme not read here."""
    if not is_uri(text):
        return Path(text)
    uri = Uri(text)
    if uri.scheme not in SCHEMES:
        raise ValueError(
            f"{uri}: {uri.scheme}:// is not read here; give a local path or an "
            f"{', '.join(s + '://' for s in SCHEMES)} URI"
        )
    return uri
