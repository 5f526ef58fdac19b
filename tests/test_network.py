"""network.py: which proxy a base URL goes through and which CAs are trusted, from env."""

from __future__ import annotations

import base64
import ssl
from typing import TYPE_CHECKING

import pytest
import trustme

from batchrunner.client import make_client
from batchrunner.errors import ConfigError
from batchrunner.network import proxy_for, proxy_variables, ssl_context

if TYPE_CHECKING:
    from pathlib import Path

API = "https://api.example.com/v1"
PROXY = {"HTTPS_PROXY": "http://proxy:3128", "HTTP_PROXY": "http://plain:8080"}


def test_the_scheme_picks_the_variable_and_all_proxy_is_the_fallback() -> None:
    """https:// URLs use HTTPS_PROXY, http:// ones HTTP_PROXY, either ALL_PROXY otherwise."""
    assert proxy_for(API, PROXY) is not None
    assert proxy_for(API, PROXY).url == "http://proxy:3128"  # type: ignore[union-attr]
    assert proxy_for("http://api.example.com/v1", PROXY).url == "http://plain:8080"  # type: ignore[union-attr]
    fallback = proxy_for(API, {"ALL_PROXY": "corp:3128"})
    assert fallback is not None and fallback.url == "http://corp:3128"
    assert proxy_for(API, {"HTTP_PROXY": "http://plain:8080"}) is None
    assert proxy_for(API, {}) is None


def test_lowercase_names_win_and_cgi_ignores_http_proxy() -> None:
    """As urllib (and so httpx) read them: `https_proxy` over `HTTPS_PROXY`, an empty
    lowercase one unsets it, and under CGI the uppercase HTTP_PROXY is not trusted."""
    both = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2"}
    assert proxy_variables(both) == {"https": "http://lower:2"}
    assert proxy_variables({"HTTPS_PROXY": "http://upper:1", "https_proxy": ""}) == {}
    cgi = {"HTTP_PROXY": "http://evil:1", "REQUEST_METHOD": "GET"}
    assert proxy_variables(cgi) == {}
    assert proxy_variables({**cgi, "http_proxy": "http://ok:2"}) == {"http": "http://ok:2"}


@pytest.mark.parametrize(
    ("no_proxy", "url", "bypassed"),
    [
        ("*", API, True),
        ("example.com", API, True),  # a domain covers its subdomains
        ("api.example.com", API, True),
        (".example.com", API, True),
        (".example.com", "https://example.com/v1", False),  # a leading dot: subdomains only
        ("*.example.com", "https://example.com/v1", False),
        ("example.com", "https://badexample.com/v1", False),
        ("other.org, example.com ", API, True),
        ("api.example.com:443", API, True),
        ("api.example.com:8443", API, False),
        ("127.0.0.1", "http://127.0.0.1:8765/v1", True),
        ("127.0.0.0/8", "http://127.0.0.2:8765/v1", True),
        ("10.0.0.0/8", "http://127.0.0.2:8765/v1", False),
        ("127.0.0.2:8765", "http://127.0.0.2:8765/v1", True),
        ("::1", "http://[::1]:8765/v1", True),
        ("[::1]:8765", "http://[::1]:8765/v1", True),
        ("localhost", "http://localhost:8765/v1", True),
        ("http://api.example.com", API, False),  # a URL entry fixes the scheme too
        ("https://api.example.com", API, True),
        ("", API, False),
    ],
)
def test_no_proxy_entries(no_proxy: str, url: str, bypassed: bool) -> None:
    """NO_PROXY as httpx reads it (plus real networks), loopback not bypassed by default."""
    env = {"HTTPS_PROXY": "http://proxy:3128", "HTTP_PROXY": "http://proxy:3128"}
    assert (proxy_for(url, {**env, "NO_PROXY": no_proxy}) is None) is bypassed


def test_loopback_is_proxied_unless_no_proxy_names_it() -> None:
    """httpx and the SDKs send loopback through the proxy too: so does batchrunner."""
    assert proxy_for("http://127.0.0.1:8765/v1", {"HTTP_PROXY": "http://p:1"}) is not None


def test_credentials_become_a_proxy_authorization_and_leave_the_url() -> None:
    """user:password@ (percent-decoded) becomes Basic auth; the URL keeps no secret, and
    the repr does not show the header."""
    proxy = proxy_for(API, {"HTTPS_PROXY": "http://alice:p%40ss@proxy:3128"})
    assert proxy is not None
    assert proxy.url == "http://proxy:3128"
    assert proxy.authorization == "Basic " + base64.b64encode(b"alice:p@ss").decode()
    assert "p@ss" not in repr(proxy) and "cEBzcw" not in repr(proxy)
    assert proxy_for(API, {"HTTPS_PROXY": "proxy"}).url == "http://proxy:80"  # type: ignore[union-attr]


@pytest.mark.parametrize("value", ["socks5://proxy:1080", "socks5h://u:secret@proxy:1080"])
def test_a_proxy_this_client_cannot_use_is_refused_not_skipped(value: str) -> None:
    """Going around a proxy the user set would be worse than stopping: exit 2, no URL shown."""
    with pytest.raises(ConfigError, match="only http:// and https:// proxies") as info:
        proxy_for(API, {"HTTPS_PROXY": value})
    assert info.value.exit_code == 2
    assert "secret" not in str(info.value)


def test_a_proxy_url_that_does_not_parse_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError, match="HTTPS_PROXY is not a proxy URL") as info:
        proxy_for(API, {"HTTPS_PROXY": "http://u:secret@proxy:port"})
    assert "secret" not in str(info.value)


def test_ssl_cert_file_replaces_the_default_bundle(tmp_path: Path) -> None:
    """SSL_CERT_FILE alone is trusted (as in httpx); SSL_CERT_DIR when no file is named."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    context = ssl_context({"SSL_CERT_FILE": str(tmp_path / "ca.pem")})
    assert len(context.get_ca_certs()) == 1
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert len(ssl_context({}).get_ca_certs()) > 10  # certifi's bundle
    by_dir = ssl_context({"SSL_CERT_DIR": str(tmp_path)})
    assert by_dir.get_ca_certs() == []  # looked up in the directory when needed


def test_an_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    """Named but missing or not PEM: exit 2 before any request, naming the variable."""
    with pytest.raises(ConfigError, match=r"SSL_CERT_FILE=.*missing\.pem"):
        ssl_context({"SSL_CERT_FILE": str(tmp_path / "missing.pem")})
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="cannot load CA certificates"):
        ssl_context({"SSL_CERT_FILE": str(tmp_path / "junk.pem")})


@pytest.mark.parametrize(
    ("base_url", "proxy", "read"),
    [
        ("http://127.0.0.1:9/v1", None, False),
        ("https://127.0.0.1:9/v1", None, True),
        ("http://127.0.0.1:9/v1", "https://127.0.0.1:8/", True),  # TLS to the proxy
    ],
)
def test_the_ca_bundle_is_read_only_when_a_connection_speaks_tls(
    tmp_path: Path, base_url: str, proxy: str | None, read: bool
) -> None:
    """A missing SSL_CERT_FILE is exit 2 over TLS; plain http never reads it (~20 ms)."""
    env = {"SSL_CERT_FILE": str(tmp_path / "missing.pem")}
    if proxy is not None:
        env["HTTP_PROXY"] = env["HTTPS_PROXY"] = proxy
    if read:
        with pytest.raises(ConfigError, match="SSL_CERT_FILE"):
            make_client(base_url=base_url, api_key="k", concurrency=1, env=env)
    else:
        make_client(base_url=base_url, api_key="k", concurrency=1, env=env)
