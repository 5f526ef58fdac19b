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

from batchrunner.bodies import DEFAULT_MAX_RESPONSE_BYTES
from batchrunner.breakers import cannot_connect, not_an_api, run_failure, wrong_base_url
from batchrunner.client import exchange, make_client
from batchrunner.errors import (
    ConnectionSetupError,
    PeerProtocolError,
    RequestError,
    RunAbortedError,
)

if TYPE_CHECKING:
    import httpx

    from batchrunner.records import JSONObject


@dataclass(frozen=True, slots=True, kw_only=True)
class Preflight:
    """What GET {base}/models said.

    `stop`: the base URL is not this kind of API (the message names the URL and the fix).
    `error`: the API's own refusal (a 401, say), for the caller to judge. `unreachable`:
    no answer at all (refused, timed out), which the run's own retries may still meet.
    """

    headers: dict[str, str]
    error: RequestError | None = None
    stop: str | None = None
    unreachable: str | None = None
    models: list[str] | None = None


async def preflight(
    client: httpx.AsyncClient,
    *,
    timeout_s: float = 15.0,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> Preflight:
    """One GET {base}/models without retries; never raises a RequestError."""
    base = str(client.base_url).rstrip("/")
    http = client.build_request("GET", "models", timeout=timeout_s)
    try:
        raw, models = await exchange(
            client, http, _model_ids, timeout_s=timeout_s, cap=max_response_bytes
        )
    except ConnectionSetupError as exc:
        # Not the URL's fault: the trusted CAs or the proxy, which the message names.
        return Preflight(headers={}, stop=cannot_connect(base, exc.message))
    except PeerProtocolError as exc:
        # A TLS or protocol failure is no passing outage: this URL will never answer.
        return Preflight(headers={}, stop=wrong_base_url(base, exc.message))
    except RequestError as exc:
        if exc.http_status is None:
            return Preflight(headers={}, unreachable=exc.message)
        stop = not_an_api(f"{base}/models", exc)
        return Preflight(headers=dict(exc.headers), error=exc, stop=stop)
    return Preflight(headers=raw.headers, models=models)


def _model_ids(body: JSONObject) -> list[str] | None:
    data = body.get("data")
    if not isinstance(data, list):
        return None
    return [str(m.get("id")) for m in data if isinstance(m, dict)]


async def list_models(
    *,
    base_url: str,
    api_key: str,
    timeout_s: float = 30.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[str]:
    """`check`: GET {base}/models once (no retries: a preflight should answer fast or say
    why). Raises RunAbortedError naming the cause when it cannot."""
    client = make_client(base_url=base_url, api_key=api_key, concurrency=1, transport=transport)
    async with client:
        check = await preflight(client, timeout_s=timeout_s)
    if check.stop is not None:
        raise RunAbortedError(check.stop)
    if check.unreachable is not None:
        raise RunAbortedError(f"cannot reach {base_url}: {check.unreachable}")
    if check.error is not None:
        raise RunAbortedError(run_failure(check.error) or str(check.error))
    if check.models is None:
        raise RunAbortedError(f"{base_url}/models did not return a model list")
    return check.models
