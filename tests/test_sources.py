"""Reading rows: shapes, compression, Parquet files and directories, options, identity."""

from __future__ import annotations

import gzip
import json
import os
from itertools import islice
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from batchrunner.errors import SourceError
from batchrunner.inputs import input_identity, read_rows
from batchrunner.spec import SourceOptions

if TYPE_CHECKING:
    from pathlib import Path

SIMPLE = [
    {"id": "q1", "prompt": "2+2?", "max_tokens": 5, "expected": "4"},
    {"id": 7, "messages": [{"role": "user", "content": "hi"}], "system": "be brief"},
    {"prompt": "no id here", "temperature": 0, "tags": ["a", "b"]},
]
OPENAI = [
    {
        "custom_id": "a-1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": "x"}]},
        "note": "kept",
    },
    {
        "custom_id": "a-2",
        "method": "POST",
        "url": "/v1/messages",
        "body": {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "y"}]},
    },
]
ANTHROPIC = [
    {
        "custom_id": "r_1",
        "params": {"max_tokens": 3, "messages": [{"role": "user", "content": "a"}]},
    },
    {"custom_id": "r-2", "params": {"messages": [{"role": "user", "content": "b"}]}, "team": "x"},
]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """Write rows (objects, or raw strings for broken lines) as JSONL, compressed by suffix."""
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    data = ("\n".join(lines) + "\n").encode()
    if path.suffix == ".gz":
        data = gzip.compress(data)
    elif path.suffix == ".zst":
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson", ".json"])
def test_simple_rows_split_into_body_and_extra(tmp_path: Path, suffix: str) -> None:
    """Simple rows put request fields in the body and carry every other field, any compression."""
    rows = list(read_rows(write_jsonl(tmp_path / f"in{suffix}", SIMPLE), SourceOptions()))
    assert [r.id for r in rows] == ["q1", "7", "2"]
    assert [r.index for r in rows] == [0, 1, 2]
    assert {r.shape for r in rows} == {"simple"}
    assert rows[0].body == {"prompt": "2+2?", "max_tokens": 5}
    assert rows[0].extra == {"expected": "4"}
    assert rows[1].body == {"messages": [{"role": "user", "content": "hi"}], "system": "be brief"}
    assert rows[2].body == {"prompt": "no id here", "temperature": 0}
    assert rows[2].extra == {"tags": ["a", "b"]}
    assert rows[0].api is None
    assert rows[1].where == f"{tmp_path / f'in{suffix}'}:2"


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
def test_openai_batch_lines(tmp_path: Path, suffix: str) -> None:
    """OpenAI batch lines keep their body, take the id from custom_id and the api from url."""
    rows = list(read_rows(write_jsonl(tmp_path / f"b{suffix}", OPENAI), SourceOptions()))
    assert [(r.id, r.shape, r.api) for r in rows] == [
        ("a-1", "openai_batch", "chat"),
        ("a-2", "openai_batch", "messages"),
    ]
    assert rows[1].body == OPENAI[1]["body"]
    assert rows[0].extra == {"note": "kept"}
    assert rows[1].extra == {}


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
def test_anthropic_batch_lines(tmp_path: Path, suffix: str) -> None:
    """Anthropic batch requests become messages rows whose body is params."""
    rows = list(read_rows(write_jsonl(tmp_path / f"a{suffix}", ANTHROPIC), SourceOptions()))
    assert [(r.id, r.shape, r.api) for r in rows] == [
        ("r_1", "anthropic_batch", "messages"),
        ("r-2", "anthropic_batch", "messages"),
    ]
    assert rows[0].body == ANTHROPIC[0]["params"]
    assert rows[1].extra == {"team": "x"}


def test_request_fields_follow_the_api(tmp_path: Path) -> None:
    """`stop` is a chat body field but carried through for messages (and vice versa)."""
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p", "stop": ["x"], "top_k": 3}])
    (chat,) = read_rows(path, SourceOptions(api="chat"))
    (msgs,) = read_rows(path, SourceOptions(api="messages"))
    assert chat.body == {"prompt": "p", "stop": ["x"]}
    assert chat.extra == {"top_k": 3}
    assert msgs.body == {"prompt": "p", "top_k": 3}
    assert msgs.extra == {"stop": ["x"]}


def test_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    """Blank lines are no rows, yet `where` keeps the file's real line numbers."""
    path = tmp_path / "in.jsonl"
    path.write_text('\n{"prompt": "a"}\n  \r\n{"prompt": "b"}\n\n')
    rows = list(read_rows(path, SourceOptions()))
    assert [(r.index, r.id, r.where) for r in rows] == [
        (0, "0", f"{path}:2"),
        (1, "1", f"{path}:4"),
    ]


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    """A UTF-8 BOM before the first line (as some editors write) is not a JSON error."""
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "x", "prompt": "a"}\n{"prompt": "b"}\n')
    assert [r.id for r in read_rows(path, SourceOptions())] == ["x", "1"]


