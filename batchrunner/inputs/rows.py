"""Turning one decoded input record into a Row: shapes, ids, templates and column options.

Shared by `readers.read_rows` and `validation.validate`, so both accept and refuse exactly
the same rows. What a request body may hold (prompt, messages) is not decided here but by
the protocols, when the body is built. Pure: no IO and no pyarrow; callers say where each
record came from.
"""

from __future__ import annotations

import json
import re
import string
from typing import TYPE_CHECKING, Any, cast

from batchrunner.errors import SourceError
from batchrunner.inputs.images import image_refs
from batchrunner.protocols import REQUEST_FIELDS
from batchrunner.protocols.jsonsafe import check_text
from batchrunner.records import Api, JSONObject, Row, Shape, json_kind

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from batchrunner.spec import SourceOptions

ANTHROPIC_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
URL_APIS: dict[str, Api] = {"/v1/chat/completions": "chat", "/v1/messages": "messages"}
SHAPE_NAMES: dict[Shape, str] = {
    "simple": "simple rows",
    "openai_batch": "OpenAI batch lines",
    "anthropic_batch": "Anthropic batch lines",
}
_ONE_SHAPE: dict[Shape, str] = {
    "simple": "a simple row",
    "openai_batch": "an OpenAI batch line",
    "anthropic_batch": "an Anthropic batch line",
}
_OPENAI_KEYS = frozenset({"custom_id", "method", "url", "body"})
_ANTHROPIC_KEYS = frozenset({"custom_id", "params"})
_MISSING: Any = object()
Parsed = tuple[str, JSONObject, JSONObject, Api | None]  # id, body, extra, api


