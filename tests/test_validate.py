"""The validation pass: the first problem, named by file and line, and the input summary."""

from __future__ import annotations

import gzip
import json
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrunner.errors import SourceError
from batchrunner.inputs import validate
from batchrunner.spec import SourceOptions

if TYPE_CHECKING:
    from pathlib import Path

MSG = [{"role": "user", "content": "hi"}]


def simple_line(n: int) -> dict[str, Any]:
    return {"id": f"q{n}", "prompt": f"p{n}", "question": f"Q{n}", "key": f"k{n}"}


def openai_line(n: int) -> dict[str, Any]:
    return {
        "custom_id": f"c{n}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"messages": MSG},
    }


def anthropic_line(n: int) -> dict[str, Any]:
    return {"custom_id": f"c{n}", "params": {"max_tokens": 5, "messages": MSG}}


BASES = {"simple": simple_line, "openai": openai_line, "anthropic": anthropic_line}


def write_lines(path: Path, lines: list[Any]) -> Path:
    """Write objects as JSON lines; bytes and str lines go in as they are."""
    with path.open("wb") as handle:
        for line in lines:
            if isinstance(line, bytes):
                handle.write(line + b"\n")
            elif isinstance(line, str):
                handle.write(line.encode() + b"\n")
            else:
                handle.write(json.dumps(line).encode() + b"\n")
    return path


def file_21(tmp_path: Path, base: str, line7: Any) -> Path:
    """A 21-line file of one shape whose line 7 is `line7`."""
    lines = [BASES[base](n) for n in range(1, 22)]
    lines[6] = line7
    return write_lines(tmp_path / "in.jsonl", lines)


SIMPLE_CASES: list[tuple[str, Any, SourceOptions, str]] = [
    ("broken JSON", '{"id": "q7", "prompt": ', SourceOptions(), "invalid JSON"),
    (
        "missing prompt",
        {"id": "q7", "question": "x"},
        SourceOptions(),
        "neither prompt nor messages",
    ),
    (
        "repeated id",
        {"id": "q3", "prompt": "p"},
        SourceOptions(),
        "duplicate id 'q3' (first on line 3)",
    ),
    (
        "number as prompt",
        {"id": "q7", "prompt": 42},
        SourceOptions(),
        "prompt must be a string, got a number",
    ),
    ("boolean prompt", {"prompt": True}, SourceOptions(), "prompt must be a string, got a boolean"),
    (
        "object prompt",
        {"prompt": {"t": 1}},
        SourceOptions(),
        "prompt must be a string, got an object",
    ),
    ("not an object", "[1, 2]", SourceOptions(), "not a JSON object, got an array"),
    ("messages not a list", {"messages": "hi"}, SourceOptions(), "messages must be an array"),
    (
        "message without content",
        {"messages": [{"role": "user"}]},
        SourceOptions(),
        "messages[0] has no content",
    ),
    (
        "message without role",
        {"messages": [{"content": "x"}]},
        SourceOptions(),
        "messages[0] has no role",
    ),
    ("empty messages", {"messages": []}, SourceOptions(), "messages is empty"),
    ("prompt and messages", {"prompt": "a", "messages": MSG}, SourceOptions(), "has both messages"),
    ("float id", {"id": 7.5, "prompt": "p"}, SourceOptions(), "id must be a string or an integer"),
    (
        "not UTF-8",
        b'{"id": "q7", "prompt": "\xff"}',
        SourceOptions(),
        "not UTF-8: byte 0xff at column 25",
    ),
    (
        "batch line",
        anthropic_line(7),
        SourceOptions(),
        "an Anthropic batch line in a file of simple rows",
    ),
    (
        "template column",
        {"id": "q7", "prompt": "p"},
        SourceOptions(template="Q: {question}"),
        "template names column 'question'",
    ),
    (
        "null template column",
        {"question": None},
        SourceOptions(template="{question}"),
        "has null in",
    ),
    (
        "id column",
        {"prompt": "p"},
        SourceOptions(id_column="key"),
        "id column 'key' does not exist",
    ),
    (
        "prompt column",
        {"id": "q7"},
        SourceOptions(prompt_column="question"),
        "prompt column 'question'",
    ),
    (
        "template and messages",
        {"question": "x", "messages": MSG},
        SourceOptions(template="{question}"),
        "has both messages and the template",
    ),
]


