"""The inputs: reading prompt files into Rows, and the validation pass before a run.

`readers` opens the formats (JSONL plain/.gz/.zst, Parquet files and directories), yields
Rows (`read_rows`) and identifies an input (`input_identity`); `rows` shapes one record
into a Row (batch lines, ids, templates, column options); `validation` reads the whole
input once and sends nothing. The options come from the spec (`JobSpec.source_options()`);
what a request body may hold is the protocols' rule. Imports go one way: validation ->
readers -> rows -> protocols, spec.
"""

from __future__ import annotations

from batchrunner.inputs.readers import input_identity, read_rows
from batchrunner.inputs.validation import InputSummary, validate

__all__ = ["InputSummary", "input_identity", "read_rows", "validate"]