def template_fields(template: str) -> tuple[str, ...]:
    """The column names a prompt template uses, in order; SourceError if it cannot work."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise SourceError("template", f"{template!r} does not parse: {exc}") from None
    names: dict[str, None] = {}
    for _literal, name, spec, _conversion in parsed:
        if name is None:
            continue
        if not name or name.isdigit():
            raise SourceError("template", "every {field} must name a column, like {question}")
        if "." in name or "[" in name or "{" in (spec or ""):
            raise SourceError(
                "template", f"{{{name}}}: only plain column names are supported (use {{{{ }}}})"
            )
        names[name] = None
    return tuple(names)


def _not_object(record: object) -> str:
    hint = (
        " (a JSON array: the input must hold one object per line)" if type(record) is list else ""
    )
    return f"not a JSON object, got {json_kind(record)}{hint}"


class RowMaker:
    """Makes the Rows of one input; the first record fixes the shape for all the others."""

    def __init__(
        self, opts: SourceOptions, *, json_strings: bool = False, image_folder: Path | None = None
    ) -> None:
        """`json_strings`: accept `body`/`params` stored as JSON text (Parquet inputs);
        `image_folder`: where a row's relative image paths start (None: as they are)."""
        self.shape: Shape | None = None
        self.first_where = ""
        self._json_strings = json_strings
        if opts.template is not None and opts.prompt_column is not None:
            raise SourceError("template", "give a template or a prompt column, not both")
        self._template = opts.template
        self._needs = template_fields(opts.template) if opts.template is not None else ()
        self._id_key = opts.id_column or "id"
        self._prompt_column = opts.prompt_column
        fields = set(REQUEST_FIELDS[opts.api]) | {"prompt", "messages"}
        if opts.template is not None or opts.prompt_column is not None:
            fields.discard("prompt")  # the prompt comes from elsewhere: `prompt` is a column
        fields.discard(self._id_key)
        # A simple row's images: `images`, or the column --image-column names.
        self._image_key = opts.request.image_column or "images"
        self._image_folder = image_folder
        self.image_rows = 0  # rows that have the image column (null included)
        fields.add(self._image_key)
        self._fields = frozenset(fields)
        self._parse: Callable[[JSONObject, int, str], Parsed] = self._simple
        named = (opts.template, opts.id_column, opts.prompt_column, opts.request.image_column)
        self._uses_options = named != (None,) * 4
        # Set per Parquet file by check_columns: the file has this id column, so a row
        # without an id holds a null there (Parquet cannot leave a field out).
        self._id_in_file: str | None = None

    def make(self, record: object, index: int, where: str) -> Row:
        """The Row for one decoded record; SourceError(where, reason) if it cannot be one."""
        row_id, body, extra, api = self.parse(record, index, where)
        shape = cast("Shape", self.shape)  # parse() has set it
        return Row(
            index=index, id=row_id, shape=shape, body=body, extra=extra, api=api, where=where
        )

    def parse(self, record: object, index: int, where: str) -> Parsed:
        """What `make` checks and builds, without the Row (the validation pass needs no Row)."""
        if type(record) is not dict:
            raise SourceError(where, _not_object(record))
        if "custom_id" in record:
            shape = self._shape_of(record, where)
        elif self._id_in_file == "custom_id":
            raise SourceError(where, "custom_id is null: every batch line needs its own")
        else:
            shape = "simple"
        if shape != self.shape:
            if self.shape is not None:
                raise SourceError(
                    where,
                    f"{_ONE_SHAPE[shape]} in a file of {SHAPE_NAMES[self.shape]} "
                    f"(the shape is set by the first row, {self.first_where})",
                )
            self._fix_shape(shape, where)
        return self._parse(record, index, where)

    def check_columns(self, names: Iterable[str], where: str) -> None:
        """Check up front that the columns the options name exist (Parquet schemas)."""
        have = set(names)
        if "custom_id" in have and ("body" in have or "params" in have):
            self._id_in_file = "custom_id"
            return  # batch lines: the first row reports the options that do not apply
        self._id_in_file = self._id_key if self._id_key in have else None
        wanted = [(self._prompt_column, "prompt column"), (self._id_key, "id column")]
        if self._image_key != "images":
            wanted.append((self._image_key, "image column"))
        wanted += [(name, "template column") for name in self._needs]
        for name, role in wanted:
            if name is None or name in have or (role == "id column" and name == "id"):
                continue
            listed = ", ".join(sorted(have)) or "none"
            raise SourceError(where, f"{role} {name!r} does not exist (columns: {listed})")

    def carried(self, name: str) -> bool:
        """Whether a column of this input is carried through to the results."""
        if self.shape == "openai_batch":
            return name not in _OPENAI_KEYS
        if self.shape == "anthropic_batch":
            return name not in _ANTHROPIC_KEYS
        return name not in self._fields and name not in (self._id_key, self._prompt_column)

    def _shape_of(self, record: JSONObject, where: str) -> Shape:
        if "params" in record:
            if "body" in record:
                raise SourceError(where, "has both body (OpenAI) and params (Anthropic)")
            return "anthropic_batch"
        return "openai_batch" if "body" in record else "simple"

    def _fix_shape(self, shape: Shape, where: str) -> None:
        if shape != "simple" and self._uses_options:
            raise SourceError(
                where,
                "a template, id, prompt or image column applies only to simple rows, "
                f"but this input holds {SHAPE_NAMES[shape]}",
            )
        self.shape = shape
        self.first_where = where
        if shape == "openai_batch":
            self._parse = self._openai
        elif shape == "anthropic_batch":
            self._parse = self._anthropic

    def _simple(self, record: JSONObject, index: int, where: str) -> Parsed:
        body: JSONObject = {}
        extra: JSONObject = {}
        row_id = prompt = _MISSING
        fields, id_key, prompt_key = self._fields, self._id_key, self._prompt_column
        for key, value in record.items():
            if key in fields:
                body[key] = value
            elif key == id_key:
                row_id = value
            elif key == prompt_key:
                prompt = value
            else:
                extra[key] = value
        if type(row_id) is not str:
            row_id = self._simple_id(row_id, index, where)
        elif not row_id.isascii():
            check_text(row_id, "id", where)  # results.parquet stores UTF-8
        if self._template is not None:
            body["prompt"] = self._render(record, where)
        elif prompt_key is not None:
            if prompt is _MISSING or prompt is None:
                state = "does not exist" if prompt is _MISSING else "is null in this row"
                raise SourceError(where, f"prompt column {prompt_key!r} {state}")
            body["prompt"] = prompt
        if type(body.get("prompt")) is not str or "messages" in body:
            self._check_prompt(body, extra, where)
        if self._image_key in body:
            self._images(body, where)
        return row_id, body, extra, None

    def _images(self, body: JSONObject, where: str) -> None:
        """The row's images as `body["images"]`, their references checked (not the files:
        those are read by the validation pass and as the request is built)."""
        value = body.pop(self._image_key)
        self.image_rows += 1
        if value is not None and value != "":  # a null or empty cell names no image
            body["images"] = image_refs(value, self._image_key, where, self._image_folder)

    def _simple_id(self, value: object, index: int, where: str) -> str:
        if value is _MISSING:
            if self._id_in_file is not None:
                raise SourceError(where, f"{self._id_key} is null: every row needs its id")
            if self._id_key != "id":
                raise SourceError(where, f"id column {self._id_key!r} does not exist")
            return str(index)
        if type(value) is int:
            return str(value)
        raise SourceError(where, f"id must be a string or an integer, got {json_kind(value)}")

    def _check_prompt(self, body: JSONObject, extra: JSONObject, where: str) -> None:
        """What only the row's shape knows about its prompt; the rest (a string prompt or
        well-formed messages, never both) is the protocol's, checked as the body is built."""
        if self._template is not None or self._prompt_column is not None:
            if body.get("messages") is not None:
                source = "the template" if self._template is not None else "prompt"
                raise SourceError(where, f"has both messages and {source}: give one")
        elif "custom_id" in extra and body.get("prompt") is None and body.get("messages") is None:
            raise SourceError(
                where, "a batch line needs body (OpenAI) or params (Anthropic) next to custom_id"
            )

    def _render(self, record: JSONObject, where: str) -> str:
        for name in self._needs:
            if record.get(name) is None:
                state = "lacks" if name not in record else "has null in"
                raise SourceError(
                    where, f"the template names column {name!r}, which this row {state}"
                )
        try:
            return self._template.format_map(record)  # type: ignore[union-attr]
        except (ValueError, TypeError) as exc:
            raise SourceError(where, f"the template cannot format this row: {exc}") from None

    def _object(self, value: object, name: str, where: str) -> JSONObject:
        if type(value) is str and self._json_strings:
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise SourceError(where, f"{name} holds invalid JSON: {exc}") from None
        if type(value) is not dict:
            raise SourceError(where, f"{name} must be an object, got {json_kind(value)}")
        return value

    def _openai(self, record: JSONObject, index: int, where: str) -> Parsed:
        custom_id = record["custom_id"]
        if type(custom_id) is not str or not custom_id:
            raise SourceError(
                where, f"custom_id must be a non-empty string, got {json_kind(custom_id)}"
            )
        if not custom_id.isascii():
            check_text(custom_id, "custom_id", where)
        url = record.get("url")
        api = URL_APIS.get(url) if type(url) is str else None
        if api is None:
            allowed = " or ".join(URL_APIS)
            raise SourceError(where, f"url must be {allowed}, got {url!r}")
        method = record.get("method", "POST")
        if method != "POST":
            raise SourceError(where, f"method must be POST, got {method!r}")
        body = self._object(record["body"], "body", where)
        extra = {key: value for key, value in record.items() if key not in _OPENAI_KEYS}
        return custom_id, body, extra, api

    def _anthropic(self, record: JSONObject, index: int, where: str) -> Parsed:
        custom_id = record["custom_id"]
        if type(custom_id) is not str or ANTHROPIC_ID.fullmatch(custom_id) is None:
            shown = repr(custom_id) if type(custom_id) is str else json_kind(custom_id)
            raise SourceError(where, f"custom_id {shown} must match ^[a-zA-Z0-9_-]{{1,64}}$")
        body = self._object(record["params"], "params", where)
        extra = {key: value for key, value in record.items() if key not in _ANTHROPIC_KEYS}
        return custom_id, body, extra, "messages"
