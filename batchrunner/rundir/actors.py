"""The Ray engine's actor directories: `DIR/ray/<actor>/`, each a run directory layout of
its own (lock, manifest, journal/, parts/) that one actor writes while it runs a batch.

An actor holds its directory's lock only while it runs a batch, so a lock that can be
taken belongs to an actor that is idle, finished or dead: its outcomes no longer change
for the rows of the batch at hand. Reads only (the lock probe aside); gather.py moves the
outcomes into the run directory's parts.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import TYPE_CHECKING

from batchrunner.rundir.files import list_parts, list_segments
from batchrunner.rundir.lines import segment_outcomes
from batchrunner.rundir.parts import is_unreadable, read_part_outcomes
from batchrunner.rundir.status import lock_held

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

ACTORS_DIR = "ray"


def actor_dirs(run_dir: Path) -> list[Path]:
    """Every actor directory of `run_dir`, sorted by name."""
    base = run_dir / ACTORS_DIR
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if p.is_dir())


def in_use(actor_dir: Path) -> bool:
    """Whether a live actor holds `actor_dir`'s lock (it is running a batch).

    Only directories with a manifest are probed: their actor took the lock before writing
    it, so this probe can never make an actor's own `take_lock` fail.
    """
    return (actor_dir / "manifest.json").exists() and lock_held(actor_dir)


def holds_outcomes(run_dir: Path) -> bool:
    """Whether any actor directory holds an outcome not yet gathered."""
    for actor in actor_dirs(run_dir):
        if list_parts(actor / "parts"):
            return True
        if any(seg.stat().st_size > 0 for _, seg in list_segments(actor / "journal")):
            return True
    return False


class Elsewhere:
    """Rows recorded in other actors' directories, for a batch to skip: Ray runs a batch
    again on another actor when its actor died, after it may have journaled some rows.
    Parts never change once written, so each is read once; segments are read each time."""

    def __init__(self, run_dir: Path, own: Path) -> None:
        self.run_dir = run_dir
        self.own = own
        self._parts: dict[Path, Sequence[int]] = {}

    def indices(self) -> set[int]:
        found: set[int] = set()
        for actor in actor_dirs(self.run_dir):
            if actor == self.own:
                continue
            for seq, part in list_parts(actor / "parts"):
                found.update(self._part(seq, part))
            for _, segment in list_segments(actor / "journal"):
                # A segment may vanish (its part just written): then the part has its rows,
                # and the batch skips them the next time it is run.
                with contextlib.suppress(FileNotFoundError):
                    found.update(segment_outcomes(segment)[0])
        return found

    def _part(self, seq: int, part: Path) -> Sequence[int]:
        if part not in self._parts:
            try:
                self._parts[part] = read_part_outcomes(seq, part).indices
            except FileNotFoundError:
                return []  # gathered meanwhile: the driver counts it
            except Exception as exc:
                if not is_unreadable(exc):
                    raise
                return []  # its rows count as pending, as in a run directory's replay
        return self._parts[part]


STOP_FILE = "stop"  # in DIR/ray/: the driver's stop requests, one word a line


def request_stop(run_dir: Path, word: str) -> None:
    """Ask every actor to stop: a signal's name (`SIGINT`, `SIGTERM`: finish what is on
    the wire, as a local run does), `stop` (a run-level stop: the same) or `now` (a
    second signal: no grace). Actors poll the file; it lives on the storage they share."""
    path = run_dir / ACTORS_DIR / STOP_FILE
    path.parent.mkdir(exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, f"{word}\n".encode("ascii"))
    finally:
        os.close(fd)


def stop_words(run_dir: Path) -> list[str]:
    """The stop requests so far, oldest first; [] while none."""
    try:
        text = (run_dir / ACTORS_DIR / STOP_FILE).read_text("ascii")
    except FileNotFoundError:
        return []
    return [word for word in text.split("\n") if word]


OWNER_FILE = "owner"  # in DIR/ray/: the token of the invocation whose actors may write


def take_over(run_dir: Path) -> str:
    """Make the calling invocation (it holds the run's lock) the one whose actors may run
    batches here, and forget earlier stop requests; returns its token. An actor of an
    earlier driver checks the token once it holds its own directory's lock, so it either
    sees this one and sends nothing, or held its lock first and is waited for
    (`gather.wait_idle`) before anything is gathered or sent."""
    token = uuid.uuid4().hex
    base = run_dir / ACTORS_DIR
    base.mkdir(exist_ok=True)
    tmp = base / f"{OWNER_FILE}.tmp"
    tmp.write_text(token, "ascii")
    tmp.replace(base / OWNER_FILE)
    (base / STOP_FILE).unlink(missing_ok=True)
    return token


def owner(run_dir: Path) -> str | None:
    """The token of the invocation whose actors may run batches here."""
    try:
        return (run_dir / ACTORS_DIR / OWNER_FILE).read_text("ascii")
    except FileNotFoundError:
        return None


def release(run_dir: Path) -> None:
    """At the end of an invocation, every actor directory gathered: remove `DIR/ray/`."""
    base = run_dir / ACTORS_DIR
    for name in (STOP_FILE, OWNER_FILE):
        (base / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # gone already, or not empty (a late actor's)
        base.rmdir()
