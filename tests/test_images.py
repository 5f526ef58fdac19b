"""Images from the dataset: a simple row's `images` (or --image-column) as image blocks.

End to end: the CLI in-process against the fake API in a subprocess on loopback, whose
request log holds the media type, size and sha256 of every base64 image it decoded. Unit
level: the blocks each protocol builds, decoded and compared with the file's bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrunner.errors import SourceError
from batchrunner.inputs import read_rows, validate
from batchrunner.inputs.images import MB, image_refs, load_images
from batchrunner.protocols import get_protocol
from batchrunner.protocols.images import IMAGE_TOKENS
from batchrunner.records import Row
from batchrunner.spec import RequestSpec, SourceOptions
from tests.helpers import TEST_KEY, read_results, run_cli, write_jsonl

if TYPE_CHECKING:
    from tests.fakeserver import FakeServer

PNG = b"\x89PNG\r\n\x1a\n"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"


def _image(path: Path, magic: bytes, seed: int, size: int = 3000) -> Path:
    """A file that sniffs as the image type of `magic`, its bytes unique to `seed`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = hashlib.shake_256(str(seed).encode()).digest(size)
    path.write_bytes(magic + body)
    return path


def _twenty(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    """20 rows in data/in.jsonl, each naming its own PNG or JPEG by a path relative to
    the input's directory; and each row's prompt -> its file."""
    data = tmp_path / "data"
    files = {}
    rows = []
    for i in range(20):
        name = f"img/p{i}.png" if i % 2 == 0 else f"img/p{i}.jpg"
        _image(data / name, PNG if i % 2 == 0 else JPEG, i)
        files[f"describe {i}"] = data / name
        rows.append({"id": f"r{i}", "prompt": f"describe {i}", "images": [name]})
    return write_jsonl(data / "in.jsonl", rows), files


def _run(src: Path, out: Path, server: FakeServer, *extra: str) -> Any:
    args = ["run", str(src), "-o", str(out), "--base-url", server.base_url, "-q"]
    return run_cli([*args, *extra])


@pytest.mark.parametrize("api", ["messages", "chat"])
def test_each_of_20_requests_carries_its_file_as_a_base64_block(
    tmp_path: Path, shared_api: FakeServer, api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fake API decodes every image block it gets: each of the 20 requests holds one,
    of its file's type, with exactly the file's bytes (sha256 of the decoded data)."""
    src, files = _twenty(tmp_path)
    monkeypatch.chdir(tmp_path)  # relative paths start at the input's directory, not here
    checked = run_cli(["validate", str(src), "--api", api])
    assert checked.stdout.endswith("20 rows (simple), valid, 20 image files checked\n")
    res = _run(src, tmp_path / "run", shared_api, "--api", api)
    assert res.exit_code == 0, res.stderr
    log = shared_api.log()
    assert len(log) == 20
    for entry in log:
        data = files[entry["prompt"]].read_bytes()
        media = "image/png" if data.startswith(PNG) else "image/jpeg"
        assert entry["images"] == [
            {"media_type": media, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        ]
    assert [r["status"] for r in read_results(tmp_path / "run")] == ["succeeded"] * 20


@pytest.mark.parametrize("api", ["messages", "chat"])
def test_the_block_decodes_to_the_file_and_comes_before_the_text(tmp_path: Path, api: str) -> None:
    """The convention's block, decoded, is the file; the token estimate counts an image as
    IMAGE_TOKENS, not its base64 (a 1 MB file would be ~350 000 by the characters)."""
    path = _image(tmp_path / "a.jpg", JPEG, 7, size=MB)
    row = Row(index=0, id="0", body={"prompt": "what is it?", "images": [str(path)]}, where="x:1")
    protocol = get_protocol(api)  # type: ignore[arg-type]
    request = protocol.build_request(load_images(row, protocol.name), RequestSpec(), stream=False)
    content = request.body["messages"][-1]["content"]
    if api == "messages":
        assert content[0]["source"]["type"] == "base64"
        assert content[0]["source"]["media_type"] == "image/jpeg"
        data = content[0]["source"]["data"]
    else:
        prefix, _, data = content[0]["image_url"]["url"].partition(",")
        assert prefix == "data:image/jpeg;base64"
    assert base64.b64decode(data) == path.read_bytes()
    assert content[1] == {"type": "text", "text": "what is it?"}
    assert IMAGE_TOKENS <= request.est_input_tokens < IMAGE_TOKENS + 100
    assert row.body["images"] == [str(path)]  # the row itself is left as it was


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("gone.png", None, "images[0] {path}: no such file"),
        ("big.png", "big", "images[0] {path}: 30.0 MB, over the 5 MB the messages API takes"),
        ("notes.txt", "text", "images[0] {path}: not a PNG, JPEG, GIF or WebP image"),
    ],
)
def test_validate_names_the_line_of_a_bad_image_and_run_sends_nothing(
    tmp_path: Path, shared_api: FakeServer, name: str, make: str | None, reason: str
) -> None:
    """A missing file, a 30 MB file and a text file: `validate` exits 2 naming file:line
    and the field; `run` refuses the same before its first request (0 sent)."""
    rows = [{"prompt": f"p{i}", "images": [f"ok{i}.png"]} for i in range(5)]
    for i in range(5):
        _image(tmp_path / f"ok{i}.png", PNG, i)
    rows[2]["images"] = ["ok0.png", name]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    if make == "big":
        with (tmp_path / name).open("wb") as fh:
            fh.write(PNG)
            fh.truncate(30 * MB)
    elif make == "text":
        (tmp_path / name).write_text("just some notes, no image\n")
    res = run_cli(["validate", str(src)])
    assert res.exit_code == 2
    expected = f"{src}:3: " + reason.format(path=tmp_path / name).replace("[0]", "[1]")
    assert expected in res.stderr
    ran = _run(src, tmp_path / "run", shared_api)
    assert ran.exit_code == 2
    assert expected in ran.stderr
    assert shared_api.log() == []


def test_a_fifo_or_a_directory_is_no_image_and_validation_does_not_wait(tmp_path: Path) -> None:
    """A named pipe would block an open() until a writer came: it is refused unopened."""
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "dir.png").mkdir()
    for name in ("pipe.png", "dir.png"):
        src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p", "images": [name]}])
        with pytest.raises(SourceError, match=f"images\\[0\\] .*{name}: not a regular file"):
            validate(src, SourceOptions())
        row = Row(index=0, id="0", body={"prompt": "p", "images": [str(tmp_path / name)]})
        with pytest.raises(SourceError, match="not a regular file"):
            load_images(row, "chat")


def test_a_resume_after_an_image_was_replaced_is_refused(
    tmp_path: Path, shared_api: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image files' digest is in the fingerprint: after --limit 5, replacing the image
    of a row not yet sent (same size, other bytes) refuses the resume (exit 2, nothing
    sent); with the original back it resumes and sends the other 15 rows."""
    src, files = _twenty(tmp_path)
    out = tmp_path / "run"
    assert _run(src, out, shared_api, "--limit", "5").exit_code == 0
    assert json.loads((out / "manifest.json").read_text())["fingerprint"]["image_files"]
    image = files["describe 12"]
    original = image.read_bytes()
    stat = image.stat()
    image.write_bytes(PNG + bytes(len(original) - len(PNG)))
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # only the bytes tell
    refused = _run(src, out, shared_api)
    assert refused.exit_code == 2
    assert "image_files:" in refused.stderr
    assert len(shared_api.log()) == 5
    image.write_bytes(original)
    monkeypatch.chdir(src.parent)  # the same files, named from elsewhere: the same run
    resumed = _run(Path(src.name), out, shared_api)
    assert resumed.exit_code == 0, resumed.stderr
    assert len(shared_api.log()) == 20


def test_urls_and_data_uris_are_sent_as_they_are(tmp_path: Path) -> None:
    """An https:// URL goes as a URL source (chat: image_url.url); a data: URI as its base64
    with the type it declares, which must be what its bytes are."""
    png = base64.b64encode(PNG + b"pixels").decode()
    refs = ["https://example.invalid/cat.png", f"data:image/png;base64,{png}"]
    row = Row(index=0, id="0", body={"prompt": "compare", "images": refs}, where="x:1")
    body = (
        get_protocol("messages")
        .build_request(load_images(row, "messages"), RequestSpec(), stream=False)
        .body
    )
    first, second, _text = body["messages"][0]["content"]
    assert first["source"] == {"type": "url", "url": refs[0]}
    assert second["source"] == {"type": "base64", "media_type": "image/png", "data": png}
    chat = (
        get_protocol("chat")
        .build_request(load_images(row, "chat"), RequestSpec(), stream=False)
        .body
    )
    assert [b["image_url"]["url"] for b in chat["messages"][0]["content"][:2]] == refs
    lying = Row(index=0, id="0", body={"prompt": "p", "images": [f"data:image/gif;base64,{png}"]})
    with pytest.raises(SourceError, match="not the image/gif it says"):
        load_images(lying, "messages")
    with pytest.raises(SourceError, match="only https:// URLs"):
        image_refs(["http://example.invalid/a.png"], "images", "x:1", None)


def test_image_column_from_csv_judges_by_bytes_not_name(tmp_path: Path) -> None:
    """--image-column names the column (one path per CSV cell, an empty one: none), and
    must be in some row; a JPEG named .txt is an image, a text file named .png is not; the
    files' digest changes with their bytes."""
    _image(tmp_path / "photo.txt", JPEG, 1)
    (tmp_path / "fake.png").write_text("not an image")
    src = tmp_path / "in.csv"
    src.write_text("prompt,photo\nfirst,photo.txt\nsecond,photo.txt\nthird,\n")
    opts = SourceOptions(request=RequestSpec(image_column="photo"))
    summary = validate(src, opts)  # an empty cell names no image
    assert (summary.rows, summary.image_files, "photo" in summary.extra_columns) == (3, 2, False)
    typo = SourceOptions(request=RequestSpec(image_column="foto"))
    with pytest.raises(SourceError, match="image column 'foto' is in no row"):
        validate(src, typo)  # else every request would go without its image
    _image(tmp_path / "photo.txt", JPEG, 2)
    assert validate(src, opts).images != summary.images
    src.write_text("prompt,photo\nfirst,photo.txt\nsecond,fake.png\n")
    with pytest.raises(SourceError, match=r"in\.csv row 2: photo\[0\] .*fake\.png: not a PNG"):
        validate(src, opts)


def test_rows_given_to_the_python_api_name_images_from_the_current_directory(
    tmp_path: Path, shared_api: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows given as dicts are kept as DIR/input.jsonl, but their relative image paths
    start at the current directory, as the caller meant them."""
    import batchrunner

    _image(tmp_path / "pics" / "a.png", PNG, 3)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CAICAINI_API_KEY", TEST_KEY)
    rows = [{"id": "a", "prompt": "what?", "images": ["pics/a.png"]}]
    result = batchrunner.run(rows, output=tmp_path / "run", base_url=shared_api.base_url)
    assert result.succeeded == 1
    data = (tmp_path / "pics" / "a.png").read_bytes()
    assert shared_api.log()[0]["images"][0]["sha256"] == hashlib.sha256(data).hexdigest()


def test_stdin_rows_name_images_from_the_current_directory(
    tmp_path: Path, shared_api: FakeServer
) -> None:
    """`run -` reads a copy of stdin kept in the run directory; its rows' relative image
    paths still start at the directory the command runs in."""
    _image(tmp_path / "pics" / "b.jpg", JPEG, 4)
    row = json.dumps({"prompt": "and this?", "images": ["pics/b.jpg"]}) + "\n"
    cmd = [sys.executable, "-m", "batchrunner", "run", "-", "-o", "run", "-q"]
    env = {**os.environ, "CAICAINI_API_KEY": TEST_KEY, "CAICAINI_BASE": shared_api.base_url}
    done = subprocess.run(
        cmd, input=row, cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    data = (tmp_path / "pics" / "b.jpg").read_bytes()
    assert shared_api.log()[0]["images"][0]["sha256"] == hashlib.sha256(data).hexdigest()


def test_plan_counts_the_images_as_the_run_sends_them(
    tmp_path: Path, shared_api: FakeServer
) -> None:
    """`plan --exact` reads the files as the run does: every row is counted, none fails."""
    src, _files = _twenty(tmp_path)
    res = run_cli(["plan", str(src), "--exact", "--json", "--base-url", shared_api.base_url])
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["counted_rows"] == 20


def test_a_parquet_list_column_and_no_image_held_while_rows_are_read(tmp_path: Path) -> None:
    """A Parquet `list<string>` column of images works (a null names none). Rows are read
    holding the paths only, and the validation pass holds no image: over 24 files of 4 MB
    (96 MB) its peak allocation stays a few MB."""
    for i in range(24):
        with (tmp_path / f"big{i}.png").open("wb") as fh:
            fh.write(PNG + hashlib.sha256(str(i).encode()).digest())
            fh.truncate(4 * MB)
    pics = [[f"big{i}.png"] if i % 6 else None for i in range(24)] + [["big0.png"] * 5]
    table = pa.table({"prompt": [f"p{i}" for i in range(25)], "pics": pics})
    pq.write_table(table, tmp_path / "in.parquet")
    opts = SourceOptions(request=RequestSpec(image_column="pics"))
    tracemalloc.start()
    try:
        summary = validate(tmp_path / "in.parquet", opts)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (summary.rows, summary.image_files) == (25, 25)
    assert peak < 16 * MB
    rows = list(read_rows(tmp_path / "in.parquet", opts))
    assert rows[1].body["images"] == [str(tmp_path / "big1.png")]
    assert "images" not in rows[0].body
    assert rows[24].body["images"] == [str(tmp_path / "big0.png")] * 5
