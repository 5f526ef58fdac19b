"""Reading input rows: JSONL (plain, .gz, .zst) or Parquet, streamed in order as Rows.

The producer end of the pipeline. It never holds more than one Parquet batch, never
checks ids across rows (validate.py does that before a run) and never sends anything.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from batchrunner.inputs import SKIPPED, input_format, input_identity, iter_records
from batchrunner.rowshape import RowMaker
from batchrunner.spec import RequestSpec
from batchrunner.validate import InputSummary, validate

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from batchrunner.records import Api, Row

__all__ = [
    "InputSummary",
    "SourceOptions",
    "input_identity",
    "read_rows",
    "validate",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceOptions:
    """How rows become requests: the convention, and which columns hold id and prompt.

    `template` builds each prompt from the row's columns (`str.format_map`, `{{ }}` for a
    literal brace); `prompt_column` / `id_column` name the columns read as prompt / id.
    `request` holds the job's request defaults: validation builds every body with them,
    exactly as the run will.
    """

    api: Api = "messages"
    template: str | None = None
    id_column: str | None = None
    prompt_column: str | None = None
    request: RequestSpec = field(default_factory=RequestSpec)


def read_rows(
    path: Path, opts: SourceOptions, *, skip: Callable[[int], bool] | None = None
) -> Iterator[Row]:
    """Every row of the input, in order; SourceError on the first row that cannot be one.

    A directory is read as one input: its *.parquet files sorted by name, `Row.index`
    running on across them. Rows whose index `skip` accepts are left out (and, in JSONL,
    not even parsed).
    """
    maker = RowMaker(opts, json_strings=input_format(path) == "parquet")

    def check(file: Path, schema: Any) -> None:
        maker.check_columns(schema.names, str(file))

    make = maker.make
    with closing(iter_records(path, on_file=check, skip=skip)) as records:
        for index, (record, where) in enumerate(records):
            if record is SKIPPED or (skip is not None and skip(index)):
                continue
            yield make(record, index, where)
