"""The job-file keys and flags of --dedupe and --cache*, checked into JobSpec fields.

Kept out of `config` (which calls `reuse_settings`): the same precedence, flags over the
job file, and the same collected problems.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, get_args

from batchrunner.spec import CacheMode

# The [job] keys: `cache` is a directory, relative to the job file like its other paths.
REUSE_KEYS = {"dedupe", "cache", "cache_ttl", "cache_mode"}


def reuse_settings(
    given: dict[str, Any], jsec: dict[str, Any], base: Path, problems: list[str]
) -> dict[str, Any]:
    """`dedupe`, `cache`, `cache_ttl_s` and `cache_mode` for JobSpec; problems named."""
    dedupe = given.get("dedupe", jsec.get("dedupe", False))
    if not isinstance(dedupe, bool):
        problems.append("dedupe must be true or false")
    where = given.get("cache")
    if where is None and "cache" in jsec:
        if isinstance(jsec["cache"], str):
            where = Path(os.path.normpath(base / jsec["cache"]))
        else:
            problems.append("[job] cache must be the path of a directory")
    ttl = given.get("cache_ttl_s", jsec.get("cache_ttl", 0.0))
    finite = isinstance(ttl, int | float) and not isinstance(ttl, bool) and math.isfinite(ttl)
    if not finite or ttl < 0:
        problems.append("cache_ttl must be a number of seconds >= 0")
    mode = given.get("cache_mode", jsec.get("cache_mode", "readwrite"))
    if mode not in get_args(CacheMode):
        problems.append(f"cache_mode must be one of {', '.join(get_args(CacheMode))}")
    return {
        "dedupe": dedupe is True,
        "cache": None if where is None else Path(where),  # the Python API takes str too
        "cache_ttl_s": float(ttl) if finite else 0.0,
        "cache_mode": mode,
    }