def test_rows_stream_lazily_in_order(tmp_path: Path) -> None:
    """Rows come one by one: the first rows arrive even though a later line is broken."""
    rows: list[Any] = [{"id": f"r{i}", "prompt": "p"} for i in range(5)]
    rows.append("{broken")
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    first = list(islice(read_rows(path, SourceOptions()), 5))
    assert [(r.index, r.id) for r in first] == [(i, f"r{i}") for i in range(5)]
    with pytest.raises(SourceError) as err:
        list(read_rows(path, SourceOptions()))
    assert err.value.where == f"{path}:6"


def test_template_builds_the_prompt(tmp_path: Path) -> None:
    """A template fills in the row's columns; `{{ }}` stays a literal brace; columns carry on."""
    path = write_jsonl(
        tmp_path / "in.jsonl", [{"id": "t1", "question": "Why?", "n": 3, "model": "m"}]
    )
    opts = SourceOptions(template="Q: {question} ({n}) {{json}}")
    (row,) = read_rows(path, opts)
    assert row.body == {"prompt": "Q: Why? (3) {json}", "model": "m"}
    assert row.extra == {"question": "Why?", "n": 3}


def test_template_may_use_a_prompt_column(tmp_path: Path) -> None:
    """With a template, a `prompt` column is an ordinary column the template can use."""
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "2+2"}])
    (row,) = read_rows(path, SourceOptions(template="Answer in one word: {prompt}"))
    assert row.body == {"prompt": "Answer in one word: 2+2"}
    assert row.extra == {"prompt": "2+2"}


def test_id_and_prompt_columns(tmp_path: Path) -> None:
    """id_column and prompt_column pick the columns read as id and prompt; others carry on."""
    path = write_jsonl(
        tmp_path / "in.jsonl", [{"qid": 11, "text": "hello", "id": "other", "gold": "x"}]
    )
    (row,) = read_rows(path, SourceOptions(id_column="qid", prompt_column="text"))
    assert row.id == "11"
    assert row.body == {"prompt": "hello"}
    assert row.extra == {"id": "other", "gold": "x"}


def test_wrong_id_types_are_refused(tmp_path: Path) -> None:
    """An id must be a string or an integer; a float is an error naming the line."""
    path = write_jsonl(
        tmp_path / "in.jsonl", [{"id": "a", "prompt": "p"}, {"id": 1.5, "prompt": "p"}]
    )
    with pytest.raises(SourceError, match="id must be a string or an integer, got a number") as err:
        list(read_rows(path, SourceOptions()))
    assert err.value.where == f"{path}:2"


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    """A file of no known format, or a missing one, is refused by name."""
    (tmp_path / "x.xml").write_text("<a/>\n")
    with pytest.raises(SourceError, match="unknown input format"):
        list(read_rows(tmp_path / "x.xml", SourceOptions()))
    with pytest.raises(SourceError, match="no such file"):
        list(read_rows(tmp_path / "nope.jsonl", SourceOptions()))


MESSAGES_TYPE = pa.list_(
    pa.struct(
        [
            ("role", pa.string()),
            (
                "content",
                pa.list_(
                    pa.struct([("type", pa.string()), ("text", pa.string()), ("url", pa.string())])
                ),
            ),
        ]
    )
)


def parquet_messages_table() -> pa.Table:
    """Two rows of list<struct> messages (content as blocks), an optional system, `expected`."""
    messages = [
        [{"role": "user", "content": [{"type": "text", "text": "hi", "url": None}]}],
        [
            {"role": "user", "content": [{"type": "image", "text": None, "url": "http://x"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "ok", "url": None}]},
        ],
    ]
    return pa.table(
        {
            "id": ["m1", "m2"],
            "messages": pa.array(messages, type=MESSAGES_TYPE),
            "system": ["s", None],
            "expected": ["x", "y"],
        }
    )


def test_parquet_list_struct_messages(tmp_path: Path) -> None:
    """Parquet messages become plain lists of dicts, without the nulls a struct union adds."""
    path = tmp_path / "in.parquet"
    pq.write_table(parquet_messages_table(), path)
    rows = list(read_rows(path, SourceOptions()))
    assert rows[0].body == {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "system": "s",
    }
    assert rows[1].body["messages"][0]["content"] == [{"type": "image", "url": "http://x"}]
    assert "system" not in rows[1].body  # a null means the row does not set it
    assert [r.extra for r in rows] == [{"expected": "x"}, {"expected": "y"}]
    assert [r.where for r in rows] == [f"{path} row 1", f"{path} row 2"]


