"""run.json: the run directory's history of invocations, for people and for `report`.

Shape (format 1): `{"format": 1, "job": {...}, "invocations": [{...}, ...]}`; one entry is
appended per invocation of `run` and rewritten when it ends; `job` repeats the latest
entry's job (so `jq .job.pricing run.json` needs no index). Each write replaces the whole
file atomically (`files.atomic_write`), so a crash leaves the previous version whole.
Nothing here decides what an entry holds: `invocation.py` builds them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from batchrunner.rundir.files import atomic_write

if TYPE_CHECKING:
    from pathlib import Path

FORMAT = 1
NAME = "run.json"


def load_history(run_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """run.json's content, read-only: (history, None), (None, None) when there is none,
    or (None, why) when it cannot be read as a history."""
    try:
        data = json.loads((run_dir / NAME).read_bytes())
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if not isinstance(data, dict) or not isinstance(data.get("invocations"), list):
        return None, "no list of invocations"
    return data, None


def read_history(run_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """run.json's content, or a new history when there is none; with warnings.

    A file that cannot be read as a history is set aside as `run.json.unreadable` (kept,
    not overwritten: it may be all that tells two old nights apart) and a new one begins.
    """
    history, problem = load_history(run_dir)
    if problem is not None:
        return _set_aside(run_dir / NAME, problem)
    return history or new_history(), []


def new_history() -> dict[str, Any]:
    return {"format": FORMAT, "job": None, "invocations": []}


def _set_aside(path: Path, reason: str) -> tuple[dict[str, Any], list[str]]:
    aside = path.with_name(NAME + ".unreadable")
    try:
        path.replace(aside)
    except OSError as exc:
        return new_history(), [f"{path} is unreadable ({reason}) and could not be moved: {exc}"]
    return new_history(), [f"{path} was unreadable ({reason}); kept as {aside.name}, new history"]


def write_history(run_dir: Path, history: dict[str, Any]) -> None:
    """Replace run.json whole (temp file, fsync, rename). Raises DiskError when refused."""
    text = json.dumps(history, indent=1, ensure_ascii=False, default=str) + "\n"
    with atomic_write(run_dir / NAME, run_dir=run_dir) as fh:
        # A lone surrogate (an undecodable byte in a file name) becomes a `\udcXX` escape,
        # which is still valid JSON; strict UTF-8 would refuse the whole file.
        fh.write(text.encode("utf-8", "backslashreplace"))


def invocation_line(entry: object) -> str:
    """One invocation in a line for people: when, how it ended, what it did, on what."""
    entry = _obj(entry)
    mine, job, source = (_obj(entry.get(k)) for k in ("this_invocation", "job", "input"))
    ended = entry.get("ended_at") or "never recorded (killed?)"
    code = entry.get("exit_code")
    digest = str(source.get("content_sha256") or source.get("sha256") or "?")[:12]
    return (
        f"#{entry.get('number', '?')} {entry.get('started_at', '?')} to {ended}, exit "
        f"{'?' if code is None else code}: {mine.get('succeeded', 0)} ok, "
        f"{mine.get('errored', 0)} errored, {mine.get('requests', 0)} requests; model "
        f"{_obj(job.get('request')).get('model', '?')}, input {digest}, "
        f"v{entry.get('version', '?')}"
    )


def _obj(value: object) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one (run.json may be hand-edited)."""
    return value if isinstance(value, dict) else {}
