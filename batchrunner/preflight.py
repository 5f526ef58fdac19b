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

import anyio

from batchrunner.bodies import DEFAULT_MAX_RESPONSE_BYTES
from batchrunner.breakers import not_an_api, run_failure, wrong_base_url
from batchrunner.client import exchange, foreign_protocol, make_client, redactor_of
from batchrunner.errors import RequestError, RunAbortedError

if TYPE_CHECKING:
    import httpx


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
    redactor = redactor_of(client)
    http = client.build_request("GET", "models", timeout=timeout_s)
    try:
        with anyio.fail_after(timeout_s):
            raw = await exchange(client, http, redactor, max_response_bytes, None)
    except TimeoutError:
        return Preflight(headers={}, unreachable=f"no answer within {timeout_s:g} s")
    except RequestError as exc:
        error = redactor.error(exc)
        # A TLS or protocol failure is no passing outage: this URL will never answer.
        foreign = foreign_protocol(exc.__cause__) if exc.__cause__ is not None else None
        if foreign is not None:
            return Preflight(headers={}, stop=wrong_base_url(base, redactor.prose(foreign)))
        if error.http_status is None:
            return Preflight(headers={}, unreachable=error.message)
        stop = not_an_api(f"{base}/models", error)
        return Preflight(headers=dict(error.headers), error=error, stop=stop)
    data = raw.body.get("data")
    models = None
    if isinstance(data, list):
        models = [str(m.get("id")) for m in data if isinstance(m, dict)]
    return Preflight(headers=raw.headers, models=models)


async def list_models(*, base_url: str, api_key: str, timeout_s: float = 30.0) -> list[str]:
    """`check`: GET {base}/models once (no retries: a preflight should answer fast or say
    why). Raises RunAbortedError naming the cause when it cannot."""
    async with make_client(base_url=base_url, api_key=api_key, concurrency=1) as client:
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