def test_parquet_string_content_and_int_ids(tmp_path: Path) -> None:
    """Message content may be a plain string column; integer ids become strings."""
    table = pa.table(
        {
            "id": pa.array([5, 6], type=pa.int64()),
            "messages": [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]],
        }
    )
    pq.write_table(table, tmp_path / "in.parquet")
    rows = list(read_rows(tmp_path / "in.parquet", SourceOptions()))
    assert [(r.id, r.body["messages"][0]["content"]) for r in rows] == [("5", "a"), ("6", "b")]


def test_parquet_batch_bodies_as_struct_or_json_text(tmp_path: Path) -> None:
    """Batch-line bodies may be a struct column or JSON text in Parquet."""
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    common = {"custom_id": ["c1"], "method": ["POST"], "url": ["/v1/chat/completions"]}
    pq.write_table(pa.table({**common, "body": [body]}), tmp_path / "s.parquet")
    pq.write_table(pa.table({**common, "body": [json.dumps(body)]}), tmp_path / "j.parquet")
    for name in ("s.parquet", "j.parquet"):
        (row,) = read_rows(tmp_path / name, SourceOptions())
        assert (row.id, row.shape, row.api, row.body) == ("c1", "openai_batch", "chat", body)


def test_parquet_directory_is_one_input(tmp_path: Path) -> None:
    """A directory's *.parquet files are read in name order, indices running on."""
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(
        pa.table({"id": ["c", "d", "e"], "prompt": ["3", "4", "5"]}), folder / "p-1.parquet"
    )
    pq.write_table(pa.table({"id": ["a", "b"], "prompt": ["1", "2"]}), folder / "p-0.parquet")
    (folder / "_SUCCESS").write_text("")
    rows = list(read_rows(folder, SourceOptions()))
    assert [(r.index, r.id) for r in rows] == [(0, "a"), (1, "b"), (2, "c"), (3, "d"), (4, "e")]
    assert rows[2].where == f"{folder / 'p-1.parquet'} row 1"


def test_parquet_template_and_columns(tmp_path: Path) -> None:
    """Templates and id/prompt columns work on Parquet columns as on JSONL fields."""
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"key": ["k1"], "q": ["why"], "ctx": ["sky"]}), path)
    (row,) = read_rows(path, SourceOptions(template="{q} / {ctx}", id_column="key"))
    assert (row.id, row.body, row.extra) == (
        "k1",
        {"prompt": "why / sky"},
        {"q": "why", "ctx": "sky"},
    )
    (row,) = read_rows(path, SourceOptions(prompt_column="q", id_column="key"))
    assert (row.id, row.body, row.extra) == ("k1", {"prompt": "why"}, {"ctx": "sky"})


def test_input_identity_changes_with_the_file(tmp_path: Path) -> None:
    """Identity changes when content, size or mtime change, and is stable otherwise."""
    path = write_jsonl(tmp_path / "in.jsonl", SIMPLE)
    first = input_identity(path)
    assert first == input_identity(path)
    assert first["path"] == str(path.resolve())
    stat = path.stat()
    path.write_bytes(path.read_bytes().replace(b"2+2?", b"3+3?"))  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime
    changed = input_identity(path)
    assert changed["size"] == first["size"]
    assert changed["mtime_ns"] == first["mtime_ns"]
    assert changed["sha256"] != first["sha256"]
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert input_identity(path)["mtime_ns"] != first["mtime_ns"]
    with path.open("ab") as handle:
        handle.write(b'{"prompt": "more"}\n')
    assert input_identity(path)["size"] != first["size"]


def test_input_identity_reads_both_ends_of_a_large_file(tmp_path: Path) -> None:
    """A change in the last MiB of a large file changes its identity; the middle is not read."""
    path = tmp_path / "big.jsonl"
    blob = bytearray(b"x" * (3 << 20))
    path.write_bytes(blob)
    base = input_identity(path)["sha256"]
    blob[-10] = ord("y")
    path.write_bytes(blob)
    assert input_identity(path)["sha256"] != base


def test_input_identity_of_a_directory(tmp_path: Path) -> None:
    """A directory's identity lists each Parquet file; a new part changes it."""
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(pa.table({"prompt": ["a"]}), folder / "a.parquet")
    first = input_identity(folder)
    files = first["files"]
    assert isinstance(files, list)
    assert [f["name"] for f in files] == ["a.parquet"]
    pq.write_table(pa.table({"prompt": ["b"]}), folder / "b.parquet")
    assert input_identity(folder) != first


def test_input_identity_of_a_missing_file(tmp_path: Path) -> None:
    """The identity of a file that is gone is a SourceError naming it."""
    with pytest.raises(SourceError, match="no such file") as err:
        input_identity(tmp_path / "gone.jsonl")
    assert err.value.where == str(tmp_path / "gone.jsonl")
