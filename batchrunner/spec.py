"""JobSpec: the frozen, validated description of one run (job file + flags, merged).

`config.load_job` builds it; everything downstream only reads it. `SourceOptions` is the
part of it the inputs need (`JobSpec.source_options()`), so they depend on the spec alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pathlib import Path

    from batchrunner.records import Api, JSONObject
    from batchrunner.sharding import Shard
    from batchrunner.uris import Uri

DEFAULT_BASE = "https://caicaini.com/v1"
DEFAULT_MODEL = "caicaini/auto"
Durability = Literal["process", "os"]
InputFormat = Literal["jsonl", "csv", "tsv", "parquet"]
CacheMode = Literal["read", "write", "readwrite"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestSpec:
    """Defaults applied to every row; a row's own fields win."""

    model: str = DEFAULT_MODEL
    max_tokens: int = 1024
    system: str | None = None
    temperature: float | None = None
    template: str | None = None
    stream: bool = False
    id_column: str | None = None
    prompt_column: str | None = None
    image_column: str | None = None  # None: a simple row's images are in `images`
    # --json-schema: the schema itself (config reads the file), asked for in every request
    # and checked against every answer, which is re-asked up to output_retries times.
    json_schema: JSONObject | None = None
    output_retries: int = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceOptions:
    """How rows become requests: the convention, and which columns hold id and prompt.

    `template` builds each prompt from the row's columns (`str.format_map`, `{{ }}` for a
    literal brace); `prompt_column` / `id_column` name the columns read as prompt / id.
    `request` holds the job's request defaults: validation builds every body with them,
    exactly as the run will.
    """

    api: Api = "messages"
    template: str | None = None
    id_column: str | None = None
    prompt_column: str | None = None
    request: RequestSpec = field(default_factory=RequestSpec)
    format: InputFormat | None = None  # --format; None: from the input's name
    image_dir: Path | None = None  # where relative image paths start; None: by the input


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsSpec:
    """How hard to push the API and how long to keep trying."""

    concurrency: int = 32
    max_attempts: int = 6
    timeout_s: float | None = None  # None: 120 s, or 300 s with streaming
    max_elapsed_s: float = 900.0  # cap on one row's total retry time
    rpm: float = 0.0  # 0: learn from the server's headers
    tpm: float = 0.0
    breaker_window: int = 50  # stop when this many outcomes in a row all failed (0: off)
    stall_timeout_s: float = 0.0  # 0: the attempt timeout decides
    grace_s: float = 30.0  # SIGINT/SIGTERM: how long in-flight requests may finish
    max_wait_s: float = 60.0  # the longest single wait the server may impose (pacing)
    max_response_bytes: int = 64 * 1024 * 1024  # decoded; a bigger answer errors its row
    max_cost: float | None = None  # USD: stop dispatching before recorded cost passes it

    def attempt_timeout(self, stream: bool) -> float:
        if self.timeout_s is not None:
            return self.timeout_s
        return 300.0 if stream else 120.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PricingSpec:
    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0


# The `[eval]` table (evaluate.settings checks it key by key).
Scorer = Literal["exact", "contains", "regex", "json", "numeric", "choice", "judge"]
DEFAULT_JUDGE_MODEL = "caicaini/auto"


@dataclass(frozen=True, slots=True, kw_only=True)
class EvalSpec:
    """How to score a run's answers against an input column of expected answers."""

    expected: str = "expected"
    scorer: Scorer = "exact"
    strip: bool = True  # answers end in a newline more often than not
    casefold: bool = False
    collapse_whitespace: bool = False
    tolerance: float = 0.0  # numeric only: |answer - expected| <= tolerance passes
    json_keys: tuple[str, ...] = ()  # json only: compare these top-level keys (empty: all)
    group: str | None = None
    judge_model: str = DEFAULT_JUDGE_MODEL
    judge_template: str | None = None  # None: judge.DEFAULT_TEMPLATE


@dataclass(frozen=True, slots=True)
class RayEngine:
    """`--engine ray`: the cluster's address (None: a local Ray started for the run) and
    the size of the actor pool (rayengine.py)."""

    address: str | None = None
    actors: int = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSpec:
    """Everything one run needs. Secrets are not here: the key lives in the environment."""

    input: Path | Uri  # a local file or directory, or a remote object (uris)
    output: Path
    api: Api = "messages"
    base_url: str = DEFAULT_BASE
    request: RequestSpec = field(default_factory=RequestSpec)
    limits: LimitsSpec = field(default_factory=LimitsSpec)
    pricing: PricingSpec | None = None
    eval: EvalSpec | None = None  # the [eval] table (evaluate.settings), checked by parse_eval
    limit: int | None = None  # only the first N rows
    retry_errors: bool = False
    durability: Durability = "process"
    shard: Shard | None = None  # --shard I/N: only the rows whose id hash falls in it
    input_format: InputFormat | None = None  # --format, for a name that does not tell
    dedupe: bool = False  # --dedupe: byte-identical bodies are sent once (see dedupe)
    cache: Path | None = None  # --cache DIR: answers shared across runs (see cache)
    cache_ttl_s: float = 0.0  # --cache-ttl: older cached answers are asked again (0: none)
    cache_mode: CacheMode = "readwrite"
    engine: RayEngine | None = None  # --engine ray; None: this process sends the rows
    # Where relative image paths start: None, the input's directory; the current one for
    # stdin and rows given to the Python API (their input is a copy in the run directory).
    image_dir: Path | None = None

    def source_options(self) -> SourceOptions:
        """What reading and validating the input needs of this spec."""
        return SourceOptions(
            api=self.api,
            template=self.request.template,
            id_column=self.request.id_column,
            prompt_column=self.request.prompt_column,
            request=self.request,
            format=self.input_format,
            image_dir=self.image_dir,
        )

    def request_settings(self) -> dict[str, Any]:
        """The settings that shape what is asked: a resume must keep them all.

        Left out on purpose: the base URL (a proxy or a new port asks the same thing),
        `stream` (a streamed answer is assembled into the same message), `--limit`
        (a smoke run with `--limit 10` grows into the full run in the same directory) and
        `--output-retries` (like --max-attempts). The JSON schema is in (its content, not
        its path), and only when given: a run dir from before it existed still resumes.
        """
        req = asdict(self.request)
        req.pop("stream")
        req.pop("output_retries")
        for key in ("json_schema", "image_column"):  # newer: absent when not set
            if req[key] is None:
                req.pop(key)
        return {"api": self.api, "request": req}