@pytest.mark.parametrize(
    ("line7", "opts", "reason"),
    [case[1:] for case in SIMPLE_CASES],
    ids=[case[0] for case in SIMPLE_CASES],
)
def test_simple_file_problem_on_line_7(
    tmp_path: Path, line7: Any, opts: SourceOptions, reason: str
) -> None:
    """Each kind of broken simple row is reported with the file, line 7 and the reason."""
    path = file_21(tmp_path, "simple", line7)
    with pytest.raises(SourceError) as err:
        validate(path, opts)
    assert err.value.where == f"{path}:7"
    assert reason in err.value.reason
    assert str(err.value).startswith(f"{path}:7: ")


BATCH_CASES: list[tuple[str, str, Any, str]] = [
    (
        "bad custom_id",
        "anthropic",
        {"custom_id": "no spaces!", "params": {"messages": MSG}},
        "must match ^[a-zA-Z0-9_-]{1,64}$",
    ),
    (
        "long custom_id",
        "anthropic",
        {"custom_id": "x" * 65, "params": {"messages": MSG}},
        "must match",
    ),
    (
        "params not object",
        "anthropic",
        {"custom_id": "c7", "params": "{}"},
        "params must be an object, got a string",
    ),
    (
        "params without messages",
        "anthropic",
        {"custom_id": "c7", "params": {"max_tokens": 1}},
        "params.messages is missing",
    ),
    ("anthropic duplicate", "anthropic", anthropic_line(2), "duplicate id 'c2' (first on line 2)"),
    (
        "simple in batch file",
        "anthropic",
        {"id": "q7", "prompt": "p"},
        "a simple row in a file of Anthropic batch lines",
    ),
    (
        "bad url",
        "openai",
        {**openai_line(7), "url": "/v1/embeddings"},
        "url must be /v1/chat/completions or /v1/messages",
    ),
    (
        "missing url",
        "openai",
        {"custom_id": "c7", "method": "POST", "body": {"messages": MSG}},
        "url must be",
    ),
    ("GET", "openai", {**openai_line(7), "method": "GET"}, "method must be POST, got 'GET'"),
    (
        "body not object",
        "openai",
        {**openai_line(7), "body": [1]},
        "body must be an object, got an array",
    ),
    (
        "body as text",
        "openai",
        {**openai_line(7), "body": "{}"},
        "body must be an object, got a string",
    ),
    (
        "numeric custom_id",
        "openai",
        {**openai_line(7), "custom_id": 7},
        "custom_id must be a non-empty string",
    ),
    ("openai duplicate", "openai", openai_line(3), "duplicate id 'c3' (first on line 3)"),
    (
        "anthropic in openai file",
        "openai",
        anthropic_line(7),
        "an Anthropic batch line in a file of OpenAI batch lines",
    ),
    (
        "both body and params",
        "openai",
        {**openai_line(7), "params": {}},
        "both body (OpenAI) and params",
    ),
]


@pytest.mark.parametrize(
    ("base", "line7", "reason"),
    [case[1:] for case in BATCH_CASES],
    ids=[case[0] for case in BATCH_CASES],
)
def test_batch_file_problem_on_line_7(tmp_path: Path, base: str, line7: Any, reason: str) -> None:
    """Each kind of broken batch line is reported with the file, line 7 and the reason."""
    path = file_21(tmp_path, base, line7)
    with pytest.raises(SourceError) as err:
        validate(path, SourceOptions())
    assert err.value.where == f"{path}:7"
    assert reason in err.value.reason


@pytest.mark.parametrize("base", ["simple", "openai", "anthropic"])
def test_valid_files_summarize(tmp_path: Path, base: str) -> None:
    """A valid file of each shape gives its row count, shape and file."""
    path = write_lines(tmp_path / "in.jsonl", [BASES[base](n) for n in range(1, 22)])
    summary = validate(path, SourceOptions())
    shapes = {"simple": "simple", "openai": "openai_batch", "anthropic": "anthropic_batch"}
    assert (summary.rows, summary.shape, summary.files) == (21, shapes[base], [path])
    assert summary.seconds >= 0


