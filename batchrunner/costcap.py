"""`--max-cost`: hold dispatching back so that the recorded cost never passes the cap.

An attempt may go when the cost recorded so far, plus the worst case of every attempt in
flight, plus its own worst case stays within the cap. The worst case of an attempt is its
input estimate plus its output bound (`max_tokens`, times `n` for chat) at the `[pricing]`
rates; the estimate (about four characters per token) is raised by the highest ratio of
counted to estimated input tokens seen in this run's answers, so prompts that tokenize
densely (code, CJK) are not under-reserved twice. An attempt that does not fit waits
while others are in flight (their answers usually cost far less than their worst case);
when none is and it still does not fit, the run is told to stop (`on_refused`).
`cost_cap` builds the gate for a run from what its directory has recorded already (read
once, at start, and only with a cap). No HTTP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from batchrunner.admission import AdmissionClosedError
from batchrunner.rundir.recorded import token_sums

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from batchrunner.records import Completion, Request
    from batchrunner.spec import JobSpec, PricingSpec

_MTOK = 1e6


def usd(input_tokens: float, output_tokens: float, pricing: PricingSpec) -> float:
    """The price of some tokens at `pricing`'s rates (USD per million)."""
    return (input_tokens * pricing.input_per_mtok + output_tokens * pricing.output_per_mtok) / _MTOK


async def cost_cap(
    spec: JobSpec, run_dir: Path, *, on_refused: Callable[[str], None]
) -> CostCap | None:
    """The --max-cost gate of a run, starting from what `run_dir` has recorded (the sum of
    its rows' tokens: one read of two columns); None without a cap."""
    cap, pricing = spec.limits.max_cost, spec.pricing
    if cap is None or pricing is None:  # config refuses a cap without [pricing]
        return None
    tokens_in, tokens_out = await anyio.to_thread.run_sync(token_sums, run_dir)
    recorded = usd(tokens_in, tokens_out, pricing)
    return CostCap(cap, pricing, recorded_usd=recorded, on_refused=on_refused)


class CostCap:
    """The spend of one run against `cap_usd`; `recorded_usd` is what earlier runs spent."""

    def __init__(
        self,
        cap_usd: float,
        pricing: PricingSpec,
        *,
        recorded_usd: float = 0.0,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.cap = cap_usd
        self.pricing = pricing
        self.recorded = recorded_usd
        self.on_refused = on_refused  # hears the stop message when an attempt cannot fit
        self.reserved = 0.0  # worst cases of the attempts in flight
        self.out = 0  # attempts admitted and not settled
        self.waiters = 0
        self.ratio = 1.0  # highest counted / estimated input tokens seen
        self._changed = anyio.Event()

    def worst(self, request: Request) -> float:
        """The most `request` can cost: estimated input, and its output bound in full."""
        n = request.body.get("n")
        choices = n if type(n) is int and n > 1 else 1  # chat: n answers, each up to max_tokens
        estimate = request.est_input_tokens * self.ratio
        return usd(estimate, request.max_tokens * choices, self.pricing)

    async def admit(self, request: Request) -> float:
        """Reserve an attempt's worst case, waiting while attempts in flight may settle for
        less; returns the amount reserved (for `settle`). Raises AdmissionClosedError, after
        telling `on_refused` why, when it cannot fit and nothing in flight can make room."""
        worst = self.worst(request)
        while self.recorded + self.reserved + worst > self.cap:
            if self.out == 0:
                if self.on_refused is not None:
                    self.on_refused(self.message(request))
                raise AdmissionClosedError("the cost cap is reached: nothing more is sent")
            changed = self._changed
            self.waiters += 1
            try:
                await changed.wait()
            finally:
                self.waiters -= 1
            worst = self.worst(request)  # the ratio may have grown meanwhile
        self.reserved += worst
        self.out += 1
        return worst

    def settle(self, reserved: float, request: Request, answer: Completion | None) -> None:
        """An attempt admitted with `reserved` ended: its answer's cost (None: no answer,
        nothing recorded) replaces the reservation, and waiting attempts look again."""
        self.out -= 1
        self.reserved = self.reserved - reserved if self.out else 0.0  # no float residue
        if answer is not None:
            counted = answer.input_tokens
            if counted is not None and request.est_input_tokens > 0:
                self.ratio = max(self.ratio, counted / request.est_input_tokens)
            # A count the answer lacks is taken at its worst.
            inp = counted if counted is not None else request.est_input_tokens * self.ratio
            out = answer.output_tokens
            self.recorded += usd(inp, out if out is not None else request.max_tokens, self.pricing)
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    def waiting(self) -> str | None:
        """What the progress line says while rows wait for the cap; None when none does."""
        if not self.waiters:
            return None
        return (
            f"for {self.out} requests in flight to settle under --max-cost ${self.cap:g} "
            f"(${self.recorded:.4f} recorded)"
        )

    def message(self, request: Request) -> str:
        """The stop: the spend, the cap, and how to go on."""
        return (
            f"the cost cap would be passed: ${self.recorded:.4f} recorded of --max-cost "
            f"${self.cap:g}, and the next request could cost up to ${self.worst(request):.4f} "
            f"(its input estimate plus max_tokens at the [pricing] rates): raise --max-cost "
            "(or [limits] max_cost in the job file) and run the same command again to resume"
        )
