"""Progress display for `run`: a redrawn line on a terminal, plain lines otherwise.

Only the CLI uses it. Lines go to stderr so stdout stays clean for the summary.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchrunner.runner import Progress

LINE_EVERY_S = 10.0  # cron logs want a heartbeat, not a line per second


class ProgressPrinter:
    """Receives `Progress` about once a second; draws a bar (TTY) or a line every 10 s."""

    def __init__(self, *, bar: bool) -> None:
        self.bar = bar
        self._last_line = 0.0
        self._drawn = False

    def update(self, p: Progress) -> None:
        text = render(p)
        if self.bar:
            sys.stderr.write("\r\x1b[2K" + text)
            sys.stderr.flush()
            self._drawn = True
        elif time.monotonic() - self._last_line >= LINE_EVERY_S or p.stopping:
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
    if p.stopping:
        line += f" | stopping: {p.stopping}"
    return line


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