def test_the_first_problem_wins(tmp_path: Path) -> None:
    """A duplicate is reported before a later broken line, and after an earlier one."""
    lines: list[Any] = [simple_line(n) for n in range(1, 22)]
    lines[6] = simple_line(3)
    lines[11] = "{nope"
    path = write_lines(tmp_path / "in.jsonl", lines)
    with pytest.raises(SourceError, match="duplicate id 'q3'") as err:
        validate(path, SourceOptions())
    assert err.value.where == f"{path}:7"
    lines[4] = "{nope"
    path = write_lines(tmp_path / "in.jsonl", lines)
    with pytest.raises(SourceError, match="invalid JSON") as err:
        validate(path, SourceOptions())
    assert err.value.where == f"{path}:5"


def test_hash_collisions_are_not_duplicates(tmp_path: Path) -> None:
    """Different ids with the same hash pass: the second pass compares the ids themselves."""
    path = file_21(tmp_path, "simple", simple_line(7))
    calls: list[str] = []

    def tiny(row_id: str) -> int:
        calls.append(row_id)
        return len(row_id)  # q1..q9 collide, and so do q10..q21

    assert validate(path, SourceOptions(), _digest=tiny).rows == 21
    assert len(calls) == 42  # two passes: the repeated hashes sent it back to the file


def test_second_pass_only_when_a_hash_repeats(tmp_path: Path) -> None:
    """Without a repeated hash the file is read once."""
    path = file_21(tmp_path, "simple", simple_line(7))
    calls: list[str] = []

    def counting(row_id: str) -> int:
        calls.append(row_id)
        return int.from_bytes(row_id.encode().ljust(8, b"\0")[:8], "little")

    validate(path, SourceOptions(), _digest=counting)
    assert len(calls) == 21


def test_real_duplicate_among_collisions(tmp_path: Path) -> None:
    """With every hash equal, the real duplicate is still the one reported."""
    lines = [simple_line(n) for n in range(1, 22)]
    lines[15] = simple_line(9)
    path = write_lines(tmp_path / "in.jsonl", lines)
    with pytest.raises(SourceError, match=r"duplicate id 'q9' \(first on line 9\)") as err:
        validate(path, SourceOptions(), _digest=lambda row_id: 1)
    assert err.value.where == f"{path}:16"


def test_missing_ids_count_as_positions(tmp_path: Path) -> None:
    """A row without id is its position, so an explicit id "1" clashes with row 1's."""
    path = write_lines(
        tmp_path / "in.jsonl", [{"prompt": "a"}, {"prompt": "b"}, {"id": "1", "prompt": "c"}]
    )
    with pytest.raises(SourceError, match=r"duplicate id '1' \(first on line 2\)"):
        validate(path, SourceOptions())


def test_empty_inputs(tmp_path: Path) -> None:
    """An empty file, or one of blank lines only, has no rows: an error naming the file."""
    for content in ("", "\n\n  \n"):
        path = tmp_path / "empty.jsonl"
        path.write_text(content)
        with pytest.raises(SourceError, match="no rows") as err:
            validate(path, SourceOptions())
        assert err.value.where == str(path)


def test_jsonl_extra_column_types(tmp_path: Path) -> None:
    """JSONL carried columns get a type from their values; nulls do not count."""
    rows = [
        {
            "prompt": "a",
            "s": "x",
            "i": 1,
            "f": 1,
            "b": True,
            "o": {"k": 1},
            "m": "x",
            "n": None,
            "p": None,
        },
        {
            "prompt": "b",
            "s": "y",
            "i": 2,
            "f": 2.5,
            "b": False,
            "o": [1],
            "m": 3,
            "n": None,
            "p": "z",
        },
        {"prompt": "c", "s": None, "i": 3, "f": 3, "b": None, "o": None, "m": None},
    ]
    summary = validate(write_lines(tmp_path / "in.jsonl", rows), SourceOptions())
    assert summary.extra_columns == {
        "s": "string",
        "i": "int64",
        "f": "double",
        "b": "bool",
        "o": "json",
        "m": "json",
        "n": "null",
        "p": "string",
    }


