"""The network as deployed, end to end: the fake API over TLS (a trustme CA) and a forward
proxy on loopback (tests/proxy.py), with `run` and `check` in-process.

The proxy tests give the client an address where nothing listens (127.0.0.2:PORT) and
let only the proxy route it to the fake API (127.0.0.1:PORT): a request that went around
the proxy fails instead of passing unseen.
"""

from __future__ import annotations

import base64
import ssl
from typing import TYPE_CHECKING

import pytest
import trustme

from tests.fakeserver import FakeServer
from tests.helpers import TEST_KEY, read_results, run_cli, status_json, write_jsonl
from tests.proxy import forward_proxy

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

ROWS = 5


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="module")
def tls_api(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeServer]:
    """`fake-api --tls-cert --tls-key` with a certificate for 127.0.0.1 and 127.0.0.2."""
    where = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("127.0.0.1", "127.0.0.2", "localhost")
    cert.private_key_pem.write_to_path(str(where / "server.key"))
    cert.cert_chain_pems[0].write_to_path(str(where / "server.pem"))
    for blob in cert.cert_chain_pems[1:]:
        blob.write_to_path(str(where / "server.pem"), append=True)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    args = ("--tls-cert", str(where / "server.pem"), "--tls-key", str(where / "server.key"))
    with FakeServer(*args, api_key=TEST_KEY, ssl_context=context) as server:
        yield server


@pytest.fixture
def api(tls_api: FakeServer) -> FakeServer:
    tls_api.reset()
    return tls_api


def _rows(tmp_path: Path) -> Path:
    return write_jsonl(
        tmp_path / "in.jsonl", [{"id": f"r{i}", "prompt": f"p{i}"} for i in range(ROWS)]
    )


def _other_host(base_url: str) -> str:
    """The same port on 127.0.0.2, where nothing listens."""
    return base_url.replace("127.0.0.1", "127.0.0.2")


def _requests(server: FakeServer) -> int:
    """Every /v1 request the fake API answered (the log holds generations only)."""
    return int(server.stats()["requests_total"])


def test_fake_api_serves_https(api: FakeServer) -> None:
    """--tls-cert/--tls-key: the first line says https://, and TLS clients trusting the CA
    get answers."""
    assert api.first_line.startswith("listening on https://127.0.0.1:")
    assert api.base_url.startswith("https://")
    assert _requests(api) == 0  # /_fake/stats itself answered over TLS


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_run_over_tls_trusts_ssl_cert_file(
    api: FakeServer, ca_file: Path, tmp_path: Path, stream: bool
) -> None:
    """With SSL_CERT_FILE naming the CA, a run over https:// succeeds, plain and streamed."""
    out = tmp_path / "out"
    args = ["run", str(_rows(tmp_path)), "-o", str(out), "--base-url", api.base_url, "-q"]
    res = run_cli([*args, "--stream"] if stream else args, env={"SSL_CERT_FILE": str(ca_file)})
    assert res.exit_code == 0, res.stderr
    rows = read_results(out)
    assert [r["status"] for r in rows] == ["succeeded"] * ROWS
    assert all(r["text"] for r in rows)
    assert len(api.log()) == ROWS


