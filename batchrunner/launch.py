"""The `batchrunner` command's process, set up before anything heavy is imported.

Two process-wide memory settings, made here because each must be made before the library
it governs first allocates, and only in a process that is the CLI's alone (the Python API
and `cli.main` called in a process that goes on leave their host's allocators as they are):

- Arrow on the C library's allocator: Arrow chooses its default memory pool once, from
  ARROW_DEFAULT_MEMORY_POOL, when pyarrow is loaded; `pa.set_memory_pool` afterwards
  changes only what pyarrow's Python calls use, not the C++ readers and writers. With
  mimalloc (the default) a 10 k-row run peaked at 185-219 MiB, with malloc 154-159 MiB.
- malloc's mmap threshold fixed at 128 KiB, and two arenas: glibc raises the threshold each
  time a big block is freed, after which Arrow's per-bucket buffers of the final assembly
  came from a heap that is not handed back, and peak RSS grew with the row count (100 k
  rows: 296 MiB with mimalloc, 173 MiB with malloc and the fixed threshold); and each
  thread that allocates (the committer, Arrow's pools) gets an arena of its own that keeps
  what it freed (two arenas: 170 -> 165 MiB at 100 k rows; BENCHMARKS.md).

Either is left alone when the user's environment already says it.
"""

from __future__ import annotations

import os
import sys

# glibc's mallopt parameter numbers (malloc.h) and the values set. The threshold is glibc's
# default: setting it at all stops glibc from raising it.
_M_MMAP_THRESHOLD, _MMAP_THRESHOLD = -3, 128 * 1024
_M_ARENA_MAX, _ARENA_MAX = -8, 2
_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_ARENA_MAX", "GLIBC_TUNABLES")


def entry() -> None:
    """The console script and `python -m batchrunner`: settle the allocators, then the CLI."""
    settle_allocators()
    from batchrunner.cli import entry as cli_entry

    cli_entry()


def settle_allocators() -> None:
    """Both settings of this module, for a process that is about to load pyarrow."""
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    tune_malloc()


def tune_malloc() -> bool:
    """Fix glibc's mmap threshold and arena count, unless the environment tunes malloc.
    True when they were set (False elsewhere: not Linux, not glibc, or told otherwise)."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in _MALLOC_ENV):
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
