"""pyarrow.fs's remote stores (S3, GCS, Azure, HDFS): held out of the CLI's process until a
URI names one.

`pyarrow.parquet` imports `pyarrow.fs`, which imports every store pyarrow was built with;
S3's native library alone was ~7 MiB of a 10 k-row run's peak RSS in a freshly installed
venv (BENCHMARKS.md), and a local run uses none of them. The launcher `hold`s them; `load` lets
them in and gives `pyarrow.fs` with them, loading them again into a `pyarrow.fs` that was
imported while they were held (its names for them, and S3's finalisation at exit, are set
when it loads). A process that never held them is left as it is.
"""

from __future__ import annotations

import importlib
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType

STORES = ("pyarrow._s3fs", "pyarrow._gcsfs", "pyarrow._azurefs", "pyarrow._hdfs")


class _Hold:
    """A meta-path finder that answers "not installed" for the stores' modules."""

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name in STORES:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


_HOLD = _Hold()
_LOADING = threading.Lock()


def hold() -> None:
    """Keep the stores out of this process until `load` (before pyarrow.fs is imported)."""
    if _HOLD not in sys.meta_path:
        sys.meta_path.insert(0, _HOLD)


def load() -> Any:
    """`pyarrow.fs` with the stores this pyarrow was built with (from any thread)."""
    import pyarrow.fs as pafs

    with _LOADING:
        if _HOLD in sys.meta_path:
            sys.meta_path.remove(_HOLD)
            if "S3FileSystem" not in vars(pafs):  # imported while held: let it find them now
                pafs = importlib.reload(pafs)
    return pafs
