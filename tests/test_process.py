"""process.release_free_memory: the heap's free pages go back to the OS (a real child
process, its RSS read from /proc)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

_CHILD = """
import json
from batchrunner.process import release_free_memory

def anon_mib():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024

blocks = [bytes(1000) + bytes([i % 256]) for i in range(60_000)]  # ~60 MB of heap blocks
pin = bytes(1000) + b"pin"  # above them: the heap's top cannot simply shrink
del blocks
before = anon_mib()
release_free_memory()
print(json.dumps({"before": before, "after": anon_mib()}))
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="glibc's malloc_trim",
)
def test_free_heap_pages_go_back_to_the_os() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True
    )
    seen = json.loads(proc.stdout)
    assert seen["before"] - seen["after"] > 30, seen  # MiB
