"""No id twice among the rows of results.parquet, checked in memory that does not grow.

Each id is kept as a 64-bit hash (Python's own string hash, seeded per process: every hash
here is made and compared in this one process), filed by its low bits into one of a few
partitions of about PARTITION_ROWS hashes each. A partition's hashes go to its own
anonymous temporary file in the run dir as they come (no name, so nothing is left behind,
even by a crash); at the end each partition is read back and sorted alone. A hash seen
twice is then confirmed against the ids themselves, read again from what was written, so
a collision of two hashes is never reported as a duplicate. Memory: about SPILL_ROWS
hashes per partition while streaming (4 MB at most), one partition (512 KB, up to 16 M
rows) while sorting.

The validation pass (inputs/validation.py) checks the input's ids the same way, in memory;
this is the assembly's check, against a run dir changed under the run.
"""

from __future__ import annotations

import tempfile
from array import array
from typing import IO, TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

# Hashes per partition when the partitions are sorted, at most about (512 KB; sorting one
# takes a few times that): at 1 << 20 the sort of a 1 M-row run's one partition added
# ~23 MiB to the run's peak RSS, at its very end (1 << 16: ~4 MiB). Beyond MAX_PARTITIONS
# (16 M rows) the partitions grow instead: each keeps a temporary file open.
PARTITION_ROWS = 1 << 16
MAX_PARTITIONS = 256
SPILL_ROWS = 1 << 11  # hashes a partition holds before they go to its file (16 KB; 4 MB in all)


class IdCheck:
    """Collects the ids written (`add`), then names those that occur twice (`duplicates`).

    `expected`: about how many ids will come (it sizes the partitions; more is fine).
    `directory`: where the temporary files go (the run dir: same disk as the results).
    `digest`, for tests: a weak hash forces collisions.
    """

    def __init__(
        self, expected: int, directory: Path, *, digest: Callable[[object], int] = hash
    ) -> None:
        partitions = 1
        while partitions * PARTITION_ROWS < expected and partitions < MAX_PARTITIONS:
            partitions *= 2
        self._mask = partitions - 1
        self._held = [array("q") for _ in range(partitions)]
        self._files: list[IO[bytes] | None] = [None] * partitions
        self._directory = directory
        self._digest = digest
        self.rows = 0

    def add(self, ids: pa.ChunkedArray | pa.Array) -> None:
        """File these ids' hashes (a window of rows: a few thousand at a time)."""
        held, mask, digest = self._held, self._mask, self._digest
        values = ids.to_pylist()
        self.rows += len(values)
        for row_id in values:
            value = digest(row_id)
            held[value & mask].append(value)
        for k, hashes in enumerate(held):
            if len(hashes) >= SPILL_ROWS:
                self._spill(k)

    def _spill(self, k: int) -> None:
        file = self._files[k]
        if file is None:
            # open across add() calls, closed by _repeated() or close()
            file = self._files[k] = tempfile.TemporaryFile(dir=self._directory)  # noqa: SIM115
        self._held[k].tofile(file)
        self._held[k] = array("q")

    def _repeated(self) -> set[int]:
        """The hashes filed more than once: per partition, a sort and an adjacent check."""
        found: set[int] = set()
        for k in range(len(self._held)):
            hashes = array("q")
            file, self._files[k] = self._files[k], None
            if file is not None:
                with file:
                    file.seek(0)
                    hashes.frombytes(file.read())
            hashes.extend(self._held[k])
            self._held[k] = array("q")
            count = len(hashes)
            if count < 2:
                continue
            values = pa.Array.from_buffers(pa.int64(), count, [None, pa.py_buffer(hashes)])
            values = values.sort()
            following, preceding = values.slice(1), values.slice(0, count - 1)
            same = pc.equal(following, preceding)
            if pc.any(same).as_py():
                found.update(pc.filter(following, same).unique().to_pylist())
        return found

    def duplicates(self, written: Iterable[pa.Array]) -> dict[str, int]:
        """Ids that occur more than once, with their counts, in the order first written.

        `written` gives the ids again, as written (called only when two hashes match:
        in practice, only when an id does repeat). Consumes the collected hashes.
        """
        repeated = self._repeated()
        if not repeated:
            return {}
        counts: dict[str, int] = {}
        digest = self._digest
        for chunk in written:
            for row_id in chunk.to_pylist():
                if digest(row_id) in repeated:
                    counts[row_id] = counts.get(row_id, 0) + 1
        return {row_id: n for row_id, n in counts.items() if n > 1}

    def close(self) -> None:
        """Drop the temporary files (idempotent)."""
        for k, file in enumerate(self._files):
            if file is not None:
                file.close()
                self._files[k] = None