def test_compressed_jsonl_problem_lines(tmp_path: Path) -> None:
    """Line numbers hold inside compressed files; a truncated gzip is a read error."""
    lines = [json.dumps(simple_line(n)) for n in range(1, 22)]
    lines[6] = '{"id": "q7", "prompt": 42}'
    data = gzip.compress(("\n".join(lines) + "\n").encode())
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(data)
    with pytest.raises(SourceError, match="prompt must be a string") as err:
        validate(path, SourceOptions())
    assert err.value.where == f"{path}:7"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match="cannot read") as err:
        validate(path, SourceOptions())
    assert err.value.where.startswith(f"{path}:")


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("Q: {question", "does not parse"),
        ("Q: {}", "must name a column"),
        ("Q: {0}", "must name a column"),
        ("Q: {row.question}", "only plain column names"),
    ],
)
def test_bad_templates(tmp_path: Path, template: str, reason: str) -> None:
    """A template that cannot work is refused before any row is read."""
    path = file_21(tmp_path, "simple", simple_line(7))
    with pytest.raises(SourceError) as err:
        validate(path, SourceOptions(template=template))
    assert err.value.where == "template"
    assert reason in err.value.reason


def test_options_need_simple_rows(tmp_path: Path) -> None:
    """A template or column option on a file of batch lines is an error on its first line."""
    path = file_21(tmp_path, "anthropic", anthropic_line(7))
    with pytest.raises(SourceError, match="applies only to simple rows") as err:
        validate(path, SourceOptions(id_column="custom_id"))
    assert err.value.where == f"{path}:1"
    with pytest.raises(SourceError, match="not both"):
        validate(path, SourceOptions(template="{a}", prompt_column="a"))


def test_parquet_summary_keeps_arrow_types(tmp_path: Path) -> None:
    """Parquet carried columns report the file's own arrow types."""
    table = pa.table(
        {
            "id": ["a", "b"],
            "messages": [[{"role": "user", "content": "x"}], [{"role": "user", "content": "y"}]],
            "expected": ["1", "2"],
            "score": pa.array([1.5, None], type=pa.float64()),
            "tags": pa.array([["t"], []], type=pa.list_(pa.string())),
            "max_tokens": [5, 6],
        }
    )
    pq.write_table(table, tmp_path / "in.parquet")
    summary = validate(tmp_path / "in.parquet", SourceOptions())
    assert summary.rows == 2
    assert summary.shape == "simple"
    assert summary.extra_columns == {
        "expected": "string",
        "score": "double",
        "tags": "list<element: string>",
    }


def test_parquet_directory_duplicates_across_files(tmp_path: Path) -> None:
    """A directory is one input: an id repeated in a later file names both places."""
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(pa.table({"id": ["a", "b"], "prompt": ["1", "2"]}), folder / "p-0.parquet")
    pq.write_table(pa.table({"id": ["c", "b"], "prompt": ["3", "4"]}), folder / "p-1.parquet")
    with pytest.raises(SourceError) as err:
        validate(folder, SourceOptions())
    assert err.value.where == f"{folder / 'p-1.parquet'} row 2"
    assert err.value.reason == f"duplicate id 'b' (first at {folder / 'p-0.parquet'} row 2)"
    pq.write_table(pa.table({"id": ["c", "d"], "prompt": ["3", "4"]}), folder / "p-1.parquet")
    summary = validate(folder, SourceOptions())
    assert summary.rows == 4
    assert summary.files == [folder / "p-0.parquet", folder / "p-1.parquet"]


