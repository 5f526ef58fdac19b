"""What a run tells its caller while it runs, and the plain progress lines of `run`.

The runner fills `Progress` (cheap integer counters, bumped as attempts and outcomes
arrive) and calls the caller's `Hooks`: `progress` about once a second, `ended` once when
the invocation ends. `progress_items` turns a `Progress` into the display's items, shared
by the plain lines here and the live display (`display.py`, rich, for terminals). Lines
go to stderr so stdout stays clean for the summary.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import signal
    from collections.abc import AsyncIterable, Callable

    from batchrunner.records import Attempt, Result
    from batchrunner.spec import PricingSpec

LINE_EVERY_S = 10.0  # cron logs want a heartbeat, not a line per second
RATE_WINDOW_S = 10.0  # rates and the ETA follow the last 10 s, not the whole run


@dataclass(slots=True, kw_only=True)
class Progress:
    """Live counters of one invocation, handed to the progress display about once a second.

    The counters are bumped per attempt (`attempted`) and per outcome (`recorded`) with
    integer increments only; the fields below `limit` are set when a snapshot is taken.
    """

    total: int
    done_before: int = 0
    succeeded: int = 0
    errored: int = 0
    in_flight: int = 0  # attempts on the wire: the pacer's count, not the workers'
    started: float = 0.0
    stopping: str | None = None
    waiting: str | None = None  # what the pacer holds attempts back for, and how long
    attempts: int = 0  # HTTP attempts sent by this invocation
    retries: int = 0  # attempts after a row's first
    http_429: int = 0
    http_529: int = 0
    input_tokens: int = 0  # usage of the outcomes this invocation recorded and paid for
    output_tokens: int = 0
    reused: int = 0  # rows answered without a request (--dedupe copies, --cache hits)
    errors: dict[str, int] = field(default_factory=dict)  # errored rows by error_type
    limit: int = 0  # the pacer's in-flight limit now; 0: not known yet
    retry_waiting: int = 0  # rows between a failed attempt and their next one
    pace: float | None = None  # the request pace in force (requests/s), if any
    slowed: str | None = None  # why the pacer last slowed the run down, if it did

    @property
    def done(self) -> int:
        return self.done_before + self.succeeded + self.errored

    def attempted(self, attempt: Attempt) -> None:
        """Count one HTTP attempt as it ends (calls.log's tap)."""
        self.attempts += 1
        if attempt.attempt > 1:
            self.retries += 1
        if attempt.http_status == 429:
            self.http_429 += 1
        elif attempt.http_status == 529:
            self.http_529 += 1

    def recorded(self, result: Result, *, reused: bool = False) -> None:
        """Count one outcome as it is journaled; a `reused` answer's usage was paid for
        by another row or run, so this invocation's tokens and cost leave it out."""
        if reused:
            self.reused += 1
        if result.status == "succeeded":
            self.succeeded += 1
        else:
            self.errored += 1
            kind = result.error_type or "unknown"
            self.errors[kind] = self.errors.get(kind, 0) + 1
        if reused:
            return
        if result.input_tokens is not None:
            self.input_tokens += result.input_tokens
        if result.output_tokens is not None:
            self.output_tokens += result.output_tokens

    def cost_usd(self, pricing: PricingSpec | None) -> float | None:
        """What this invocation's recorded tokens cost, with `[pricing]`; None without."""
        if pricing is None:
            return None
        return (
            self.input_tokens * pricing.input_per_mtok
            + self.output_tokens * pricing.output_per_mtok
        ) / 1e6


@dataclass(slots=True, kw_only=True)
class Hooks:
    """The caller's callbacks for one run: live `Progress` about once a second, each
    calls.log line (`-v`), each warning, and the end of the invocation (`ended`, with an
    `RunEnd`). `warn` also keeps the warnings for RunStats and run.json. `interrupts`,
    when given, delivers the stop signals instead of the process."""

    progress: Callable[[Progress], None] | None = None
    call_echo: Callable[[str], None] | None = None
    warn_to: Callable[[str], None] | None = None
    interrupts: AsyncIterable[signal.Signals] | None = None
    ended: Callable[[RunEnd], None] | None = None
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        if self.warn_to is not None:
            self.warn_to(message)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunEnd:
    """How one invocation ended: the whole run's counts, this invocation's counters, and
    the exit code it leaves with (None: an unexpected error, a bug). For the summary."""

    run_dir: str
    results: str | None  # results.parquet, when this invocation wrote it
    total: int
    succeeded: int
    errored: int
    pending: int
    progress: Progress
    wall_s: float
    exit_code: int | None
    warnings: tuple[str, ...] = ()


class Rates:
    """Per-second rates over the last `RATE_WINDOW_S` of snapshots: requests, input and
    output tokens, rows. The first snapshot is measured from the invocation's start."""

    def __init__(self) -> None:
        # (time, attempts, input tokens, output tokens, rows recorded by this invocation)
        self._samples: deque[tuple[float, int, int, int, int]] = deque()

    def add(self, p: Progress, now: float) -> tuple[float, float, float, float]:
        """Note `p` at `now`; return (requests/s, input tok/s, output tok/s, rows/s)."""
        if not self._samples:
            self._samples.append((p.started, 0, 0, 0, 0))
        rows = p.succeeded + p.errored
        self._samples.append((now, p.attempts, p.input_tokens, p.output_tokens, rows))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW_S:
            self._samples.popleft()
        first, last = self._samples[0], self._samples[-1]
        span = last[0] - first[0]
        if span <= 0:
            return (0.0, 0.0, 0.0, 0.0)
        r, i, o, n = ((last[k] - first[k]) / span for k in range(1, 5))
        return (r, i, o, n)


def progress_items(
    p: Progress, rates: tuple[float, float, float, float], pricing: PricingSpec | None
) -> list[tuple[str, str]]:
    """The display's items as (label, text), in the order a reader scans them."""
    req_s, in_s, out_s, rows_s = rates
    pct = 100.0 * p.done / p.total if p.total else 100.0
    left = p.total - p.done
    eta = _duration(left / rows_s) if rows_s > 0 else ("0s" if left <= 0 else "?")
    cost = p.cost_usd(pricing)
    errors = sorted(p.errors.items(), key=lambda kv: (-kv[1], kv[0]))
    limit = str(p.limit) if p.limit else "?"
    items = [
        (
            "rows",
            f"{p.done:,}/{p.total:,} {pct:.1f}%  eta {eta}  (this run: {p.succeeded:,} ok, "
            f"{p.errored:,} errored)",
        ),
        (
            "speed",
            f"{req_s:,.1f} req/s  in {in_s:,.0f} tok/s  out {out_s:,.0f} tok/s  "
            f"(tokens {p.input_tokens:,} in, {p.output_tokens:,} out)",
        ),
        ("cost", f"${cost:,.4f} so far" if cost is not None else "unknown: no [pricing]"),
        (
            "wire",
            f"{p.in_flight:,} on the wire (limit {limit})  {p.retry_waiting:,} rows to "
            f"retry  retries {p.retries:,}  429s {p.http_429:,}  529s {p.http_529:,}",
        ),
        ("errors", ", ".join(f"{_printable(kind)} {n:,}" for kind, n in errors) or "none"),
    ]
    if p.slowed:  # the pacer's decision and why: a limit, not a flaky server
        pace = f", pace {p.pace:.3g} req/s" if p.pace is not None else ""
        items.append(("slowed", _printable(f"(in-flight limit {limit}{pace}): {p.slowed}")))
    if p.stopping:
        items.append(("stopping:", _printable(p.stopping)))
    elif p.waiting:
        items.append(("waiting", _printable(p.waiting)))
    return items


def render(
    p: Progress,
    *,
    pricing: PricingSpec | None = None,
    rates: tuple[float, float, float, float] | None = None,
) -> str:
    """The plain one-line form: every item, `label text`, joined by ` | `."""
    if rates is None:
        rates = Rates().add(p, time.monotonic())
    return " | ".join(f"{label} {text}" for label, text in progress_items(p, rates, pricing))


class PlainProgress:
    """Plain lines on stderr: one every 10 s, and one at once when the run starts waiting
    for the server or stopping (a log must say why nothing moves)."""

    def __init__(self, *, pricing: PricingSpec | None = None) -> None:
        self.pricing = pricing
        self._rates = Rates()
        self._last_line = 0.0
        self._waiting: str | None = None
        self._slowed: str | None = None

    def update(self, p: Progress) -> None:
        now = time.monotonic()
        rates = self._rates.add(p, now)
        started_waiting = p.waiting is not None and self._waiting is None
        slowed_again = p.slowed != self._slowed  # a log must say when and why it slowed
        self._waiting, self._slowed = p.waiting, p.slowed
        if now - self._last_line >= LINE_EVERY_S or p.stopping or started_waiting or slowed_again:
            self._last_line = now
            sys.stderr.write(render(p, pricing=self.pricing, rates=rates) + "\n")
            sys.stderr.flush()

    def echo(self, line: str) -> None:
        """A line of its own (a warning, a `-v` call line)."""
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        """Nothing to clear: every line is complete."""


def _printable(text: str) -> str:
    """Text the server had a say in, safe on one line (no newline or escape sequence)."""
    return text if text.isprintable() else "".join(c if c.isprintable() else "?" for c in text)


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
