"""The `fake-api` click command: parse flags into FakeOptions, serve until SIGINT/SIGTERM.

The only place of the fake API that reads the environment (CAICAINI_API_KEY) or writes to
the terminal. The first stdout line is the contract: `listening on http://HOST:PORT/v1`
(`https://` with --tls-cert and --tls-key).
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
from typing import TYPE_CHECKING

import click

from batchrunner.fakeapi.app import start_server
from batchrunner.fakeapi.options import (
    DEFAULT_FAULTS,
    DEFAULT_MODELS,
    FAULT_KINDS,
    RATE_LIMIT_MODES,
    FakeOptions,
    parse_latency,
    parse_list,
)

if TYPE_CHECKING:
    from collections.abc import Callable


def _latency(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, float]:
    try:
        return parse_latency(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where installed: the server shares a small machine with the client under
    test, so every cycle it saves is left to the client (and to the benchmark's reference)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _serve(options: FakeOptions) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # installed before the first line goes out: a reader may signal right after it
        loop.add_signal_handler(signum, stop.set)
    try:
        server = await start_server(options)
    except ssl.SSLError as exc:  # before OSError, of which it is one
        raise click.ClickException(f"cannot use the TLS certificate or key: {exc}") from None
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {options.host}:{options.port}: {exc.strerror or exc}"
        ) from None
    click.echo(f"listening on {server.base_url}")  # click.echo flushes: readers see it now
    faults = (
        f"{options.fault_rate:g} of {','.join(options.faults)}" if options.fault_rate else "off"
    )
    key = "CAICAINI_API_KEY only" if options.api_key else "any non-empty key"
    click.echo(
        f"fake-api: models {','.join(options.models)}; latency {options.latency[0]:g}-"
        f"{options.latency[1]:g}s; faults {faults}; accepts {key}",
        err=True,
    )
    try:
        await stop.wait()
    finally:
        await server.runner.cleanup()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port; 0 picks a free one (read it from the first line).",
)
@click.option(
    "--latency",
    default="0",
    callback=_latency,
    metavar="S|LOW-HIGH",
    show_default=True,
    help="Seconds before each answer: fixed (0.5) or uniform range (0.025-0.055).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for faults and latency.")
@click.option(
    "--models",
    default=",".join(DEFAULT_MODELS),
    show_default=True,
    help="Comma list of model names served.",
)
@click.option(
    "--fault-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of generation requests that fail.",
)
@click.option(
    "--faults",
    "fault_kinds",
    default=",".join(DEFAULT_FAULTS),
    show_default=True,
    help=f"Comma list of fault kinds to draw from; all: {','.join(FAULT_KINDS)}.",
)
@click.option(
    "--fault-retry-after",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Retry-After seconds on 429/503/529 faults (fractional adds retry-after-ms).",
)
@click.option(
    "--fault-max-per-prompt",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="The same request content fails at most this many times, then is answered.",
)
@click.option(
    "--rate-limit-rps",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Requests per second before 429 (0: off).",
)
@click.option(
    "--rate-limit-rpm",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Requests per minute before 429 (0: off); with --rate-limit-mode fixed, per window.",
)
@click.option(
    "--rate-limit-mode",
    type=click.Choice(RATE_LIMIT_MODES),
    default="bucket",
    show_default=True,
    help="bucket: rps/rpm token buckets, honest headers. sliding: --rate-limit-rps in any "
    "one second, announced per minute, gateway headers. fixed: --rate-limit-rpm per "
    "--rate-limit-window, limit and remaining but no reset, llm_provider-retry-after.",
)
@click.option(
    "--rate-limit-window",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds of one window of the fixed rate limit.",
)
@click.option(
    "--no-rate-limit-headers",
    is_flag=True,
    help="Send no rate-limit headers at all (a refusal keeps its Retry-After).",
)
@click.option(
    "--refusals-at-once",
    is_flag=True,
    help="Answer 429/529 faults at once instead of after --latency.",
)
@click.option(
    "--quota-exhausted",
    is_flag=True,
    help="Refuse every generation for lack of credit (402 billing_error / 429 insufficient_quota).",
)
@click.option(
    "--max-body-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=32.0,
    show_default=True,
    help="Larger request bodies get 413.",
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False),
    help="PEM certificate (chain): serve HTTPS (with --tls-key).",
)
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="PEM private key.")
def fake_api(
    host: str,
    port: int,
    latency: tuple[float, float],
    seed: int,
    models: str,
    fault_rate: float,
    fault_kinds: str,
    fault_retry_after: float,
    fault_max_per_prompt: int,
    rate_limit_rps: float,
    rate_limit_rpm: float,
    rate_limit_mode: str,
    rate_limit_window: float,
    no_rate_limit_headers: bool,
    refusals_at_once: bool,
    quota_exhausted: bool,
    max_body_mb: float,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Serve a local Caicaini-compatible API (both conventions) for tests and dry runs.

    Answers are deterministic and embed their prompt. When CAICAINI_API_KEY is set in this
    process's environment only that key is accepted; otherwise any non-empty key. Counters
    and the request log are at /_fake/stats and /_fake/log. Stop with Ctrl-C.

    \b
    Example:
      batchrunner fake-api --port 0 --latency 0.02-0.05 --fault-rate 0.1
      batchrunner fake-api --tls-cert server.pem --tls-key server.key   # https://
      CAICAINI_BASE=http://127.0.0.1:8765/v1 batchrunner run data.jsonl -o out
    """
    try:
        options = FakeOptions(
            host=host,
            port=port,
            latency=latency,
            seed=seed,
            models=parse_list(models),
            fault_rate=fault_rate,
            faults=parse_list(fault_kinds),
            fault_retry_after=fault_retry_after,
            fault_max_per_prompt=fault_max_per_prompt,
            rate_limit_rps=rate_limit_rps,
            rate_limit_rpm=rate_limit_rpm,
            rate_limit_mode=rate_limit_mode,
            rate_limit_window=rate_limit_window,
            rate_limit_headers=not no_rate_limit_headers,
            refusals_at_once=refusals_at_once,
            quota_exhausted=quota_exhausted,
            max_body_mb=max_body_mb,
            api_key=os.environ.get("CAICAINI_API_KEY") or None,
            tls_cert=tls_cert,
            tls_key=tls_key,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve(options))
