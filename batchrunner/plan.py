"""`plan`: what a job would cost, before it runs. Sends no generation request.

One validation pass gives the rows and the output bound (every row's `max_tokens`). Input
tokens are counted by the API itself, `POST {base}/messages/count_tokens`, on a sample of
rows spread evenly over the input (or on every row with `exact`), with the run's client,
pacer and retries, `concurrency` at a time; a sample is extrapolated to the whole input
with a 95% range. With `[pricing]` the counts become a cost range. Writes nothing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import anyio

from batchrunner.admission import AdmissionClosedError
from batchrunner.attempts import send
from batchrunner.client import make_client
from batchrunner.config import KEY_ENV
from batchrunner.costcap import usd
from batchrunner.errors import RunAbortedError
from batchrunner.inputs import read_rows, validate
from batchrunner.inputs.images import request_for
from batchrunner.pacing import Pacer
from batchrunner.protocols import get_protocol
from batchrunner.protocols.counting import COUNT_PATH, CountReader, count_request
from batchrunner.retrying import RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Iterator

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from batchrunner.client import ApiClient
    from batchrunner.errors import RequestError
    from batchrunner.records import Request, Row
    from batchrunner.spec import JobSpec

SAMPLE_ROWS = 100
_Z95 = 1.96  # the normal quantile of a two-sided 95% range
_BATCH = 256
_READER = CountReader()


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What `plan` found; the JSON keys are these fields."""

    input: str
    rows: int
    api: str
    counted_rows: int  # rows whose input tokens the API counted
    exact: bool  # every row counted: the input tokens are the count, not an estimate
    converted_from_chat: bool  # chat rows, counted in the Messages shape
    input_tokens: dict[str, float]  # estimate, low, high (95%), counted_sum, counted_mean
    output_tokens: dict[str, int]  # max: the sum of every row's max_tokens
    cost: dict[str, Any] | None  # low_usd, high_usd, input_usd, output_max_usd, rates
    failed_rows: int  # sampled rows the API would not count (left out of the estimate)
    first_failure: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def to_text(self) -> str:
        return "\n".join(_text_lines(self))


