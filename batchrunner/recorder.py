"""The run directory's side of a run: journal each outcome as it arrives, seal parts.

`record` is synchronous on purpose: no await between receiving an answer and journaling
it, so nothing received waits in a buffer a crash would lose. When the run directory
refuses a write (disk full, out of file descriptors) the outcome is held in memory, the
run is told to stop, and `record_held` journals it once the run's sockets are closed.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio

from batchrunner.errors import DiskError, write_error

if TYPE_CHECKING:
    from collections.abc import Callable

    from batchrunner.records import Result
    from batchrunner.rundir import RunDir, Sealed


class Recorder:
    """Journals outcomes into `rundir`; `on_error` hears the first DiskError (stop the run)."""

    def __init__(
        self,
        rundir: RunDir,
        *,
        on_error: Callable[[DiskError], None],
        after_commit: Callable[[], None] | None = None,
    ) -> None:
        self.rundir = rundir
        self.on_error = on_error
        self.after_commit = after_commit  # in the commit's thread, once its part is written
        self.error: DiskError | None = None
        self.held: list[Result] = []  # received, not yet journaled (the disk refused)

    def record(self, result: Result) -> bool:
        """Journal one outcome; False when the run directory refused it (it is held)."""
        try:
            self.rundir.record(result)
        except (DiskError, OSError) as exc:
            self.held.append(result)
            self._fail(write_error(exc, self.rundir.path))
            return False
        return True

    def record_held(self) -> None:
        """Journal the held outcomes, now that the run has stopped (out of descriptors, its
        closed sockets free them); what still cannot be written stays pending."""
        held, self.held = self.held, []
        for n, result in enumerate(held):
            try:
                self.rundir.record(result)
            except (DiskError, OSError):
                self.held = held[n:]
                return

    async def commit_loop(self) -> None:
        while True:
            await anyio.sleep(0.2)
            # --durability os: the ~1 s loss bound must hold while outcomes are sparse too.
            self.rundir.sync_if_due(time.monotonic())
            if self.rundir.should_seal(time.monotonic()):
                await self.commit()

    async def commit(self) -> None:
        """Seal the journal segment and turn it into a Parquet part (in a thread)."""
        try:
            sealed = self.rundir.seal()
            if sealed is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._commit, sealed)
        except (DiskError, OSError) as exc:
            self._fail(write_error(exc, self.rundir.path))

    def _commit(self, sealed: Sealed) -> None:
        self.rundir.commit(sealed)
        if self.after_commit is not None:
            self.after_commit()

    def _fail(self, exc: DiskError) -> None:
        # What is on disk stays valid: parts are whole or invisible, segments replayable.
        if self.error is None:
            self.error = exc
            self.on_error(exc)
