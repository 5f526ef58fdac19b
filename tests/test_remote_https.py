"""`https://` inputs: a small range-serving web server on loopback over TLS (a trustme CA)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import ssl
import threading
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import trustme

from tests.helpers import read_results, run_cli

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.fakeserver import FakeServer

SECRET = "X-Amz-Signature=deadbeefSECRET"


class _Objects(BaseHTTPRequestHandler):
    """HEAD and GET (with a `Range: bytes=A-B`) of `objects`; ETag and Last-Modified."""

    objects: ClassVar[dict[str, tuple[bytes, float]]] = {}
    seen: ClassVar[list[tuple[str, str | None]]] = []  # (method, Range header)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a failing test shows what it needs."""

    def _object(self) -> tuple[bytes, float] | None:
        found = self.objects.get(self.path.split("?", 1)[0])
        if found is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
        return found

    def _headers(self, body: bytes, mtime: float, length: int, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", '"' + hashlib.md5(body).hexdigest() + '"')
        self.send_header("Last-Modified", formatdate(mtime, usegmt=True))
        self.send_header("Accept-Ranges", "bytes")

    def do_HEAD(self) -> None:
        self.seen.append(("HEAD", None))
        if (found := self._object()) is not None:
            self._headers(found[0], found[1], len(found[0]))
            self.end_headers()

    def do_GET(self) -> None:
        wanted = self.headers.get("Range")
        self.seen.append(("GET", wanted))
        if (found := self._object()) is None:
            return
        body, mtime = found
        if wanted is None:
            self._headers(body, mtime, len(body))
            self.end_headers()
            self.wfile.write(body)
            return
        start, end = (int(x) for x in wanted.removeprefix("bytes=").split("-"))
        part = body[start : end + 1]
        self._headers(body, mtime, len(part), status=206)
        self.send_header("Content-Range", f"bytes {start}-{start + len(part) - 1}/{len(body)}")
        self.end_headers()
        self.wfile.write(part)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def web(ca: trustme.CA) -> Iterator[str]:
    """The object server over TLS on a free loopback port; its https:// root."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Objects)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def trusted(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    """The environment that trusts the test CA (SSL_CERT_FILE), as a run reads it."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    _Objects.objects.clear()
    _Objects.seen.clear()
    return {"SSL_CERT_FILE": str(path)}


def _rows(n: int, tag: str = "") -> list[dict[str, Any]]:
    return [{"id": f"h{i:03d}", "prompt": f"web prompt {tag}{i}"} for i in range(n)]


def _parquet(rows: list[dict[str, Any]]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue()


def test_https_parquet_and_gzip_jsonl_run_and_resume_refuses_a_replaced_object(
    web: str, trusted: dict[str, str], shared_api: FakeServer, tmp_path: Path
) -> None:
    """A pre-signed-looking https:// Parquet URL is read by ranges (never one whole GET)
    with SSL_CERT_FILE trusting the server; .jsonl.gz is streamed and decompressed; a
    resume after the object was replaced is exit 2, and the signature is never shown."""
    _Objects.objects["/d/in.parquet"] = (_parquet(_rows(12)), 1_700_000_000.0)
    text = "".join(json.dumps(r) + "\n" for r in _rows(4))
    _Objects.objects["/d/in.jsonl.gz"] = (gzip.compress(text.encode()), 1_700_000_000.0)
    env = {**trusted, "CAICAINI_BASE": shared_api.base_url}
    out = tmp_path / "pq"
    args = ["run", f"{web}/d/in.parquet?{SECRET}", "-o", str(out), "-q"]
    res = run_cli(args, env=env)
    assert res.exit_code == 0, res.stderr
    assert [r["id"] for r in read_results(out)] == [f"h{i:03d}" for i in range(12)]
    assert ("GET", None) not in _Objects.seen  # Parquet by ranges only
    assert SECRET not in (out / "manifest.json").read_text() + (out / "run.json").read_text()

    gz = run_cli(["run", f"{web}/d/in.jsonl.gz", "-o", str(tmp_path / "gz"), "-q"], env=env)
    assert gz.exit_code == 0, gz.stderr
    assert [r["id"] for r in read_results(tmp_path / "gz")] == [f"h{i:03d}" for i in range(4)]

    sent = shared_api.stats()["answers_total"]
    _Objects.objects["/d/in.parquet"] = (_parquet(_rows(12, "new ")), 1_700_000_100.0)
    again = run_cli(args, env=env)
    assert again.exit_code == 2
    assert "holds a different run" in again.stderr
    assert shared_api.stats()["answers_total"] == sent
    assert SECRET.split("=")[1] not in again.stderr + again.stdout + res.stderr


def test_https_untrusted_certificate_and_missing_object_are_exit_2(
    web: str, trusted: dict[str, str], tmp_path: Path
) -> None:
    """Without SSL_CERT_FILE the certificate is not trusted: exit 2, saying so; a missing
    object is exit 2 naming it without its query string."""
    _Objects.objects["/d/x.jsonl"] = (b'{"id": "a", "prompt": "x"}\n', 1_700_000_000.0)
    untrusted = run_cli(["run", f"{web}/d/x.jsonl?{SECRET}", "-o", str(tmp_path / "a")])
    assert untrusted.exit_code == 2
    assert "TLS certificate not trusted" in untrusted.stderr
    assert "deadbeef" not in untrusted.stderr + untrusted.stdout
    missing = run_cli(
        ["run", f"{web}/d/nope.jsonl?{SECRET}", "-o", str(tmp_path / "b")], env=trusted
    )
    assert missing.exit_code == 2
    assert f"{web}/d/nope.jsonl" in missing.stderr and "404" in missing.stderr
    assert "deadbeef" not in missing.stderr + missing.stdout


def test_export_to_https_is_refused(
    trusted: dict[str, str], shared_api: FakeServer, tmp_path: Path
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a", "prompt": "x"}\n')
    out = tmp_path / "run"
    ran = run_cli(["run", str(src), "-o", str(out), "--base-url", shared_api.base_url, "-q"])
    assert ran.exit_code == 0, ran.stderr
    res = run_cli(["export", str(out), "--format", "jsonl", "-o", "https://127.0.0.1:9/out.jsonl"])
    assert res.exit_code == 2
    assert "read only" in res.stderr


def test_https_input_goes_through_https_proxy(
    web: str, trusted: dict[str, str], tmp_path: Path
) -> None:
    """HTTPS_PROXY carries the reads of an https:// input (CONNECT tunnels), as it does the
    API calls; with NO_PROXY naming the host, none goes through it."""
    from tests.proxy import forward_proxy

    _Objects.objects["/d/v.parquet"] = (_parquet(_rows(3)), 1_700_000_000.0)
    authority = web.split("/")[2]
    with forward_proxy() as proxy:
        proxy.state.routes[authority] = ("127.0.0.1", int(authority.split(":")[1]))
        env = {**trusted, "HTTPS_PROXY": proxy.url}
        res = run_cli(["validate", f"{web}/d/v.parquet"], env=env)
        tunnelled = list(proxy.state.requests)
        direct = run_cli(["validate", f"{web}/d/v.parquet"], env={**env, "NO_PROXY": "127.0.0.1"})
        after = list(proxy.state.requests)
    assert res.exit_code == 0, res.stderr
    assert "3 rows" in res.stdout
    assert tunnelled and all(r == f"CONNECT {authority}" for r in tunnelled)
    assert direct.exit_code == 0, direct.stderr
    assert after == tunnelled
