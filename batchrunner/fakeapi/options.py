"""FakeOptions: every knob of the fake API server, as one frozen value.

Both the click command and the test helpers build one of these; the server reads it and
never parses text itself. No IO here, and no knowledge of HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FAULT_KINDS: tuple[str, ...] = (
    "429",
    "429-ms",
    "429-date",
    "500",
    "502",
    "503",
    "504",
    "529",
    "reset",
    "truncate",
    "badjson",
    "hang",
    "stream-error",
    "stream-cut",
    "invalid_output",
)
STREAM_FAULTS = frozenset({"stream-error", "stream-cut"})
DEFAULT_FAULTS: tuple[str, ...] = ("429", "500", "503", "529", "reset", "truncate", "badjson")
DEFAULT_MODELS: tuple[str, ...] = ("caicaini/auto", "caicaini/small", "caicaini/large")
RATE_LIMIT_MODES: tuple[str, ...] = ("bucket", "sliding", "fixed")
# Faults that refuse a request rather than fail it: `refusals_at_once` answers them before
# the latency, as a rate limiter or an overloaded front end does.
REFUSAL_FAULTS = frozenset({"429", "429-ms", "429-date", "529"})


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeOptions:
    """How the fake API behaves. `api_key=None` accepts any non-empty key.

    `latency` is a uniform (low, high) range in seconds; `log_limit` caps the request log so
    a long dry run cannot grow the server without bound (oldest entries drop first).
    `rate_limit_mode` picks how the request limit is enforced and announced (see `limits`):
    `bucket` (rps and rpm token buckets), `sliding` (`rate_limit_rps` in any one second) or
    `fixed` (`rate_limit_rpm` per window of `rate_limit_window` seconds).
    """

    host: str = "127.0.0.1"
    port: int = 8765
    latency: tuple[float, float] = (0.0, 0.0)
    seed: int = 0
    models: tuple[str, ...] = DEFAULT_MODELS
    fault_rate: float = 0.0
    faults: tuple[str, ...] = DEFAULT_FAULTS
    fault_retry_after: float = 1.0
    fault_max_per_prompt: int = 2
    rate_limit_rps: float = 0.0
    rate_limit_rpm: float = 0.0
    rate_limit_mode: str = "bucket"
    rate_limit_window: float = 60.0
    rate_limit_headers: bool = True
    refusals_at_once: bool = False
    quota_exhausted: bool = False
    max_body_mb: float = 32.0
    api_key: str | None = field(default=None, repr=False)
    log_limit: int = 100_000
    tls_cert: str | None = None  # PEM certificate (chain): serve HTTPS with it and tls_key
    tls_key: str | None = None

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def max_body_bytes(self) -> int:
        """The largest request body accepted before answering 413."""
        return int(self.max_body_mb * 1024 * 1024)


def _problems(options: FakeOptions) -> list[str]:
    problems: list[str] = []
    low, high = options.latency
    if not 0 <= low <= high:
        problems.append(f"latency range must satisfy 0 <= low <= high, got {low}-{high}")
    if not 0 <= options.fault_rate <= 1:
        problems.append(f"fault rate must be within 0..1, got {options.fault_rate}")
    unknown = [kind for kind in options.faults if kind not in FAULT_KINDS]
    if unknown:
        problems.append(
            f"unknown fault kind(s) {', '.join(unknown)}; known: {', '.join(FAULT_KINDS)}"
        )
    if options.fault_retry_after < 0:
        problems.append("fault retry-after must be >= 0")
    if options.fault_max_per_prompt < 0:
        problems.append("fault max per prompt must be >= 0")
    if options.rate_limit_rps < 0 or options.rate_limit_rpm < 0:
        problems.append("rate limits must be >= 0 (0 = off)")
    problems.extend(_mode_problems(options))
    if not options.models or any(not model for model in options.models):
        problems.append("at least one non-empty model name is required")
    if options.max_body_mb <= 0:
        problems.append("max body size must be > 0")
    if not 0 <= options.port <= 65535:
        problems.append(f"port must be within 0..65535, got {options.port}")
    if (options.tls_cert is None) != (options.tls_key is None):
        problems.append("--tls-cert and --tls-key go together")
    if options.api_key == "":
        problems.append("api_key must be None (any key) or a non-empty string")
    return problems


def _mode_problems(options: FakeOptions) -> list[str]:
    mode = options.rate_limit_mode
    if mode not in RATE_LIMIT_MODES:
        return [f"unknown rate limit mode {mode!r}; known: {', '.join(RATE_LIMIT_MODES)}"]
    if mode == "sliding" and options.rate_limit_rps < 1:
        return ["the sliding rate limit needs a rate limit of at least 1 request per second"]
    if mode == "fixed" and options.rate_limit_rpm < 1:
        return ["the fixed rate limit needs a rate limit of at least 1 request per window"]
    if not options.rate_limit_window > 0:
        return ["the rate limit window must be > 0 seconds"]
    return []


def parse_latency(text: str) -> tuple[float, float]:
    """Parse `0.5` (fixed) or `0.025-0.055` (uniform range) into (low, high) seconds."""
    low_text, sep, high_text = text.strip().partition("-")
    try:
        low = float(low_text)
        high = float(high_text) if sep else low
    except ValueError:
        raise ValueError(f"latency must look like 0.5 or 0.025-0.055, got {text!r}") from None
    return low, high


def parse_list(text: str) -> tuple[str, ...]:
    """Split a comma list, dropping blanks: `a, b,` -> ("a", "b")."""
    return tuple(item.strip() for item in text.split(",") if item.strip())
