"""The live progress display of `run` on a terminal: one line per item, fitted to its width.

rich redraws the block in place (cursor up, erase line); warnings and `-v` lines go
through `echo`, which prints them above the block and redraws it below. (click.echo
would not do: it wraps stderr's buffer, bypassing rich's stand-in for sys.stderr, and a
line written behind rich's back leaves a stale copy of the block.) Every line is cut to one column
less than the terminal is wide, read again at each refresh (a resized pane is followed),
so no line ever wraps: a wrapped line is what left stale copies on the screen before. Only
this module imports rich, and only when a terminal display is used (40-70 ms of imports).
Cost: 0.23-0.30 ms of CPU per refresh (6 lines at 80 columns on a pty, median of 2 000;
loaded 2-core machine; `bench/display_refresh.py`), once a second: ~0.03% of a core.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

from batchrunner.progress import PlainProgress, Rates, progress_items

if TYPE_CHECKING:
    from typing import TextIO

    from batchrunner.progress import Progress
    from batchrunner.spec import PricingSpec

_BAR = 16
_LABEL = 8


def terminal_size(stream: TextIO) -> tuple[int, int]:
    """(columns, lines) of the terminal `stream` writes to; 80 x 24 when it cannot tell.

    Asked of this stream itself: rich would ask stdin first, which may be another terminal
    (or another size) than the one the display is drawn on.
    """
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return 80, 24
    return size.columns or 80, size.lines or 24


def display_lines(
    p: Progress,
    rates: tuple[float, float, float, float],
    pricing: PricingSpec | None,
    *,
    width: int,
) -> list[str]:
    """The display's lines, each at most `width` characters (cut with an ellipsis); the
    live display cuts them again by terminal cells, for wide characters."""
    lines = []
    for label, text in progress_items(p, rates, pricing):
        if label == "rows":
            filled = int(_BAR * p.done / p.total) if p.total else _BAR
            text = f"[{'#' * filled}{'.' * (_BAR - filled)}] {text}"
        line = f"{label:<{_LABEL}} {text}"
        lines.append(line if len(line) <= width else line[: max(width - 1, 0)] + "…")
    return lines


class LiveDisplay:
    """Receives `Progress` about once a second and redraws the block in place."""

    def __init__(self, stream: TextIO, *, pricing: PricingSpec | None = None) -> None:
        from rich.console import Console
        from rich.live import Live

        self.pricing = pricing
        self._stream = stream
        self._console = Console(file=stream, highlight=False, markup=False, emoji=False)
        # Redrawn only when `update` is called: no refresh thread of rich's own.
        self._live = Live(
            console=self._console,
            auto_refresh=False,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=True,
            vertical_overflow="crop",
        )
        self._rates = Rates()
        self._live_started = False
        self._width = 79

    def update(self, p: Progress) -> None:
        from rich.console import Group
        from rich.text import Text

        columns, rows = terminal_size(self._stream)
        self._console.size = (columns, rows)
        # One column spare: a line that fills the last column leaves some terminals in a
        # pending wrap, and the next cursor move then lands a line off.
        width = self._width = max(columns - 1, 1)
        lines = display_lines(p, self._rates.add(p, time.monotonic()), self.pricing, width=width)
        texts = [Text(line, no_wrap=True, overflow="ellipsis") for line in lines]
        for text in texts:
            text.truncate(width, overflow="ellipsis")  # by cells: a CJK character takes two
        block = Group(*texts)
        if not self._live_started:
            self._live.start()
            self._live_started = True
        self._live.update(block, refresh=True)

    def echo(self, line: str) -> None:
        """A line above the block (a warning, a `-v` call line); the block follows below."""
        from rich.text import Text

        if self._live_started:
            self._console.print(Text(line), width=self._width)  # wrapped short of the edge
        else:
            self._stream.write(line + "\n")
            self._stream.flush()

    def close(self) -> None:
        """Clear the block (the summary follows) and give sys.stderr back."""
        if self._live_started:
            self._live.stop()
            self._live_started = False


def open_display(
    *, quiet: bool, no_progress: bool, pricing: PricingSpec | None
) -> LiveDisplay | PlainProgress | None:
    """The progress display `run` asked for: live on a terminal (stderr), plain lines
    elsewhere (a dumb terminal, which cannot move its cursor, included) or with
    --no-progress, none with -q."""
    if quiet:
        return None
    dumb = os.environ.get("TERM", "").lower() in ("dumb", "unknown")
    if no_progress or dumb or not sys.stderr.isatty():
        return PlainProgress(pricing=pricing)
    return LiveDisplay(sys.stderr, pricing=pricing)
