"""How Arrow behaves in the CLI's own process: no pandas loaded.

Called once by the CLI's entry point (`cli.entry`), in a process that is the CLI's alone:
the Python API, and `cli.main` called in a process that goes on, leave that process's Arrow
as it is. pyarrow imports pandas, when installed, the first time it is handed a Python
list (to ask whether the list is a pandas object): ~43 MB and ~0.3 s that the CLI, which
never hands pyarrow a pandas object, does not need. Arrow's allocator is chosen earlier,
before pyarrow loads (launch.py).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType


class _NoPandas:
    """A meta-path finder that answers "not installed" for pandas, for one call only."""

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def settle_arrow() -> None:
    """Let pyarrow settle, once, that pandas is not there for its type checks.

    pyarrow remembers that answer for good: `Table.to_pandas` still works, but
    `Table.from_pandas` then reads a column as a plain sequence (by index label, so a
    DataFrame whose index is not 0..n-1 fails or is misread). Hence only in a process
    that is the CLI's alone, which is never handed a DataFrame.
    """
    import pyarrow as pa

    if "pandas" in sys.modules:
        return  # already loaded by someone: nothing to save
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([0])  # the first list pyarrow sees: it looks for pandas, finds none
    finally:
        sys.meta_path.remove(finder)
