"""The CLI's process: Arrow on the C library's allocator, pandas never loaded by pyarrow's
own type checks, explicit pandas conversions still working. Real child processes."""

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
from batchrunner.cli import main
try:
    main(["validate", sys.argv[1]])
except SystemExit:
    pass
import pyarrow as pa
pa.array([1, 2]); pa.Table.from_pydict({"a": ["x"]})
seen = {"pandas": "pandas" in sys.modules, "pool": pa.default_memory_pool().backend_name}
seen["to_pandas"] = len(pa.table({"a": [1, 2, 3]}).to_pandas())
print(json.dumps(seen))
"""


def _child(src: Path, **env: str) -> dict[str, object]:
    environ = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(src)],
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
    """pandas (installed here) is not imported by pyarrow's checks; to_pandas still works."""
    pytest.importorskip("pandas")
    assert _child(src) == {"pandas": False, "pool": "system", "to_pandas": 3}


def test_a_pool_chosen_in_the_environment_is_kept(src: Path) -> None:
    """ARROW_DEFAULT_MEMORY_POOL wins over the CLI's choice."""
    assert _child(src, ARROW_DEFAULT_MEMORY_POOL="mimalloc")["pool"] == "mimalloc"
