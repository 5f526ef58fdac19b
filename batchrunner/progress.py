"""What a run tells its caller while it runs, and the progress display for `run`.

The runner fills `Progress` and calls the caller's `Hooks`; the CLI draws the progress as
a redrawn line on a terminal, plain lines otherwise. Lines go to stderr so stdout stays
clean for the summary.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

LINE_EVERY_S = 10.0  # cron logs want a heartbeat, not a line per second


@dataclass(slots=True, kw_only=True)
class Progress:
    """Live counters, handed to the CLI's progress display about once a second."""

    total: int
    done_before: int = 0
    succeeded: int = 0
    errored: int = 0
    in_flight: int = 0  # attempts on the wire
    started: float = 0.0
    stopping: str | None = None
    waiting: str | None = None  # what the pacer holds attempts back for, and how long
    limit: int | None = None  # the pacer's in-flight limit now
    pace: float | None = None  # the request pace in force (requests/s), if any
    slowed: str | None = None  # why the pacer last slowed the run down, if it did

    @property
    def done(self) -> int:
        return self.done_before + self.succeeded + self.errored


@dataclass(slots=True, kw_only=True)
class Hooks:
    """The caller's callbacks for one run: live `Progress` about once a second, each
    calls.log line (`-v`), each warning. `warn` also keeps the warnings for RunStats."""

    progress: Callable[[Progress], None] | None = None
    call_echo: Callable[[str], None] | None = None
    warn_to: Callable[[str], None] | None = None
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        if self.warn_to is not None:
            self.warn_to(message)


class ProgressPrinter:
    """Receives `Progress` about once a second; draws a bar (TTY) or a line every 10 s."""

    def __init__(self, *, bar: bool) -> None:
        self.bar = bar
        self._last_line = 0.0
        self._drawn = False
        self._waiting: str | None = None
        self._slowed: str | None = None

    def update(self, p: Progress) -> None:
        text = render(p)
        if self.bar:
            sys.stderr.write("\r\x1b[2K" + text)
            sys.stderr.flush()
            self._drawn = True
            return
        # A plain line when the heartbeat is due, and at once when the run starts waiting
        # for the server or stopping: a log must say why nothing moves.
        started_waiting = p.waiting is not None and self._waiting is None
        slowed_again = p.slowed != self._slowed  # a log must say when and why it slowed
        self._waiting, self._slowed = p.waiting, p.slowed
        due = time.monotonic() - self._last_line >= LINE_EVERY_S
        if due or p.stopping or started_waiting or slowed_again:
            self._last_line = time.monotonic()
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    def close(self) -> None:
        if self._drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self._drawn = False


def render(p: Progress) -> str:
    elapsed = max(time.monotonic() - p.started, 1e-6)
    rate = (p.succeeded + p.errored) / elapsed
    pct = 100.0 * p.done / p.total if p.total else 100.0
    width = 24
    filled = int(width * pct / 100)
    eta = (p.total - p.done) / rate if rate > 0 else float("inf")
    eta_text = _duration(eta) if eta != float("inf") else "?"
    line = (
        f"[{'#' * filled}{'.' * (width - filled)}] {p.done}/{p.total} {pct:5.1f}% "
        f"this run: ok {p.succeeded} err {p.errored} "
        f"in-flight {p.in_flight} {rate:.1f} rows/s eta {eta_text}"
    )
    if p.slowed:
        pace = f", pace {p.pace:.3g} req/s" if p.pace is not None else ""
        line += f" | slowed (in-flight limit {p.limit}{pace}): {p.slowed}"
    if p.stopping:
        line += f" | stopping: {p.stopping}"
    elif p.waiting:
        line += f" | waiting {p.waiting}"
    return line


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
