"""Shards: which rows of an input `--shard I/N` runs, by a hash of each row's id.

Row with id X belongs to shard `int.from_bytes(sha256(X.encode("utf-8")).digest()[:8],
"big") % N`: the first 8 bytes of the SHA-256 of the UTF-8 id, as a big-endian unsigned
integer, modulo N. SHA-256 because it is the same on every machine, Python version and
run (Python's own `hash()` is seeded per process), and because other tools (SQL engines,
`sha256sum`) can compute the same split. Pure: no IO.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_SPEC = re.compile(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*")
MAX_SHARDS = 1_000_000  # beyond this a shard is a few rows: a typo, not a plan


def shard_of(row_id: str, count: int) -> int:
    """The shard (0 .. count-1) that the row with id `row_id` belongs to."""
    digest = hashlib.sha256(row_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard `index` of `count`; `str()` gives the `I/N` form the flag takes."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, row_id: str) -> bool:
        """True when the row with this id belongs to this shard."""
        return shard_of(row_id, self.count) == self.index


def parse_shard(text: object) -> Shard:
    """`"I/N"` as a Shard; ValueError saying what is wrong (0 <= I < N is required)."""
    match = _SPEC.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"shard must look like I/N (say 0/3), not {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if not 1 <= count <= MAX_SHARDS:
        raise ValueError(f"shard {text!r}: N must be between 1 and {MAX_SHARDS}")
    if index >= count:
        raise ValueError(f"shard {text!r}: I must be below N (shards are numbered 0 to N-1)")
    return Shard(index, count)
