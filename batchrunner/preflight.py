"""The probe before a run (and the `check` command): one GET {base}/models.

It answers three questions before the first generation is paid for: is this the API at
all (a base URL pointing at another web server, or the wrong scheme, stops here with a
message naming the URL), is the key accepted, and which rate limits does the server
announce. It goes through the client's one exchange path, so the same size cap, error
classification and redaction apply. Deciding to stop the run is the runner's call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from batchrunner.bodies import DEFAULT_MAX_RESPONSE_BYTES
from batchrunner.breakers import cannot_connect, not_an_api, wrong_base_url
from batchrunner.client import exchange, get, make_client
from batchrunner.config import BASE_ENV, KEY_ENV
from batchrunner.errors import (
    ConnectionSetupError,
    PeerProtocolError,
    RequestError,
)
from batchrunner.redaction import redact

if TYPE_CHECKING:
    import httpx

    from batchrunner.client import ApiClient
    from batchrunner.records import JSONObject

_MAX_QUOTE = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class Preflight:
    """What GET {base}/models said.

    `stop`: the base URL is not this kind of API (the message names the URL and the fix).
    `error`: the API's own refusal (a 401, say), for the caller to judge (with `stop`:
    what showed it). `unreachable`: no answer at all (refused, timed out), which the run's
    own retries may still meet. `more`: the model list has further pages.
    """

    headers: dict[str, str]
    error: RequestError | None = None
    stop: str | None = None
    unreachable: str | None = None
    models: list[str] | None = None
    more: bool = False


async def preflight(
    client: ApiClient,
    *,
    timeout_s: float = 15.0,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> Preflight:
    """One GET {base}/models without retries; never raises a RequestError."""
    base = str(client.base_url).rstrip("/")
    http = get(client, "models", timeout_s=timeout_s)
    try:
        raw, models = await exchange(
            client, http, _model_ids, timeout_s=timeout_s, cap=max_response_bytes
        )
    except ConnectionSetupError as exc:
        # Not the URL's fault: the trusted CAs or the proxy, which the message names.
        return Preflight(headers={}, stop=cannot_connect(base, exc.message), error=exc)
    except PeerProtocolError as exc:
        # A TLS or protocol failure is no passing outage: this URL will never answer.
        return Preflight(headers={}, stop=wrong_base_url(base, exc.message), error=exc)
    except RequestError as exc:
        if exc.http_status is None:
            return Preflight(headers={}, unreachable=exc.message)
        stop = not_an_api(f"{base}/models", exc)
        return Preflight(headers=dict(exc.headers), error=exc, stop=stop)
    return Preflight(headers=raw.headers, models=models, more=raw.body.get("has_more") is True)


def _model_ids(body: JSONObject) -> list[str] | None:
    data = body.get("data")
    if not isinstance(data, list):
        return None
    return [str(m.get("id")) for m in data if isinstance(m, dict)]


@dataclass(frozen=True, slots=True)
class Fact:
    """One line of `check`: what was asked, whether it holds (None: not asked, since an
    earlier answer made it moot), and what was seen."""

    name: str
    ok: bool | None
    detail: str


async def check_api(
    *,
    base_url: str,
    api_key: str,
    model: str,
    timeout_s: float = 30.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[Fact]:
    """`check`: does the base URL answer like the API, is the key accepted, is `model`
    listed. One GET {base}/models (plus GET {base}/models/{model} when the list is
    paginated and its first page lacks the model); no retries, no generation."""
    client = make_client(base_url=base_url, api_key=api_key, concurrency=1, transport=transport)
    async with client:
        pre = await preflight(client, timeout_s=timeout_s)
        facts = _url_and_key(base_url, pre)
        if len(facts) == 3:
            return facts
        if pre.models is None:
            return [*facts, Fact("model", False, "GET /models answered no list of models")]
        listed = model in pre.models
        if not listed and pre.more:
            listed = await _model_known(client, model, timeout_s=timeout_s)
    shown = ", ".join(pre.models[:8]) + (", …" if len(pre.models) > 8 else "")
    if listed:
        return [*facts, Fact("model", True, f"{model} is listed")]
    detail = (
        f"{model} is not listed (the API lists {len(pre.models)}: {shown or 'none'}); "
        "name a listed one with --model"
    )
    return [*facts, Fact("model", False, detail)]


def _url_and_key(base_url: str, pre: Preflight) -> list[Fact]:
    """The facts about the base URL and the key that one GET /models tells."""
    not_asked = "not checked: the base URL did not answer like the API"
    if pre.unreachable is not None:
        url = Fact("base URL", False, f"no answer from {base_url}: {pre.unreachable}")
        return [url, Fact("key", None, not_asked), Fact("model", None, not_asked)]
    err = pre.error
    if isinstance(err, ConnectionSetupError) and pre.stop is not None:
        url = Fact("base URL", False, pre.stop)  # TLS trust or a proxy: its own advice
        return [url, Fact("key", None, not_asked), Fact("model", None, not_asked)]
    if pre.stop is not None:
        what = "it is no API" if err is None else err.message
        if err is not None and err.http_status is not None:
            what = f"GET {base_url}/models answered {_said(err)}"
        detail = (
            f"{base_url} does not answer like the Caicaini API: {what}; give the API's "
            f"address, ending in /v1, with --base-url or {BASE_ENV}"
        )
        url = Fact("base URL", False, detail)
        return [url, Fact("key", None, not_asked), Fact("model", None, not_asked)]
    status = err.http_status if err is not None else 200
    url = Fact("base URL", True, f"{base_url} answers (GET /models: HTTP {status})")
    if err is None:
        return [url, Fact("key", True, "accepted")]
    unlisted = Fact("model", None, "not checked: listing the models needs an accepted key")
    names = {name.lower() for name in (err.error_type, err.code) if name}
    if err.http_status == 401 or names & {"authentication_error", "invalid_api_key"}:
        # The server's text is left out: OpenAI's quotes part of the key.
        refused = f"refused (HTTP {err.http_status} {err.error_type}): check {KEY_ENV}"
        return [url, Fact("key", False, refused), unlisted]
    return [url, Fact("key", False, f"not confirmed: GET /models answered {_said(err)}"), unlisted]


def _said(err: RequestError) -> str:
    """An error as `HTTP 403 permission_error: "..."`, the server's text redacted, short."""
    text = " ".join(redact(err.message or "").split())
    text = text if len(text) <= _MAX_QUOTE else text[: _MAX_QUOTE - 1] + "…"
    return f"HTTP {err.http_status} {err.error_type}" + (f': "{text}"' if text else "")


async def _model_known(client: ApiClient, model: str, *, timeout_s: float) -> bool:
    """GET {base}/models/{model}: True on a 2xx (for lists too long for one page)."""
    http = get(client, "models/" + quote(model, safe="/"), timeout_s=timeout_s)
    try:
        await exchange(client, http, dict, timeout_s=timeout_s, cap=DEFAULT_MAX_RESPONSE_BYTES)
    except RequestError:
        return False
    return True
