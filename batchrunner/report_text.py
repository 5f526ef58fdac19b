"""`report`'s value, `Report`, and its text for people: one line per fact, numbers with
thousands separators. `report.summarize` builds the value from a run directory."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from batchrunner.rundir.history import invocation_line

if TYPE_CHECKING:
    from collections.abc import Mapping


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """The summary of one run directory; keys follow the results.parquet columns."""

    run_dir: str
    total: int
    complete: bool
    running: bool
    status: Mapping[str, int]  # succeeded, errored, pending
    error_type: Mapping[str, int]
    input_tokens: Mapping[str, float]  # sum, mean (over rows that carry a count)
    output_tokens: Mapping[str, float]
    cache_read_input_tokens: Mapping[str, float] | None  # None: no response carried it
    cache_creation_input_tokens: Mapping[str, float] | None
    latency_ms: Mapping[str, float] | None  # p50, p90, p99, max; None: nothing was sent
    attempts: Mapping[str, Any]  # sum, histogram {"1": n, ...}
    completed_at: Mapping[str, str | None]  # first, last (ISO 8601, UTC)
    wall_s: float
    rows_per_s: float | None
    requests_per_s: float | None
    cost: Mapping[str, Any] | None
    last_error: Mapping[str, Any] | None = None  # the newest failed attempt in calls.log
    invocations: tuple[Mapping[str, Any], ...] = ()  # run.json's entries, oldest first
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "invocations": list(self.invocations),
            "warnings": list(self.warnings),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def to_text(self) -> str:
        """The same figures for people, one topic per line."""
        return "\n".join(text_lines(self))


def iso(us: int | None) -> str | None:
    if us is None:
        return None
    stamp = pa.scalar(us, pa.timestamp("us", tz="UTC")).as_py()
    return str(stamp.isoformat().replace("+00:00", "Z"))


def _n(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _ms(value: float) -> str:
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.1f} ms"


def text_lines(r: Report) -> list[str]:
    state = "complete" if r.complete else ("running" if r.running else "incomplete")
    s = r.status
    lines = [
        f"run dir   {r.run_dir} ({state})",
        f"rows      {r.total:,}: {s['succeeded']:,} succeeded, {s['errored']:,} errored, "
        f"{s['pending']:,} pending",
    ]
    if r.error_type:
        lines.append("errors    " + ", ".join(f"{t} {n:,}" for t, n in r.error_type.items()))
    lines.append(
        f"tokens    input {_n(r.input_tokens['sum'])} (mean {_n(r.input_tokens['mean'])}), "
        f"output {_n(r.output_tokens['sum'])} (mean {_n(r.output_tokens['mean'])})"
    )
    cache = [
        f"{label} {_n(stats['sum'])}"
        for label, stats in (
            ("read", r.cache_read_input_tokens),
            ("creation", r.cache_creation_input_tokens),
        )
        if stats is not None
    ]
    if cache:
        lines.append("cache     " + ", ".join(cache) + " input tokens")
    if r.latency_ms is not None:
        lines.append("latency   " + ", ".join(f"{k} {_ms(v)}" for k, v in r.latency_ms.items()))
    histogram = r.attempts["histogram"]
    if histogram:
        lines.append("attempts  " + ", ".join(f"{k}: {n:,}" for k, n in histogram.items()))
    if r.rows_per_s is not None:
        lines.append(
            f"time      {r.wall_s:,.1f} s busy, {r.rows_per_s:,.1f} rows/s, "
            f"{r.requests_per_s:,.1f} requests/s "
            f"(outcomes {r.completed_at['first']} to {r.completed_at['last']})"
        )
    lines.append(_cost_line(r.cost))
    if r.last_error is not None:
        lines.append(_last_error_line(r.last_error))
    lines += [f"run       {invocation_line(entry)}" for entry in r.invocations]
    lines += [f"warning: {w}" for w in r.warnings]
    return lines


def _cost_line(cost: Mapping[str, Any] | None) -> str:
    if cost is None:
        return "cost      unknown: give --job FILE with a [pricing] section"
    return (
        f"cost      ${cost['usd']:,.4f} (input ${cost['input_usd']:,.4f}, output "
        f"${cost['output_usd']:,.4f}; ${cost['input_per_mtok']:g}/${cost['output_per_mtok']:g} "
        f"per million tokens, from {cost['pricing_from']})"
    )


def _last_error_line(e: Mapping[str, Any]) -> str:
    """The newest failed attempt: what a stop's message quotes, for a later look."""
    ts = e.get("ts")
    when = iso(int(ts * 1e6)) if isinstance(ts, int | float) else None
    status = f"HTTP {e['http_status']} " if e.get("http_status") is not None else ""
    message = f': "{e["error_message"]}"' if e.get("error_message") else ""
    return (
        f"last error {when or '?'}, row {e.get('row_id')} attempt {e.get('attempt')}: "
        f"{status}{e.get('error_type')}{message} (calls.log has every attempt)"
    )