def test_parquet_problem_rows(tmp_path: Path) -> None:
    """A bad Parquet row is named by file and 1-based row; a duplicate by its first row too."""
    path = tmp_path / "in.parquet"
    ids = [f"r{n}" for n in range(1, 22)]
    prompts: list[str | None] = [f"p{n}" for n in range(1, 22)]
    prompts[6] = None
    pq.write_table(pa.table({"id": ids, "prompt": prompts}), path, row_group_size=5)
    with pytest.raises(SourceError, match="neither prompt nor messages") as err:
        validate(path, SourceOptions())
    assert err.value.where == f"{path} row 7"
    ids[6] = "r3"
    prompts[6] = "p7"
    pq.write_table(pa.table({"id": ids, "prompt": prompts}), path, row_group_size=5)
    with pytest.raises(SourceError, match=r"duplicate id 'r3' \(first on row 3\)") as err:
        validate(path, SourceOptions())
    assert err.value.where == f"{path} row 7"


def test_parquet_missing_columns_are_found_up_front(tmp_path: Path) -> None:
    """A prompt, id or template column the Parquet schema lacks is named with the columns."""
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"q": ["a"], "ctx": ["b"]}), path)
    for opts, reason in [
        (SourceOptions(prompt_column="question"), "prompt column 'question' does not exist"),
        (SourceOptions(prompt_column="q", id_column="key"), "id column 'key' does not exist"),
        (SourceOptions(template="{q} {context}"), "template column 'context' does not exist"),
    ]:
        with pytest.raises(SourceError) as err:
            validate(path, opts)
        assert err.value.where == str(path)
        assert err.value.reason == f"{reason} (columns: ctx, q)"


def test_unreadable_parquet(tmp_path: Path) -> None:
    """A file named .parquet that is not Parquet is an error naming the file."""
    path = tmp_path / "in.parquet"
    path.write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(SourceError, match="cannot read Parquet") as err:
        validate(path, SourceOptions())
    assert err.value.where == str(path)


def test_empty_parquet_and_empty_directory(tmp_path: Path) -> None:
    """A Parquet file with no rows, or a directory with no Parquet files, is an error."""
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"prompt": pa.array([], type=pa.string())}), path)
    with pytest.raises(SourceError, match="no rows"):
        validate(path, SourceOptions())
    (tmp_path / "none").mkdir()
    with pytest.raises(SourceError, match=r"no \.parquet files"):
        validate(tmp_path / "none", SourceOptions())


def test_corrupt_parquet_data(tmp_path: Path) -> None:
    """Damage inside a Parquet file's data is an error naming the file."""
    path = tmp_path / "in.parquet"
    table = pa.table({"prompt": [f"prompt number {i} " * 5 for i in range(20000)]})
    pq.write_table(table, path, row_group_size=5000)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 200] = b"\x55" * 200
    path.write_bytes(bytes(data))
    with pytest.raises(SourceError, match="cannot read Parquet after row") as err:
        validate(path, SourceOptions())
    assert err.value.where == str(path)


def test_parquet_files_whose_types_disagree(tmp_path: Path) -> None:
    """Files of one directory must agree on column types; the first that does not is named."""
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(
        pa.table({"prompt": ["a"], "n": pa.array([1], pa.int32())}), folder / "a.parquet"
    )
    pq.write_table(
        pa.table({"prompt": ["b"], "n": pa.array([2], pa.int64())}), folder / "b.parquet"
    )
    assert validate(folder, SourceOptions()).extra_columns == {"n": "int64"}
    pq.write_table(pa.table({"prompt": ["c"], "n": ["x"]}), folder / "c.parquet")
    with pytest.raises(SourceError, match="column types disagree") as err:
        validate(folder, SourceOptions())
    assert err.value.where == str(folder / "c.parquet")


def test_parquet_body_text_must_be_json(tmp_path: Path) -> None:
    """A batch body stored as text must hold a JSON object."""
    path = tmp_path / "in.parquet"
    table = pa.table({"custom_id": ["a", "b"], "params": ['{"messages": []}', "{oops"]})
    pq.write_table(table, path)
    with pytest.raises(SourceError, match=r"params\.messages is empty") as err:
        validate(path, SourceOptions())
    assert err.value.where == f"{path} row 1"
    table = pa.table({"custom_id": ["b"], "params": ["{oops"]})
    pq.write_table(table, path)
    with pytest.raises(SourceError, match="params holds invalid JSON"):
        validate(path, SourceOptions())


