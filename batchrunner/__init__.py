"""batchrunner: crash-safe, resumable batch runs against the Caicaini API.

The Python API is `run`/`arun` (`batchrunner.api`), loaded on first use so that
`import batchrunner` stays cheap (the CLI imports this package before every command).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from batchrunner.version import __version__

if TYPE_CHECKING:
    from batchrunner.api import RunOptions, RunResult, arun, run

__all__ = ["RunOptions", "RunResult", "__version__", "arun", "run"]

_API = frozenset({"RunOptions", "RunResult", "arun", "run"})


def __getattr__(name: str) -> Any:
    if name in _API:
        from batchrunner import api

        return getattr(api, name)
    raise AttributeError(f"module 'batchrunner' has no attribute {name!r}")
