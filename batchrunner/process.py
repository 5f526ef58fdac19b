"""Process-wide settings a run needs: the open-file limit, a quieter garbage collector, and
the heap's free pages handed back before assembly.

Each request in flight holds a socket, so `--concurrency 2000` under `ulimit -n 256` ran out
of descriptors and the journal could not open its next segment. Before anything is opened
for the run, `fit_concurrency` raises the soft limit as far as the hard one allows and,
where that is still too low, lowers the concurrency with a warning. Nothing here sends,
reads inputs or writes the run directory.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, cast

from batchrunner.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

# Descriptors kept for everything but sockets: journal segment, parts being written,
# calls.log, the lock, the input, the event loop's selector and self-pipes, pyarrow's
# files. Measured: --concurrency 177 under ulimit -n 256 peaked at 196 descriptors, 179
# of them sockets (15 were open before the run began); 64 leaves room.
FILES_RESERVE = 64


def fit_concurrency(concurrency: int) -> tuple[int, str | None]:
    """The concurrency the open-file limit allows, after raising the soft limit if needed.

    Returns it with a warning when it is lower than asked. Lowering rather than refusing:
    the run still completes (a nightly job is not lost to an environment setting), only
    slower, and the warning says how to get the full concurrency back. Raises ConfigError
    (before anything is sent) when not even one request would fit.
    """
    try:
        import resource
    except ImportError:  # not a POSIX system: nothing to check
        return concurrency, None
    in_use = _open_descriptors()
    needed = concurrency + FILES_RESERVE + in_use
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return concurrency, None
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep the soft limit we have; the fit below copes
    room = soft - FILES_RESERVE - in_use
    if room >= concurrency:
        return concurrency, None
    advice = f"raise it (ulimit -n {needed}) for the full --concurrency {concurrency}"
    if room < 1:
        raise ConfigError(
            f"the open-file limit ({soft}, hard {_text(hard)}) leaves no room for a request "
            f"beside the {in_use + FILES_RESERVE} files a run needs: {advice}"
        )
    return room, (
        f"the open-file limit is {soft} (hard {_text(hard)}): running with --concurrency "
        f"{room} instead of {concurrency}, as each request holds a socket; {advice}"
    )


def _open_descriptors() -> int:
    for listing in ("/proc/self/fd", "/dev/fd"):
        try:
            return sum(1 for _ in Path(listing).iterdir())
        except OSError:
            continue
    return 16  # about what `batchrunner run` holds when it gets here (15, measured)


def _text(limit: int) -> str:
    import resource

    return "unlimited" if limit == resource.RLIM_INFINITY else str(limit)


class _QuietGC:
    """How many runs of this process want the quiet collector, and what to restore when
    the last one ends: runs on several threads (the Python API) overlap."""

    lock = threading.Lock()
    users = 0
    saved: tuple[int, int, int] = (700, 10, 10)


@contextmanager
def quiet_gc() -> Iterator[None]:
    """Fewer, cheaper garbage collections while requests fly.

    Every request allocates a few hundred short-lived objects; with the default gen-0
    threshold (700) the collector runs several times per request and its full passes walk
    every long-lived object (pyarrow, aiohttp). In the Little's-law benchmark the client
    spent 0.77 ms of CPU per request with the default collector and 0.65 ms with none.
    Freezing start-up objects and raising the thresholds keeps most of that gain while
    reference cycles are still collected. No full collection before the freeze: it found
    ~70 unreachable objects among the imports' and cost ~25 ms of CPU, 1% of a 10 k-row
    run. The first run in sets it, the last one out restores it.
    """
    with _QuietGC.lock:
        if _QuietGC.users == 0:
            _QuietGC.saved = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(100_000, 50, 50)
        _QuietGC.users += 1
    try:
        yield
    finally:
        with _QuietGC.lock:
            _QuietGC.users -= 1
            if _QuietGC.users == 0:
                gc.set_threshold(*_QuietGC.saved)
                gc.unfreeze()


def release_free_memory() -> None:
    """Collect garbage, then `trim_heap`, once the sending is over: assembly's peak
    otherwise sits on top of what the sending freed but the heap kept (1 M rows, fresh
    venv: 167.2 -> 161.9 MiB)."""
    gc.collect()
    trim_heap()


def trim_heap() -> None:
    """Hand the C heap's free pages back to the OS (glibc's `malloc_trim`); nothing in use
    is touched. After each commit too: a part's buffers come and go beside the sending's,
    and the pages they leave free otherwise stay resident (300 k rows: 148.7 -> 141.6
    MiB). Safe from any thread; a no-op where there is no glibc."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # musl and others: no malloc_trim
        return None
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    return cast("Callable[[int], int]", trim)
