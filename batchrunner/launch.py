"""The `batchrunner` command's process: settled before anything heavy is imported, then the CLI.

Everything here is process-wide, so it is done only in a process that is the CLI's alone
(the console script and `python -m batchrunner`). The Python API, and `cli.main` called in
a process that goes on (click's testing, a program embedding the CLI), leave their host's
process as it is. Figures: BENCHMARKS.md.

- Arrow on the C library's allocator. Arrow chooses its default memory pool once, from
  ARROW_DEFAULT_MEMORY_POOL, when pyarrow loads; `pa.set_memory_pool` afterwards changes
  only what pyarrow's Python calls use, not its C++ readers and writers. With mimalloc
  (the default) a 10 k-row run peaked at 185-219 MiB, with malloc at 154-159 MiB.
- glibc's mmap threshold fixed at 128 KiB, and two arenas. glibc raises the threshold each
  time a big block is freed, after which the final assembly's per-bucket buffers came from
  a heap that is not handed back, and peak RSS grew with the row count (100 k rows: 296
  MiB with mimalloc, 173 MiB with malloc and the fixed threshold). Each thread that
  allocates (the committer, Arrow's pools) otherwise gets an arena of its own that keeps
  what it freed (two arenas: 170 -> 165 MiB at 100 k rows; one arena measured no better:
  1 M rows 208.6 against 207.3 MiB, side by side).
- Modules nobody here uses are refused: httpx's own command line (`httpx._main`, which
  httpx imports when it can, with rich and pygments: ~4.5 MB and ~50 ms); numpy, which
  pyarrow loads when it can (~16 MiB of RSS and ~80 ms of CPU; pyarrow reads, converts
  and writes every type the CLI handles without it), unless the command line asks for
  `--engine ray`, whose Ray Data needs pyarrow's numpy support, which exists only if
  numpy was there as pyarrow loaded; and pandas for pyarrow's type checks. pyarrow looks
  for pandas the first time it is handed a Python list, to ask whether it is a pandas
  object (~43 MB and ~0.3 s when installed), and remembers the answer for good: with
  numpy, `Table.to_pandas` still works, but `Table.from_pandas` would then read a column
  as a plain sequence (by index label: a DataFrame whose index is not 0..n-1 fails or is
  misread). The CLI never hands pyarrow a DataFrame. And pyarrow.fs's remote stores
  until a URI needs one (`stores`), also only without `--engine ray`.

Each allocator setting is left alone when the user's environment already makes it.
"""

from __future__ import annotations

import itertools
import os
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING

from batchrunner import stores

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType

# glibc's mallopt parameter numbers (malloc.h) and the values set. The threshold is glibc's
# default: setting it at all stops glibc from raising it.
_M_MMAP_THRESHOLD, _MMAP_THRESHOLD = -3, 128 * 1024
_M_ARENA_MAX, _ARENA_MAX = -8, 2
_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_ARENA_MAX")


def entry() -> None:
    """The console script and `python -m batchrunner`."""
    settle(sys.argv[1:])
    from batchrunner.cli import main

    settle_arrow()
    main()


def settle(args: Sequence[str]) -> None:
    """Settle this process for the command line `args`, before anything heavy is imported
    (the benchmarks' "imports alone" settle the same way)."""
    settle_allocators()
    # for the whole process: whenever a command first imports httpx
    sys.meta_path.insert(0, _Refuse("httpx._main"))
    if not needs_numpy(args):
        sys.meta_path.insert(0, _Refuse("numpy"))  # before pyarrow loads: see the docstring
        stores.hold()  # Ray Data may reach pyarrow's stores by itself; `remote` loads them


def needs_numpy(args: Sequence[str]) -> bool:
    """Whether this command line runs Ray (`--engine ray`), the one user of numpy: Ray Data
    converts between Arrow and numpy, which pyarrow supports only when numpy was there
    as pyarrow loaded."""
    pairs = itertools.pairwise([*args, ""])
    return any(a == "--engine=ray" or (a, b) == ("--engine", "ray") for a, b in pairs)


def settle_allocators() -> None:
    """Arrow's pool and malloc's settings, for a process about to load pyarrow."""
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    tune_malloc()


def tune_malloc() -> bool:
    """Fix glibc's mmap threshold and arena count, unless the environment tunes malloc.
    True when they were set (False elsewhere: not Linux, not glibc, or told otherwise)."""
    if not sys.platform.startswith("linux") or _tuned_by_environment():
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # glibc returns 1 on success; musl's mallopt is a stub that returns 0
    threshold = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    return bool(threshold and mallopt(_M_ARENA_MAX, _ARENA_MAX))


def _tuned_by_environment() -> bool:
    """The user's own malloc settings: the MALLOC_* variables, or a glibc.malloc tunable
    (GLIBC_TUNABLES also carries tunables of other parts of glibc)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return any(name in os.environ for name in _MALLOC_ENV) or "glibc.malloc." in tunables


def settle_arrow() -> None:
    """Let pyarrow settle, once, that pandas is not there for its type checks."""
    import pyarrow as pa

    if "pandas" in sys.modules:
        return  # already loaded by someone: nothing to save
    with _refused("pandas"):
        pa.array([0])  # the first list pyarrow sees: it looks for pandas, finds none


class _Refuse:
    """A meta-path finder that answers "not installed" for `name` and its submodules."""

    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name == self.name or name.startswith(self.name + "."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


@contextmanager
def _refused(name: str) -> Iterator[None]:
    """`name` cannot be imported within the block."""
    finder = _Refuse(name)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
