"""FakeState: what the server counted and logged, for tests and `/_fake/*`.

Plain counters and a bounded request log, mutated only on the server's event loop; readers
in other threads see consistent-enough snapshots for assertions. No IO, no HTTP.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any


class FakeState:
    """Counters, the request log and the per-content memory behind faults and ids."""

    def __init__(self, *, log_limit: int = 100_000) -> None:
        self._log_limit = log_limit
        self.reset()

    def reset(self) -> None:
        """Forget everything counted so far (in-flight requests keep being counted)."""
        in_flight = getattr(self, "in_flight", 0)
        self.requests_total = 0
        self.status_counts: Counter[int] = Counter()
        self.fault_counts: Counter[str] = Counter()
        self.answers_total = 0
        self.in_flight = in_flight
        self.max_in_flight = in_flight
        self.log: deque[dict[str, Any]] = deque(maxlen=self._log_limit)
        self.seen: dict[bytes, int] = {}
        self.faulted: dict[bytes, int] = {}
        self.issued: dict[bytes, int] = {}

    def enter(self) -> None:
        """A generation request arrived."""
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight

    def leave(self) -> None:
        """A generation request's response ended (or the connection did)."""
        self.in_flight -= 1

    def stats(self) -> dict[str, Any]:
        """The counters as JSON-ready data (what `GET /_fake/stats` returns)."""
        return {
            "requests_total": self.requests_total,
            "status_counts": {str(status): n for status, n in sorted(self.status_counts.items())},
            "fault_counts": dict(sorted(self.fault_counts.items())),
            "answers_total": self.answers_total,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "logged": len(self.log),
        }

    def log_list(self) -> list[dict[str, Any]]:
        """A copy of the request log, oldest first (what `GET /_fake/log` returns)."""
        return [dict(entry) for entry in list(self.log)]