@pytest.mark.parametrize(
    ("line", "opts", "reason"),
    [
        ('{"n": "abc"}', SourceOptions(template="{n:d}"), "the template cannot format this row"),
        ("[" * 100_000, SourceOptions(), "invalid JSON: nested too deeply"),
        ('{"custom_id": "x", "url": "/v1/messages"}', SourceOptions(), "needs body (OpenAI)"),
        ('{"prompt": "a"} {"prompt": "b"}', SourceOptions(), "invalid JSON: Extra data"),
        ('  {"prompt": "a"}  ', SourceOptions(), ""),
    ],
)
def test_single_line_verdicts(tmp_path: Path, line: str, opts: SourceOptions, reason: str) -> None:
    """Odd single lines get json's own verdict (or pass, when only padded with blanks)."""
    path = write_lines(tmp_path / "in.jsonl", [line])
    if not reason:
        assert validate(path, opts).rows == 1
        return
    with pytest.raises(SourceError) as err:
        validate(path, opts)
    assert err.value.where == f"{path}:1"
    assert reason in err.value.reason


def test_parquet_batch_lines_refuse_column_options(tmp_path: Path) -> None:
    """Column options on a Parquet file of batch lines fail on its first row."""
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"custom_id": ["a"], "params": ['{"messages": []}']}), path)
    with pytest.raises(SourceError, match="applies only to simple rows") as err:
        validate(path, SourceOptions(prompt_column="question"))
    assert err.value.where == f"{path} row 1"


def test_parquet_batch_lines_carry_other_columns(tmp_path: Path) -> None:
    """Batch-line Parquet files report the columns besides the batch keys as carried."""
    body = '{"messages": [{"role": "user", "content": "x"}]}'
    openai = {"custom_id": ["a"], "method": ["POST"], "url": ["/v1/messages"], "body": [body]}
    pq.write_table(pa.table({**openai, "note": ["n"]}), tmp_path / "o.parquet")
    summary = validate(tmp_path / "o.parquet", SourceOptions())
    assert (summary.shape, summary.extra_columns) == ("openai_batch", {"note": "string"})
    anthropic = {"custom_id": ["a"], "params": [body], "url": ["kept"]}
    pq.write_table(pa.table(anthropic), tmp_path / "a.parquet")
    summary = validate(tmp_path / "a.parquet", SourceOptions())
    assert (summary.shape, summary.extra_columns) == ("anthropic_batch", {"url": "string"})


def test_rows_are_built_with_the_jobs_defaults(tmp_path: Path) -> None:
    """Validation builds each body with the job's defaults, as the run will: a default
    max_tokens of 0 fails the first row that takes it, not a row that sets its own."""
    from batchrunner.spec import RequestSpec

    path = write_lines(tmp_path / "in.jsonl", [{"prompt": "a", "max_tokens": 5}, {"prompt": "b"}])
    assert validate(path, SourceOptions()).rows == 2
    with pytest.raises(SourceError, match="max_tokens must be at least 1, got 0") as err:
        validate(path, SourceOptions(request=RequestSpec(max_tokens=0)))
    assert err.value.where == f"{path}:2"


def test_the_output_bound_sums_every_rows_max_tokens_times_its_choices(tmp_path: Path) -> None:
    """`max_output_tokens`: each row's own max_tokens or the default, times chat's `n`."""
    from batchrunner.spec import RequestSpec

    rows = [
        {"prompt": "a"},
        {"prompt": "b", "max_tokens": 10},
        {"prompt": "c", "max_tokens": 10, "n": 3},
        {"prompt": "d", "max_completion_tokens": 7},
    ]
    src = write_lines(tmp_path / "in.jsonl", rows)
    chat = SourceOptions(api="chat", request=RequestSpec(max_tokens=100))
    assert validate(src, chat).max_output_tokens == 100 + 10 + 30 + 7
    messages = SourceOptions(request=RequestSpec(max_tokens=100))
    assert validate(write_lines(tmp_path / "m.jsonl", rows[:2]), messages).max_output_tokens == 110
