"""The CLI's process (launch.py): Arrow on the C library's allocator, malloc tuned, numpy
loaded only for `--engine ray` (and then explicit pandas conversions still working),
pandas never loaded by pyarrow's own type checks, pyarrow's remote stores only once a URI
needs one (stores.py). Real child processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from batchrunner.launch import needs_numpy
from tests.helpers import write_jsonl

if TYPE_CHECKING:
    from pathlib import Path

# A CLI command runs (`validate`: pyarrow loaded, no key needed; or the command line in
# argv[2:]), then pyarrow is handed Python lists, as the run's own code hands them.
_CHILD = """
import json, sys
from batchrunner.launch import entry
sys.argv = ["batchrunner", *(sys.argv[2:] or ["validate", sys.argv[1]])]
try:
    entry()
except SystemExit:
    pass
import pyarrow as pa
import pyarrow.parquet
pa.array([1, 2]); pa.Table.from_pydict({"a": ["x"]})
stores = "pyarrow._s3fs" in sys.modules
from batchrunner.stores import load
seen = {"stores": stores, "loaded": hasattr(load(), "S3FileSystem")}
seen |= {"pandas": "pandas" in sys.modules, "pool": pa.default_memory_pool().backend_name}
seen["httpx_cli"] = "httpx._main" in sys.modules
seen["numpy"] = "numpy" in sys.modules
if seen["numpy"]:
    seen["to_pandas"] = len(pa.table({"a": [1, 2, 3]}).to_pandas())
print(json.dumps(seen))
"""


_TUNED = (
    "ARROW_DEFAULT_MEMORY_POOL",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_ARENA_MAX",
    "GLIBC_TUNABLES",
)


def _child(
    src: Path, code: str = _CHILD, args: tuple[str, ...] = (), **env: str
) -> dict[str, object]:
    environ = {k: v for k, v in os.environ.items() if k not in _TUNED}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(src), *args],
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


def test_the_cli_process_uses_the_system_allocator_and_loads_no_numpy_or_pandas(
    src: Path,
) -> None:
    """numpy and pandas (installed here) are not imported by pyarrow, nor httpx's command
    line (click, rich and pygments are installed here) by httpx."""
    pytest.importorskip("pandas")
    pytest.importorskip("pygments")
    seen = _child(src)
    assert seen == {
        "stores": False,
        "loaded": True,
        "pandas": False,
        "pool": "system",
        "httpx_cli": False,
        "numpy": False,
    }


@pytest.mark.parametrize("engine", [("--engine", "ray"), ("--engine=ray",)])
def test_a_ray_command_line_keeps_numpy_for_pyarrow(src: Path, engine: tuple[str, ...]) -> None:
    """`--engine ray` (either spelling): numpy loads with pyarrow, for Ray Data's
    conversions; pyarrow's checks still leave pandas alone, and to_pandas works. The
    stores are not held from Ray."""
    pytest.importorskip("pandas")
    seen = _child(src, args=("run", str(src), *engine), CAICAINI_API_KEY="")
    assert (seen["numpy"], seen["pandas"], seen["to_pandas"]) == (True, False, 3)
    assert seen["stores"] is True


@pytest.mark.parametrize(
    ("args", "needs"),
    [
        (["run", "in.jsonl", "--engine", "ray"], True),
        (["run", "in.jsonl", "--engine=ray"], True),
        (["run", "in.jsonl", "--engine", "local"], False),
        (["run", "in.jsonl", "--engine"], False),
        (["run", "ray"], False),
        ([], False),
    ],
)
def test_numpy_is_kept_only_for_ray(args: list[str], needs: bool) -> None:
    assert needs_numpy(args) is needs


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