def test_an_untrusted_certificate_stops_at_the_preflight(
    api: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the CA: exit 3 before any generation, a message naming the certificate and
    SSL_CERT_FILE, nothing recorded; the same command with the CA then completes."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    out = tmp_path / "out"
    args = ["run", str(_rows(tmp_path)), "-o", str(out), "--base-url", api.base_url, "-q"]
    res = run_cli(args)
    assert res.exit_code == 3, res.stderr
    assert "certificate is not trusted" in res.stderr
    assert "SSL_CERT_FILE" in res.stderr and "certificate verify failed" in res.stderr
    assert "Traceback" not in res.stderr and TEST_KEY not in res.stderr + res.stdout
    counts = status_json(out)
    assert counts["succeeded"] == counts["errored"] == 0
    assert not (out / "results.parquet").exists()
    assert _requests(api) == 0  # the handshake failed: no HTTP request at all


def test_check_uses_the_same_tls_settings(
    api: FakeServer, ca_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`check` trusts what `run` trusts: refused without the CA (exit 3), fine with it."""
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    ok = run_cli(["check", "--base-url", api.base_url], env={"SSL_CERT_FILE": str(ca_file)})
    assert ok.exit_code == 0, ok.stderr
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    refused = run_cli(["check", "--base-url", api.base_url])
    assert refused.exit_code == 3
    assert "certificate is not trusted" in refused.stdout + refused.stderr


def test_a_missing_ca_file_is_exit_2(api: FakeServer, tmp_path: Path) -> None:
    """SSL_CERT_FILE naming nothing: a usage error before any request."""
    out = tmp_path / "out"
    env = {"SSL_CERT_FILE": str(tmp_path / "nope.pem")}
    res = run_cli(
        ["run", str(_rows(tmp_path)), "-o", str(out), "--base-url", api.base_url], env=env
    )
    assert res.exit_code == 2
    assert "SSL_CERT_FILE" in res.stderr and "nope.pem" in res.stderr
    assert _requests(api) == 0


# -- proxies -----------------------------------------------------------------------------


def test_http_proxy_sees_every_request_of_a_plain_http_run(
    shared_api: FakeServer, tmp_path: Path
) -> None:
    """HTTP_PROXY: the preflight and every generation go to the proxy as absolute-URI
    requests (and only there: the address given to the client has no server)."""
    base = _other_host(shared_api.base_url)
    out = tmp_path / "out"
    with forward_proxy() as proxy:
        proxy.state.routes[base.split("/")[2]] = ("127.0.0.1", int(base.split(":")[2][:-3]))
        res = run_cli(
            ["run", str(_rows(tmp_path)), "-o", str(out), "--base-url", base, "-q"],
            env={"HTTP_PROXY": proxy.url},
        )
        seen = list(proxy.state.requests)
    assert res.exit_code == 0, res.stderr
    assert sorted(seen) == sorted([f"GET {base}/models"] + [f"POST {base}/messages"] * ROWS)
    assert _requests(shared_api) == ROWS + 1


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "https_proxy"])
def test_https_proxy_tunnels_every_request_of_a_tls_run(
    api: FakeServer, ca_file: Path, tmp_path: Path, variable: str
) -> None:
    """HTTPS_PROXY (either case): CONNECT tunnels carry the run, TLS inside them checked
    against the CA for the host asked for; the proxy sees nothing but CONNECTs."""
    base = _other_host(api.base_url)
    authority = base.split("/")[2]
    out = tmp_path / "out"
    with forward_proxy() as proxy:
        proxy.state.routes[authority] = ("127.0.0.1", int(authority.split(":")[1]))
        env = {variable: proxy.url, "SSL_CERT_FILE": str(ca_file)}
        res = run_cli(
            ["run", str(_rows(tmp_path)), "-o", str(out), "--base-url", base, "--stream"],
            env=env,
        )
        seen = list(proxy.state.requests)
    assert res.exit_code == 0, res.stderr
    assert seen and set(seen) == {f"CONNECT {authority}"}
    assert len(api.log()) == ROWS


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "127.0.0.0/8", "localhost,127.0.0.1:{port}"])
def test_no_proxy_covering_the_host_sends_nothing_to_the_proxy(
    shared_api: FakeServer, tmp_path: Path, no_proxy: str
) -> None:
    """NO_PROXY naming the API's host (address, network, host:port): direct connections."""
    port = shared_api.base_url.split(":")[2][:-3]
    out = tmp_path / "out"
    with forward_proxy() as proxy:
        env = {
            "HTTP_PROXY": proxy.url,
            "HTTPS_PROXY": proxy.url,
            "NO_PROXY": no_proxy.format(port=port),
        }
        args = ["run", str(_rows(tmp_path)), "-o", str(out), "--base-url", shared_api.base_url]
        res = run_cli([*args, "-q"], env=env)
        check = run_cli(["check", "--base-url", shared_api.base_url], env=env)
        seen = list(proxy.state.requests)
    assert res.exit_code == 0, res.stderr
    assert check.exit_code == 0, check.stderr
    assert seen == []
    assert _requests(shared_api) == ROWS + 2  # the run's preflight, its rows, and check


def test_check_goes_through_the_proxy(shared_api: FakeServer) -> None:
    """`check` (GET /models) uses the run's proxy settings."""
    base = _other_host(shared_api.base_url)
    with forward_proxy() as proxy:
        proxy.state.routes[base.split("/")[2]] = ("127.0.0.1", int(base.split(":")[2][:-3]))
        res = run_cli(["check", "--base-url", base], env={"http_proxy": proxy.url})
        seen = list(proxy.state.requests)
    assert res.exit_code == 0, res.stderr
    assert seen == [f"GET {base}/models"]


@pytest.mark.parametrize("tls", [False, True], ids=["absolute-uri", "connect"])
def test_proxy_credentials_reach_the_proxy_only(
    shared_api: FakeServer, api: FakeServer, ca_file: Path, tmp_path: Path, tls: bool
) -> None:
    """user:password@ in the proxy URL: Proxy-Authorization on the CONNECT, or on each
    absolute-URI request; never in the fake API's log, nor in any output."""
    server = api if tls else shared_api
    base = _other_host(server.base_url)
    authority = base.split("/")[2]
    out = tmp_path / "out"
    with forward_proxy() as proxy:
        proxy.state.routes[authority] = ("127.0.0.1", int(authority.split(":")[1]))
        url = proxy.url.replace("http://", "http://alice:s%3Acret@")
        env = {"HTTPS_PROXY" if tls else "HTTP_PROXY": url, "SSL_CERT_FILE": str(ca_file)}
        res = run_cli(["run", str(_rows(tmp_path)), "-o", str(out), "--base-url", base], env=env)
        auths = list(proxy.state.authorizations)
    assert res.exit_code == 0, res.stderr
    expected = "Basic " + base64.b64encode(b"alice:s:cret").decode()
    assert auths and set(auths) == {expected}
    assert "s:cret" not in res.stderr + res.stdout and "s%3Acret" not in res.stderr
    assert "proxy-authorization" not in str(server.log()).lower()


def test_a_proxy_refusing_the_tunnel_stops_at_the_preflight(
    api: FakeServer, ca_file: Path, tmp_path: Path
) -> None:
    """A 407 to CONNECT is no passing fault: exit 3 naming the proxy variables, nothing sent."""
    base = _other_host(api.base_url)
    out = tmp_path / "out"
    with forward_proxy(refuse=407) as proxy:
        env = {"HTTPS_PROXY": proxy.url, "SSL_CERT_FILE": str(ca_file)}
        res = run_cli(["run", str(_rows(tmp_path)), "-o", str(out), "--base-url", base], env=env)
    assert res.exit_code == 3, res.stderr
    assert "proxy refused" in res.stderr and "407" in res.stderr
    assert "HTTPS_PROXY" in res.stderr
    assert _requests(api) == 0


def test_a_socks_proxy_is_refused_before_anything_is_sent(
    shared_api: FakeServer, tmp_path: Path
) -> None:
    """aiohttp speaks no SOCKS: exit 2 rather than silently connecting around the proxy."""
    out = tmp_path / "out"
    env = {"HTTP_PROXY": "socks5://127.0.0.1:9"}
    res = run_cli(
        ["run", str(_rows(tmp_path)), "-o", str(out), "--base-url", shared_api.base_url], env=env
    )
    assert res.exit_code == 2
    assert "socks5:// proxy" in res.stderr
    assert _requests(shared_api) == 0