def sample_indices(rows: int, n: int) -> list[int]:
    """`n` row positions spread evenly over `rows` (the middle of each of n equal strata),
    or every position when there are no more rows than that."""
    if rows <= n:
        return list(range(rows))
    return [(2 * i + 1) * rows // (2 * n) for i in range(n)]


async def make_plan(spec: JobSpec, *, api_key: str, exact: bool, sample: int) -> Plan:
    """Validate the input, count input tokens on a sample (or every row), price it.

    Raises SourceError/ConfigError (exit 2) for a bad input, RunAbortedError (exit 3) when
    the API refuses to count at all (key, model, no count_tokens endpoint).
    """
    summary = await anyio.to_thread.run_sync(validate, spec.input, spec.source_options())
    picks = None if exact else set(sample_indices(summary.rows, sample))
    counter = _Counter(spec, api_key)
    await counter.count(picks)
    counts = counter.counts
    if not counts:
        raise RunAbortedError(f"no row could be counted: {counter.first_failure}")
    tokens = _extrapolate(counts, summary.rows)
    bound = summary.max_output_tokens
    return Plan(
        input=str(spec.input),
        rows=summary.rows,
        api=spec.api,
        counted_rows=len(counts),
        exact=len(counts) == summary.rows,
        converted_from_chat=counter.converted,
        input_tokens=tokens,
        output_tokens={"max": bound},
        cost=_cost(spec, tokens, summary.rows, bound),
        failed_rows=counter.failed,
        first_failure=counter.first_failure,
    )


class _Counter:
    """The counting: a reader feeding `concurrency` workers, each sending count requests."""

    def __init__(self, spec: JobSpec, api_key: str) -> None:
        self.spec = spec
        self.api_key = api_key
        n = spec.limits.concurrency
        self.pacer = Pacer(
            concurrency=n,
            min_limit=max(1, n // 8),
            max_wait_s=spec.limits.max_wait_s,
            on_give_up=self._refuse,
        )
        self.policy = RetryPolicy(
            max_attempts=spec.limits.max_attempts,
            max_elapsed_s=spec.limits.max_elapsed_s,
            max_wait_s=spec.limits.max_wait_s,
        )
        self.counts: list[int] = []
        self.failed = 0
        self.first_failure: str | None = None
        self.converted = False
        self.refused: str | None = None
        self._group: anyio.abc.TaskGroup | None = None

    async def count(self, picks: set[int] | None) -> None:
        n = self.spec.limits.concurrency
        client = make_client(base_url=self.spec.base_url, api_key=self.api_key, concurrency=n)
        send_requests, receive = anyio.create_memory_object_stream["Request"](2 * n)
        async with client, anyio.create_task_group() as group:
            self._group = group
            group.start_soon(self._read, picks, send_requests)
            for _ in range(n):
                group.start_soon(self._work, receive.clone(), client)
            receive.close()
        if self.refused is not None:
            raise RunAbortedError(self.refused)

    async def _read(self, picks: set[int] | None, out: MemoryObjectSendStream[Request]) -> None:
        skip = None if picks is None else (lambda index: index not in picks)
        rows = read_rows(self.spec.input, self.spec.source_options(), skip=skip)
        async with out:
            while batch := await anyio.to_thread.run_sync(_take, rows, _BATCH):
                for row in batch:
                    await out.send(await self._request(row))

    async def _request(self, row: Row) -> Request:
        protocol = get_protocol(row.api or self.spec.api)
        self.converted = self.converted or protocol.name == "chat"
        # Images count: their files are read as for the run (request_for), then counted.
        defaults = replace(self.spec.request, stream=False)
        return count_request(await request_for(protocol, row, defaults))

    async def _work(self, requests: MemoryObjectReceiveStream[Request], client: ApiClient) -> None:
        timeout = min(60.0, self.spec.limits.attempt_timeout(False))
        async with requests:
            async for request in requests:
                try:
                    sent = await send(
                        client,
                        request,
                        protocol=_READER,
                        policy=self.policy,
                        timeout_s=timeout,
                        pacer=self.pacer,
                        max_response_bytes=self.spec.limits.max_response_bytes,
                    )
                except AdmissionClosedError:
                    return
                if sent.completion is not None and sent.completion.input_tokens is not None:
                    self.counts.append(sent.completion.input_tokens)
                elif sent.error is not None:
                    self._failed(request, sent.error)

    def _failed(self, request: Request, error: RequestError) -> None:
        refusal = _refusal(error, f"{self.spec.base_url}{COUNT_PATH}")
        if refusal is not None:
            self.pacer.give_up(refusal)  # every row would meet it: stop counting
            return
        self.failed += 1
        if self.first_failure is None:
            self.first_failure = f"row {request.row_id}: {error}"

    def _refuse(self, why: str) -> None:
        self.refused = self.refused or why
        if self._group is not None:
            self._group.cancel_scope.cancel()


def _take(rows: Iterator[Row], n: int) -> list[Row]:
    out: list[Row] = []
    for row in rows:
        out.append(row)
        if len(out) == n:
            break
    return out


def _refusal(err: RequestError, url: str) -> str | None:
    """Why no row can be counted (the key, the account, the model, the endpoint), or None
    for a failure of this row alone."""
    quoted = f"HTTP {err.http_status} {err.error_type}: {' '.join(err.message.split())[:200]}"
    lead = f"POST {url} was refused ({quoted})"
    if err.http_status == 401:
        return f"{lead}: check {KEY_ENV}"
    if err.http_status == 403 or err.is_quota:
        return f"{lead}: check the key's permissions and the account's credit with the provider"
    if err.http_status == 404 and "model" in err.message.lower():
        return f"{lead}: name a model the API serves with --model (or `model` in the job file)"
    if err.http_status in (404, 405, 501):
        return f"{lead}: this API (or a proxy in front of it) does not count tokens"
    return None


def _extrapolate(counts: list[int], rows: int) -> dict[str, float]:
    """The input tokens of all `rows` from the counts of some of them: mean x rows, with a
    95% range from the sample's spread (finite-population corrected); exact when all."""
    n, total = len(counts), sum(counts)
    mean = total / n
    if n >= rows:
        exact = {"estimate": total, "low": total, "high": total, "counted_sum": total}
        return {**exact, "counted_mean": round(mean, 3)}
    variance = sum((c - mean) ** 2 for c in counts) / (n - 1) if n > 1 else mean**2
    spread = _Z95 * rows * math.sqrt(variance / n * (rows - n) / (rows - 1))
    estimate = mean * rows
    floor = total + (rows - n)  # each row not counted has at least one token
    return {
        "estimate": round(estimate),
        "low": max(floor, math.floor(estimate - spread)),
        "high": math.ceil(estimate + spread),
        "counted_sum": total,
        "counted_mean": round(mean, 3),
    }


def _cost(spec: JobSpec, tokens: dict[str, float], rows: int, bound: int) -> dict[str, Any] | None:
    """From the low input count with one output token a row (the least an answer costs)
    to the high count with every answer at max_tokens."""
    pricing = spec.pricing
    if pricing is None:
        return None
    return {
        "low_usd": round(usd(tokens["low"], rows, pricing), 6),
        "high_usd": round(usd(tokens["high"], bound, pricing), 6),
        "input_usd": round(usd(tokens["estimate"], 0, pricing), 6),
        "output_max_usd": round(usd(0, bound, pricing), 6),
        "input_per_mtok": pricing.input_per_mtok,
        "output_per_mtok": pricing.output_per_mtok,
    }


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _text_lines(p: Plan) -> list[str]:
    t = p.input_tokens
    if p.exact:
        tokens = f"{_n(t['estimate'])}: count_tokens on every row"
    else:
        tokens = (
            f"~{_n(t['estimate'])} (95% range {_n(t['low'])} to {_n(t['high'])}): "
            f"count_tokens on {p.counted_rows:,} rows spread over the input"
        )
    lines = [
        f"input          {p.input}: {p.rows:,} rows ({p.api})",
        f"input tokens   {tokens}",
        f"output tokens  at most {_n(p.output_tokens['max'])} (every row's max_tokens)",
    ]
    c = p.cost
    if c is None:
        lines.append("cost           unknown: give --job FILE with a [pricing] section")
    else:
        lines.append(
            f"cost           ${c['low_usd']:,.4f} to ${c['high_usd']:,.4f} (input "
            f"~${c['input_usd']:,.4f}, output up to ${c['output_max_usd']:,.4f}; "
            f"${c['input_per_mtok']:g}/${c['output_per_mtok']:g} per million tokens)"
        )
    if p.converted_from_chat:
        lines.append(
            "note: chat rows were counted in the Messages shape (system as a field, parts "
            "as blocks): an approximation of what the chat endpoint bills"
        )
    if p.failed_rows:
        lines.append(f"warning: {p.failed_rows} rows could not be counted: {p.first_failure}")
    return lines
