"""`check`: does the key work against this base URL? One GET /models, no generation."""

from __future__ import annotations

from batchrunner.client import list_models


async def check_api(base_url: str, api_key: str) -> list[str]:
    """Return the model ids the API lists; raise RunAbortedError when it refuses."""
    return await list_models(base_url=base_url, api_key=api_key)
