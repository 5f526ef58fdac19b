"""Carried-through Parquet columns, taken from the input itself when results are assembled.

The journal keeps a row's extra fields as JSON, which cannot say `binary` from a string,
nor carry a `duration`, a `map` or a `dictionary`. So a Parquet input's carried columns
are not rebuilt from that JSON: they are read again from the input, only those columns,
one batch at a time, and joined to the results by row index. Exact Arrow type and value,
in bounded memory (one input batch and one results window). The results windows come in
ascending row index, so one forward pass over the input serves them all.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

import pyarrow as pa

from batchrunner.errors import SourceError
from batchrunner.inputs.readers import BATCH_ROWS, input_files, input_format, parquet_file

if TYPE_CHECKING:
    from collections.abc import Iterator

    from batchrunner.spec import InputFormat
    from batchrunner.uris import Source


class FromInput:
    """The columns `names` of the Parquet input `path`, taken by ascending row index."""

    def __init__(self, path: Source, names: list[str]) -> None:
        self.names = names
        self._files = input_files(path)
        schemas = []
        for file in self._files:
            with parquet_file(file) as parquet:
                schemas.append(parquet.schema_arrow)
        fields = [schemas[0].field(name) for name in names]
        for schema in schemas[1:]:
            if [schema.field(name).type for name in names] != [f.type for f in fields]:
                raise ValueError("the input's Parquet files give these columns other types")
        self.types = {f.name: f.type for f in fields}
        self.rewind()

    def rewind(self) -> None:
        """Back to row 0, for another pass."""
        self._batches = self._read()
        self._batch: pa.RecordBatch | None = None
        self._start = 0  # the row index of the current batch's first row

    def _read(self) -> Iterator[pa.RecordBatch]:
        for file in self._files:
            with parquet_file(file) as parquet:
                yield from parquet.iter_batches(batch_size=BATCH_ROWS, columns=self.names)

    def take(self, indices: list[int]) -> list[pa.Array]:
        """The columns at `indices` (ascending, and above every index asked before)."""
        pieces: list[pa.RecordBatch] = []
        pos = 0
        while pos < len(indices):
            while self._batch is None or indices[pos] >= self._start + self._batch.num_rows:
                if self._batch is not None:
                    self._start += self._batch.num_rows
                self._batch = next(self._batches, None)
                if self._batch is None:
                    raise ValueError(f"the input has no row {indices[pos]} any more")
            end = bisect.bisect_left(indices, self._start + self._batch.num_rows, lo=pos)
            local = pa.array([i - self._start for i in indices[pos:end]], pa.int64())
            pieces.append(self._batch.take(local))
            pos = end
        schema = pa.schema([pa.field(n, t) for n, t in self.types.items()])
        table = pa.Table.from_batches(pieces, schema=schema).combine_chunks()
        return [table.column(name).combine_chunks() for name in self.names]


def from_input(path: Source | None, fmt: InputFormat | None, names: list[str]) -> FromInput | None:
    """`FromInput` for a Parquet input with carried columns; None for JSONL (and the like),
    whose fields keep the type inference. ValueError when the input cannot serve them."""
    try:
        if path is None or not names or input_format(path, fmt) != "parquet":
            return None
        return FromInput(path, names)
    except (OSError, KeyError, SourceError, pa.ArrowException) as exc:
        raise ValueError(str(exc)) from None
