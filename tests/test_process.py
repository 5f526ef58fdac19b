"""process.release_free_memory and trim_heap: the heap's free pages go back to the OS (a
real child process, its RSS read from /proc); the recorder trims after each commit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

import anyio
import pytest

from batchrunner.recorder import Recorder

if TYPE_CHECKING:
    from batchrunner.rundir import RunDir

_CHILD = """
import json, sys
from batchrunner import process

def anon_mib():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024

blocks = [bytes(1000) + bytes([i % 256]) for i in range(60_000)]  # ~60 MB of heap blocks
pin = bytes(1000) + b"pin"  # above them: the heap's top cannot simply shrink
del blocks
before = anon_mib()
getattr(process, sys.argv[1])()
print(json.dumps({"before": before, "after": anon_mib()}))
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="glibc's malloc_trim",
)
@pytest.mark.parametrize("function", ["release_free_memory", "trim_heap"])
def test_free_heap_pages_go_back_to_the_os(function: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, function],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    seen = json.loads(proc.stdout)
    assert seen["before"] - seen["after"] > 30, seen  # MiB


class _Dir:
    """Seals and commits, as a RunDir does, and remembers what it committed."""

    path = Path("run")

    def __init__(self) -> None:
        self.committed: list[str] = []

    def seal(self) -> str:
        return f"segment {len(self.committed)}"

    def commit(self, sealed: str) -> None:
        self.committed.append(sealed)


def test_the_recorder_trims_after_each_commit_once_its_part_is_written() -> None:
    rundir = _Dir()
    seen: list[list[str]] = []
    recorder = Recorder(
        cast("RunDir", rundir),
        on_error=lambda exc: pytest.fail(str(exc)),
        after_commit=lambda: seen.append(list(rundir.committed)),
    )

    async def two_commits() -> None:
        await recorder.commit()
        await recorder.commit()

    anyio.run(two_commits)
    assert seen == [["segment 0"], ["segment 0", "segment 1"]]
