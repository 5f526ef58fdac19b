"""`report`: what a run directory says about a run, summarised (counts, tokens, latency, cost).

A read-only consumer of the recorded outcomes (recorded.py), so it is right mid-run and
after any number of resumes. One streaming pass, vectorised in Arrow; memory is bounded
by histograms, not by the number of rows. Sends nothing and writes nothing.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from batchrunner.calllog import last_error
from batchrunner.errors import ConfigError
from batchrunner.report_text import Report, iso
from batchrunner.rundir import read_status
from batchrunner.rundir.history import load_history
from batchrunner.rundir.recorded import Recorded

if TYPE_CHECKING:
    from pathlib import Path

_COLUMNS = (
    "status",
    "error_type",
    "input_tokens",
    "output_tokens",
    "attempts",
    "latency_ms",
    "completed_at",
    "response",
)
# Cache tokens live only in the response body. A regex over the JSON text in Arrow costs
# ~2 us per 1.3 KB row against ~36 us for json.loads. It is anchored on a `usage` object
# (one level of nesting allowed inside it); inside JSON strings the quotes around a key
# are escaped, so text never matches. A body with several `usage` keys (a tool's input
# may hold one) takes the last, the top-level one, through a greedy prefix (~12 us a row).
_USAGE = r'"usage"\s*:\s*\{(?:[^{}]|\{[^{}]*\})*?'
_LAST = "(?s)^.*"
_CACHE_PATTERNS = {
    "cache_read_input_tokens": (
        _USAGE + r'"cache_read_input_tokens"\s*:\s*(?P<n>\d+)',  # messages
        r'"prompt_tokens_details"\s*:\s*\{[^{}]*?"cached_tokens"\s*:\s*(?P<n>\d+)',  # chat
    ),
    "cache_creation_input_tokens": (_USAGE + r'"cache_creation_input_tokens"\s*:\s*(?P<n>\d+)',),
}
_LOG_STEP = math.log(1.01)  # latency histogram bins 1% wide: percentiles within ~0.5%
_PERCENTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99}


@dataclass(frozen=True, slots=True)
class Pricing:
    """USD per million input and output tokens, and where they came from."""

    input_per_mtok: float
    output_per_mtok: float
    source: str


@dataclass(slots=True)
class _Tally:
    """Running sums over the recorded rows, one Arrow table at a time."""

    status: Counter[str] = field(default_factory=Counter)
    error_type: Counter[str] = field(default_factory=Counter)
    attempts: Counter[int] = field(default_factory=Counter)
    latency_bins: Counter[int] = field(default_factory=Counter)
    latency_max: float = 0.0
    sums: Counter[str] = field(default_factory=Counter)  # token sums
    counts: Counter[str] = field(default_factory=Counter)  # rows carrying each count
    busy_edges: Counter[int] = field(default_factory=Counter)  # +1 start / -1 end, per second
    first_us: int | None = None
    last_us: int | None = None
    first_sent_s: float | None = None

    def add(self, table: pa.Table) -> None:
        _count(self.status, table.column("status"))
        _count(self.error_type, table.column("error_type"))
        _count(self.attempts, table.column("attempts"))
        for name in ("input_tokens", "output_tokens"):
            self._add_sum(name, table.column(name))
        self._add_cache(table.column("response"))
        sent = table.filter(pc.greater(table.column("attempts"), 0))
        self._add_latency(sent.column("latency_ms"))
        self._add_times(sent)

    def _add_cache(self, response: pa.ChunkedArray) -> None:
        several = pc.fill_null(pc.greater(pc.count_substring(response, '"usage"'), 1), False)
        for text, prefix in (
            (response.filter(pc.invert(several)), ""),
            (response.filter(several), _LAST),
        ):
            for name, patterns in _CACHE_PATTERNS.items():
                for pattern in patterns:
                    found = pc.struct_field(pc.extract_regex(text, prefix + pattern), "n")
                    self._add_sum(name, found.cast(pa.int64()))

    def _add_sum(self, name: str, values: pa.ChunkedArray | pa.Array) -> None:
        carried = pc.count(values).as_py()
        if carried:
            self.counts[name] += carried
            self.sums[name] += pc.sum(values).as_py()

    def _add_latency(self, latency: pa.ChunkedArray) -> None:
        if not len(latency):
            return
        floor = pc.max_element_wise(latency, 0.01)  # ln(0) is -inf; 10 us is below any RTT
        bins = pc.floor(pc.divide(pc.ln(floor), _LOG_STEP)).cast(pa.int64())
        _count(self.latency_bins, bins)
        self.latency_max = max(self.latency_max, pc.max(latency).as_py() or 0.0)

    def _add_times(self, sent: pa.Table) -> None:
        """Note when each sent row was busy: [first send, outcome], on a 1 s grid."""
        if not sent.num_rows:
            return
        done_us = sent.column("completed_at").cast(pa.int64())
        done_s = pc.divide(done_us.cast(pa.float64()), 1e6)
        start_s = pc.subtract(done_s, pc.divide(sent.column("latency_ms"), 1000.0))
        _count(self.busy_edges, pc.floor(start_s).cast(pa.int64()))
        for second, n in _counts(pc.floor(done_s).cast(pa.int64())).items():
            self.busy_edges[second + 1] -= n
        first_sent = pc.min(start_s).as_py()
        first, last = pc.min(done_us).as_py(), pc.max(done_us).as_py()
        if self.first_sent_s is None or first_sent < self.first_sent_s:
            self.first_sent_s = first_sent
        self.first_us = first if self.first_us is None else min(self.first_us, first)
        self.last_us = last if self.last_us is None else max(self.last_us, last)

    def busy_s(self) -> float:
        """Seconds during which some row was in flight.

        The outcomes alone decide (each row: first send to outcome), not calls.log: they are
        right after resumes, and the log can be far bigger. The pauses between invocations
        of a resumed run are left out, counted on a 1 s grid; a single stretch is exact.
        """
        if self.first_sent_s is None or self.last_us is None:
            return 0.0
        covered, running, previous = 0, 0, None
        for second in sorted(self.busy_edges):
            if previous is not None and running > 0:
                covered += second - previous
            running += self.busy_edges[second]
            previous = second
        return min(covered, self.last_us / 1e6 - self.first_sent_s)

    def percentiles(self) -> dict[str, float] | None:
        seen = sum(self.latency_bins.values())
        if not seen:
            return None
        out: dict[str, float] = {}
        ordered = sorted(self.latency_bins.items())
        for name, q in _PERCENTILES.items():
            rank, acc = q * seen, 0
            for b, n in ordered:
                acc += n
                if acc >= rank:
                    # The bin's geometric middle, never past the largest latency seen.
                    out[name] = round(min(math.exp((b + 0.5) * _LOG_STEP), self.latency_max), 3)
                    break
        out["max"] = round(self.latency_max, 3)
        return out


def _counts(values: pa.ChunkedArray | pa.Array) -> dict[Any, int]:
    present = pc.drop_null(values)
    if not len(present):
        return {}
    vc = pc.value_counts(present)
    return dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True))


def _count(counter: Counter[Any], values: pa.ChunkedArray | pa.Array) -> None:
    counter.update(_counts(values))


def _token_stats(tally: _Tally, name: str) -> dict[str, float] | None:
    rows = tally.counts[name]
    if not rows:
        return None
    return {"sum": tally.sums[name], "mean": round(tally.sums[name] / rows, 3)}


def _cost(tally: _Tally, pricing: Pricing | None) -> dict[str, Any] | None:
    """USD for the input and output tokens of the recorded rows (cache tokens unpriced:
    [pricing] has no cache rates; for chat, prompt_tokens already include cached ones)."""
    if pricing is None:
        return None
    input_usd = tally.sums["input_tokens"] * pricing.input_per_mtok / 1e6
    output_usd = tally.sums["output_tokens"] * pricing.output_per_mtok / 1e6
    return {
        "usd": round(input_usd + output_usd, 6),
        "input_usd": round(input_usd, 6),
        "output_usd": round(output_usd, 6),
        "input_per_mtok": pricing.input_per_mtok,
        "output_per_mtok": pricing.output_per_mtok,
        "pricing_from": pricing.source,
    }


def summarize(run_dir: Path, *, pricing: Pricing | None = None) -> Report:
    """Summarise what `run_dir` has recorded so far (one streaming pass; safe mid-run).

    Raises OutputError when `run_dir` is not a run directory.
    """
    st = read_status(run_dir)
    recorded = Recorded(run_dir, _COLUMNS)
    tally = _Tally()
    for table in recorded.tables():
        tally.add(table)
    done = tally.status["succeeded"] + tally.status["errored"]
    busy = tally.busy_s()
    requests = sum(k * n for k, n in tally.attempts.items())
    history, problem = load_history(run_dir)
    unread = [f"{run_dir / 'run.json'} is unreadable ({problem})"] if problem else []
    return Report(
        run_dir=str(run_dir),
        total=st.total,
        complete=done >= st.total,
        running=st.running,
        status={
            "succeeded": tally.status["succeeded"],
            "errored": tally.status["errored"],
            "pending": max(0, st.total - done),
        },
        error_type=dict(tally.error_type.most_common()),
        input_tokens=_token_stats(tally, "input_tokens") or {"sum": 0, "mean": 0.0},
        output_tokens=_token_stats(tally, "output_tokens") or {"sum": 0, "mean": 0.0},
        cache_read_input_tokens=_token_stats(tally, "cache_read_input_tokens"),
        cache_creation_input_tokens=_token_stats(tally, "cache_creation_input_tokens"),
        latency_ms=tally.percentiles(),
        attempts={
            "sum": requests,
            "histogram": {str(k): n for k, n in sorted(tally.attempts.items())},
        },
        completed_at={"first": iso(tally.first_us), "last": iso(tally.last_us)},
        wall_s=round(busy, 3),
        rows_per_s=round(done / busy, 3) if busy > 0 else None,
        requests_per_s=round(requests / busy, 3) if busy > 0 else None,
        cost=_cost(tally, pricing),
        last_error=last_error(run_dir / "calls.log"),
        invocations=tuple(history["invocations"]) if history else (),
        warnings=tuple(dict.fromkeys([*st.warnings, *recorded.warnings, *unread])),
    )


def _pricing_of(section: object, source: str) -> Pricing:
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: pricing must be a table of numbers")
    values = {}
    for key in ("input_per_mtok", "output_per_mtok"):
        value = section.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{source}: [pricing] {key} must be a number >= 0")
        values[key] = float(value)
    unknown = sorted(set(section) - set(values))
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r} in [pricing]")
    return Pricing(values["input_per_mtok"], values["output_per_mtok"], source)


def find_pricing(run_dir: Path, job: Path | None) -> Pricing | None:
    """The prices to report cost with: `job`'s [pricing] when given, else the job as run
    recorded in `run_dir/run.json` (`job.pricing`), else None (no cost)."""
    from batchrunner.config import read_job_file

    if job is not None:
        data, problems = read_job_file(job)
        problems = [p for p in problems if "[pricing]" in p]
        if problems:
            raise ConfigError("; ".join(problems))
        return _pricing_of(data["pricing"], str(job)) if "pricing" in data else None
    try:
        run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    as_run = run.get("job") if isinstance(run, dict) else None
    section = as_run.get("pricing") if isinstance(as_run, dict) else None
    if section is None:
        return None
    return _pricing_of(section, str(run_dir / "run.json"))
