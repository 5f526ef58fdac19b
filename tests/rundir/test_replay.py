"""One replay rule for the reader and the writer: status counts what the next open keeps."""

from __future__ import annotations

import ast
from pathlib import Path

import batchrunner
from batchrunner.rundir import read_status
from batchrunner.rundir.files import segment_path
from tests.helpers import journal_lines, make_part, make_result, open_run

TOTAL = 10


def _crash_left(run: Path) -> None:
    """Every state a kill can leave, one sequence number each."""
    open_run(run, TOTAL).close()
    journal = run / "journal"
    # 1: commit killed between the part's rename and the segment's unlink.
    make_part(run, 1, [make_result(i) for i in range(3)])
    segment_path(journal, 1).write_bytes(journal_lines([make_result(i) for i in range(3)]))
    # 2: a short part next to its whole segment: the union counts, the segment's last.
    make_part(run, 2, [make_result(3, "errored")])
    seg = [make_result(3), make_result(4, "errored")]
    segment_path(journal, 2).write_bytes(journal_lines(seg))
    # 3: a segment never committed, with a torn last line.
    torn = journal_lines([make_result(5), make_result(6)])[:-9]
    segment_path(journal, 3).write_bytes(torn)
    # 4: an unreadable part; its segment survived.
    (run / "parts" / "part-000004.parquet").write_bytes(b"not parquet")
    segment_path(journal, 4).write_bytes(journal_lines([make_result(7)]))


def test_status_counts_what_recovery_then_keeps(tmp_path: Path) -> None:
    """Before and after the writer repairs a crash-left dir, status gives the same counts."""
    run = tmp_path / "run"
    _crash_left(run)
    before = read_status(run)
    assert (before.succeeded, before.errored, before.pending) == (6, 1, 3)
    assert any("incomplete last line" in w for w in before.warnings)
    assert any("part-000004.parquet is unreadable" in w for w in before.warnings)
    with open_run(run, TOTAL) as rd:
        counts = rd.counts()
        assert (counts.succeeded, counts.errored, counts.pending) == (6, 1, 3)
        assert [rd.is_done(i) for i in range(TOTAL)] == [True] * 6 + [False, True] + [False] * 2
    after = read_status(run)
    assert (after.succeeded, after.errored, after.pending, after.warnings) == (6, 1, 3, ())
    assert list((run / "journal").iterdir()) == []


def _imports(module: str) -> set[str]:
    """The batchrunner modules `module` imports, directly or through other batchrunner ones."""
    root = Path(batchrunner.__file__).parent.parent
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = root / (name.replace(".", "/") + ".py")
        if not path.exists():
            path = root / name.replace(".", "/") / "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("batchrunner"):
                    todo.append(node.module)
            elif isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.startswith("batchrunner")]
    return seen


def test_status_imports_nothing_that_writes_the_run_dir() -> None:
    """The read side never reaches the writer, the journal writer, recovery or assembly."""
    writers = {f"batchrunner.rundir.{m}" for m in ("writer", "journal", "recovery", "results")}
    assert _imports("batchrunner.rundir.status") & writers == set()
    assert _imports("batchrunner.rundir.writer") >= writers - {"batchrunner.rundir.writer"}
