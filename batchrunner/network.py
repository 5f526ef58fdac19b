"""The network as deployed: the proxy API calls go through and the CAs trusted for TLS.

Both come from the environment, by the rules httpx applies (and so the official SDKs,
which are built on it): `HTTPS_PROXY`/`HTTP_PROXY` by the base URL's scheme, then
`ALL_PROXY`; lowercase names win; `HTTP_PROXY` is ignored under CGI (`REQUEST_METHOD`
set), where a request's `Proxy:` header could have set it; `NO_PROXY` hosts go direct.
Loopback is not special: it is proxied unless `NO_PROXY` names it, as in httpx.
`SSL_CERT_FILE`, else `SSL_CERT_DIR`, replaces the default CA bundle (certifi's).

Every request of a run goes to one base URL (redirects are not followed), so the proxy is
decided once per client here, never per request. Nothing here opens a socket, and no
message quotes a proxy URL, which may hold a password.
"""

from __future__ import annotations

import base64
import ipaddress
import ssl
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from batchrunner.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Proxy:
    """A forward proxy: `url` without credentials, and the `Proxy-Authorization` value
    its `user:password@` gave (None without)."""

    url: str
    authorization: str | None = field(default=None, repr=False)
    variable: str = "HTTPS_PROXY"  # where it came from, for messages


def proxy_for(url: str, env: Mapping[str, str]) -> Proxy | None:
    """The proxy for requests to `url` (the base URL), or None to connect directly.

    Raises ConfigError for a proxy this client cannot use (not http:// or https://, say
    socks5://) or cannot parse: a proxy silently skipped would send the run around it.
    """
    target = urllib.parse.urlsplit(url)
    scheme = target.scheme.lower()
    variables = proxy_variables(env)
    if _bypassed(target, variables.get("no", "")):
        return None
    for key in (scheme, "all"):
        if variables.get(key):
            return _parse_proxy(variables[key], f"{key}_proxy".upper())
    return None


def proxy_variables(env: Mapping[str, str]) -> dict[str, str]:
    """`{scheme: value}` of the `*_proxy` variables, as `urllib.request.getproxies()`
    reads them on Linux (which httpx uses), but from `env`."""
    found: dict[str, str] = {}
    for name, value in env.items():
        if value and name.lower().endswith("_proxy"):
            found[name.lower()[:-6]] = value
    if "REQUEST_METHOD" in env:  # CVE-2016-1000110 ("httpoxy")
        found.pop("http", None)
    for name, value in env.items():  # a lowercase name wins, also when it is empty
        if name.endswith("_proxy"):
            if value:
                found[name[:-6]] = value
            else:
                found.pop(name[:-6], None)
    return found


def _bypassed(target: urllib.parse.SplitResult, no_proxy: str) -> bool:
    """Whether a `NO_PROXY` entry covers `target`.

    Entries: `*` (everything), a host name (itself and its subdomains; `.example.com`
    only the subdomains), an IP address or network (`10.0.0.0/8`), `localhost`, any of
    them with `:port`, or a URL (`http://host`) that also fixes the scheme.
    """
    host = (target.hostname or "").lower()
    port = target.port or _DEFAULT_PORTS.get(target.scheme.lower())
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if entry == "*":
            return True
        if entry and _entry_matches(entry, target.scheme.lower(), host, port):
            return True
    return False


def _entry_matches(entry: str, scheme: str, host: str, port: int | None) -> bool:
    if "://" in entry:
        parts = urllib.parse.urlsplit(entry)
        if parts.scheme not in ("all", scheme):
            return False
        entry = parts.netloc
    name, entry_port = _host_port(entry)
    if entry_port is not None and entry_port != port:
        return False
    network = _network(name)
    if network is not None:
        address = _address(host)
        return address is not None and address in network
    if name.startswith("*"):
        name = name[1:]
    if name.startswith("."):
        return host.endswith(name)
    return host == name or host.endswith("." + name)


def _host_port(entry: str) -> tuple[str, int | None]:
    """`host:port`, `[v6]:port`, a bare IPv6 address or a network: (host, port or None)."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, int(port) if port.isdigit() else None
    return entry, None


def _network(name: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(name, strict=False)
    except ValueError:
        return None


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _parse_proxy(value: str, variable: str) -> Proxy:
    """The proxy a `*_PROXY` value names; scheme-less values mean http:// (as in httpx)."""
    text = value.strip()
    parts = urllib.parse.urlsplit(text if "://" in text else f"http://{text}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ConfigError(
            f"{variable} names a {scheme}:// proxy; only http:// and https:// proxies are "
            "supported: use one, or name the API's host in NO_PROXY to connect directly"
        )
    if not parts.hostname or port == -1:
        raise ConfigError(f"{variable} is not a proxy URL like http://host:port (not shown)")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    url = f"{scheme}://{host}:{port or _DEFAULT_PORTS[scheme]}"
    authorization = None
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        authorization = f"Basic {token}"
    return Proxy(url, authorization, variable)


def ssl_context(env: Mapping[str, str]) -> ssl.SSLContext:
    """The TLS settings for API calls: verify against `SSL_CERT_FILE`, else the CAs in
    `SSL_CERT_DIR`, else certifi's bundle (httpx's order). Raises ConfigError when the
    named file cannot be loaded, rather than failing every request later."""
    cafile, capath = env.get("SSL_CERT_FILE"), env.get("SSL_CERT_DIR")
    try:
        if cafile:
            return ssl.create_default_context(cafile=cafile)
        if capath:
            return ssl.create_default_context(capath=capath)
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except (OSError, ssl.SSLError) as exc:
        what = f"SSL_CERT_FILE={cafile}" if cafile else f"SSL_CERT_DIR={capath}"
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{what}: cannot load CA certificates from it ({reason})") from None
