"""The CLI's process (launch.py, arrowprocess.py): Arrow on the C library's allocator,
malloc tuned, pandas never loaded by pyarrow's own type checks, explicit
pandas conversions still working. Real child processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from tests.helpers import write_jsonl

if TYPE_CHECKING:
    from pathlib import Path

# A CLI command runs (`validate`: pyarrow loaded, no key needed), then pyarrow is handed
# Python lists, as the run's own code hands them; finally an explicit pandas conversion.
_CHILD = """
import json, sys
from batchrunner.launch import entry
sys.argv = ["batchrunner", "validate", sys.argv[1]]
try:
    entry()
except SystemExit:
    pass
import pyarrow as pa
pa.array([1, 2]); pa.Table.from_pydict({"a": ["x"]})
seen = {"pandas": "pandas" in sys.modules, "pool": pa.default_memory_pool().backend_name}
seen["httpx_cli"] = "httpx._main" in sys.modules
seen["to_pandas"] = len(pa.table({"a": [1, 2, 3]}).to_pandas())
print(json.dumps(seen))
"""


_TUNED = (
    "ARROW_DEFAULT_MEMORY_POOL",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_ARENA_MAX",
    "GLIBC_TUNABLES",
)


def _child(src: Path, code: str = _CHILD, **env: str) -> dict[str, object]:
    environ = {k: v for k, v in os.environ.items() if k not in _TUNED}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(src)],
        env={**environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture
def src(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    write_jsonl(path, [{"id": "a", "prompt": "hi"}])
    return path


def test_the_cli_process_uses_the_system_allocator_and_loads_no_pandas(src: Path) -> None:
    """pandas (installed here) is not imported by pyarrow's checks, nor httpx's command
    line (click, rich and pygments are installed here) by httpx; to_pandas still works."""
    pytest.importorskip("pandas")
    pytest.importorskip("pygments")
    assert _child(src) == {"pandas": False, "pool": "system", "httpx_cli": False, "to_pandas": 3}


def test_a_pool_chosen_in_the_environment_is_kept(src: Path) -> None:
    """ARROW_DEFAULT_MEMORY_POOL wins over the CLI's choice."""
    assert _child(src, ARROW_DEFAULT_MEMORY_POOL="mimalloc")["pool"] == "mimalloc"


_THRESHOLD = """
import json
from batchrunner.launch import tune_malloc
print(json.dumps({"set": tune_malloc()}))
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="glibc's mallopt",
)
def test_malloc_is_tuned_unless_the_environment_tunes_it(
    src: Path,
) -> None:
    """glibc accepts the fixed threshold and arena count; MALLOC_MMAP_THRESHOLD_,
    MALLOC_ARENA_MAX or a glibc.malloc tunable in the environment mean the user tunes
    malloc, and
    nothing is changed."""
    assert _child(src, _THRESHOLD) == {"set": True}
    assert _child(src, _THRESHOLD, MALLOC_MMAP_THRESHOLD_="65536") == {"set": False}
    assert _child(src, _THRESHOLD, MALLOC_ARENA_MAX="4") == {"set": False}
    assert _child(src, _THRESHOLD, GLIBC_TUNABLES="glibc.malloc.trim_threshold=0") == {"set": False}
    # a tunable of another part of glibc is not a malloc setting
    assert _child(src, _THRESHOLD, GLIBC_TUNABLES="glibc.pthread.rseq=0") == {"set": True}


_EMBEDDED = """
import sys
import pyarrow as pa
from batchrunner.cli import main
try:
    main(["validate", sys.argv[1]])
except SystemExit:
    pass
import pandas as pd  # first imported after the CLI ran, as in a notebook
frame = pd.DataFrame({"a": [1, 2, 3]}, index=[7, 8, 9])
print(pa.Table.from_pandas(frame, preserve_index=False).column("a").to_pylist())
"""


def test_the_cli_called_in_process_leaves_pyarrows_pandas_as_it_was(src: Path) -> None:
    """`cli.main` in a process that goes on (a notebook, click's testing) does not settle
    Arrow: a DataFrame with its own index still converts (it raised KeyError: 7)."""
    pytest.importorskip("pandas")
    proc = subprocess.run(
        [sys.executable, "-c", _EMBEDDED, str(src)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert proc.stdout.strip().splitlines()[-1] == "[1, 2, 3]"
