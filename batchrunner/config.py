"""Job file + flags -> one frozen JobSpec, validated up front.

Every problem is collected and raised as a single ConfigError (exit 2) before anything is
sent. Paths in a job file are relative to the file. Flags win over the file. The names of
the environment variables live here; the environment itself is read by the CLI (click's
`envvar=`), never here, and the key lives in the environment only.
"""

from __future__ import annotations

import ipaddress
import math
import tomllib
import urllib.parse
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from batchrunner.errors import ConfigError
from batchrunner.protocols.jsonsafe import is_utf8
from batchrunner.reuseopts import REUSE_KEYS, reuse_settings
from batchrunner.runpaths import relative, run_paths
from batchrunner.sharding import Shard, parse_shard
from batchrunner.spec import (
    DEFAULT_BASE,
    Durability,
    InputFormat,
    JobSpec,
    LimitsSpec,
    PricingSpec,
    RequestSpec,
)
from batchrunner.structured import load_schema

if TYPE_CHECKING:
    from batchrunner.records import JSONObject
    from batchrunner.spec import EvalSpec
    from batchrunner.uris import Source

KEY_ENV = "CAICAINI_API_KEY"  # the API key: never a flag, never in a job file
BASE_ENV = "CAICAINI_BASE"  # the base URL, where neither a flag nor the job file gives one

# Keys the job file accepts, per section, with the spec field each one fills.
_JOB_KEYS = {"input", "output", "api", "base_url", "durability", "name", "shard", "format"}
_JOB_KEYS |= REUSE_KEYS  # --dedupe and --cache*
_REQUEST_KEYS = {f.name for f in fields(RequestSpec)}
_LIMITS_KEYS = {
    "concurrency": "concurrency",
    "max_attempts": "max_attempts",
    "timeout": "timeout_s",
    "max_elapsed": "max_elapsed_s",
    "rpm": "rpm",
    "tpm": "tpm",
    "breaker_window": "breaker_window",
    "stall_timeout": "stall_timeout_s",
    "grace": "grace_s",
    "max_wait": "max_wait_s",
    "max_response_bytes": "max_response_bytes",
    "max_cost": "max_cost",
}
_PRICING_KEYS = {f.name for f in fields(PricingSpec)}
# None: the section's own parser names unknown keys (evaluate.parse_eval, with a hint).
_SECTIONS: dict[str, set[str] | None] = {
    "job": _JOB_KEYS,
    "request": _REQUEST_KEYS,
    "limits": set(_LIMITS_KEYS),
    "pricing": _PRICING_KEYS,
    "eval": None,
}


def read_job_file(path: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Parse a TOML job file; unknown sections and keys come back as problems, by name,
    and are left out of the data so the value checks can still report theirs."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"job file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read job file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    problems = []
    known: dict[str, dict[str, Any]] = {}
    for section, body in data.items():
        if section not in _SECTIONS:
            problems.append(f"{path}: unknown section [{section}]")
        elif not isinstance(body, dict):
            problems.append(f"{path}: [{section}] must be a table")
        elif (keys := _SECTIONS[section]) is None:
            known[section] = dict(body)
        else:
            problems += [
                f"{path}: unknown key '{key}' in [{section}]" for key in body if key not in keys
            ]
            known[section] = {k: v for k, v in body.items() if k in keys}
    return known, problems


def load_job(
    job: Path | None,
    *,
    input_path: Source | str | None,
    output: Path | str | None,
    overrides: dict[str, Any],
    base_url_env: str | None = None,
) -> JobSpec:
    """Merge the job file (if any) with flags (`overrides`, None meaning "not given").

    `base_url_env`, the value of `BASE_ENV`, ranks below a flag and the job file.
    """
    data, problems = read_job_file(job) if job else ({}, [])
    jsec, rsec, lsec = data.get("job", {}), data.get("request", {}), data.get("limits", {})
    given = {k: v for k, v in overrides.items() if v is not None}

    def pick(flag: str, section: dict[str, Any], key: str, default: Any) -> Any:
        return given[flag] if flag in given else section.get(key, default)

    inp, out = run_paths(job, jsec, input_path, output, problems)
    request_values = {
        name: pick(name, rsec, name, getattr(RequestSpec(), name)) for name in _REQUEST_KEYS
    }
    request_values["json_schema"] = _json_schema(job, given, rsec, problems)
    limits_values = {
        attr: pick(attr, lsec, key, getattr(LimitsSpec(), attr))
        for key, attr in _LIMITS_KEYS.items()
    }
    api = pick("api", jsec, "api", "messages")
    base_url = given.get("base_url") or jsec.get("base_url") or base_url_env
    durability = pick("durability", jsec, "durability", "process")
    fmt = pick("input_format", jsec, "format", None)
    if fmt is not None and fmt not in get_args(InputFormat):
        problems.append(f"format must be one of {', '.join(get_args(InputFormat))}")
    problems += _check_request(request_values) + _check_limits(limits_values)
    problems += base_url_problems(base_url or DEFAULT_BASE)
    limit = given.get("limit")
    problems += _check_job(api, durability, limit)
    shard = _shard(pick("shard", jsec, "shard", None), limit, problems)
    pricing, evals = _optional_sections(data, problems)
    problems += _cost_cap_priced(limits_values["max_cost"], data)
    reuse = reuse_settings(given, jsec, job.parent if job else Path.cwd(), problems)
    if problems:
        raise ConfigError("; ".join(problems))
    assert inp is not None and out is not None  # for mypy: problems caught both
    return JobSpec(
        input=inp,
        output=out,
        api=api,
        base_url=(base_url or DEFAULT_BASE).rstrip("/"),
        request=RequestSpec(**request_values),
        limits=LimitsSpec(**limits_values),
        pricing=pricing,
        eval=evals,
        limit=limit,
        retry_errors=bool(given.get("retry_errors", False)),
        durability=durability,
        input_format=fmt,
        shard=shard,
        **reuse,
    )


def _cost_cap_priced(max_cost: object, data: dict[str, Any]) -> list[str]:
    if max_cost is None or "pricing" in data:
        return []
    return [
        "--max-cost (or [limits] max_cost) needs a [pricing] section in the job file "
        "(input_per_mtok, output_per_mtok: USD per million tokens) to price what is spent"
    ]


def _json_schema(
    job: Path | None, given: dict[str, Any], rsec: dict[str, Any], problems: list[str]
) -> JSONObject | None:
    """The schema of --json-schema FILE or `[request] json_schema` (a path relative to the
    job file), read and checked; None when neither is given or it is unusable."""
    if "json_schema" in given:
        path = Path(given["json_schema"])
    elif "json_schema" in rsec:
        value = rsec["json_schema"]
        if not isinstance(value, str):
            problems.append("[request] json_schema must be the path of a JSON Schema file")
            return None
        path = relative(job.parent if job else Path.cwd(), value)
    else:
        return None
    schema, found = load_schema(path)
    problems += found
    return schema


def _check_job(api: object, durability: object, limit: Any) -> list[str]:
    problems = []
    if api not in ("messages", "chat"):
        problems.append(f"api must be 'messages' or 'chat', not {api!r}")
    if durability not in get_args(Durability):
        problems.append(f"durability must be one of {', '.join(get_args(Durability))}")
    if limit is not None and limit < 1:
        problems.append("--limit must be at least 1")
    return problems


def _shard(value: object, limit: int | None, problems: list[str]) -> Shard | None:
    """`--shard I/N` / `[job] shard`. Not with --limit: a shard's rows are spread over the
    whole input, so "the first N rows" of it would mean a different thing on each shard."""
    if value is None:
        return None
    try:
        shard = parse_shard(value)
    except ValueError as exc:
        problems.append(str(exc))
        return None
    if limit is not None:
        problems.append("--limit and --shard do not combine: smoke-test without --shard")
    return shard


def base_url_problems(url: object) -> list[str]:
    """What is wrong with a base URL: not http(s)://host/..., or it carries credentials.

    Never echoes the URL: a `user:password@` in it would put the password in the message.
    """
    if not isinstance(url, str):
        return ["base_url must be a string"]
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  # raises ValueError for a port that is not a number
    except ValueError:
        return ["the base URL is not a valid URL"]
    if "@" in parts.netloc:
        return [
            f"the base URL must not carry credentials (user:password@): the key goes in {KEY_ENV}"
        ]
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ["the base URL must look like https://host/v1 (http or https, with a host)"]
    if not url.isascii() or not url.isprintable():
        return ["the base URL holds a control or non-ASCII character"]
    return []


def plain_http_warning(url: str) -> str | None:
    """A warning when the key would cross a network unencrypted: plain http:// to a host
    that is not this machine (loopback: 127.0.0.0/8, ::1, localhost). None otherwise."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme != "http" or host == "localhost" or host.endswith(".localhost"):
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None  # a name: it may resolve anywhere
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
    if ip is not None and ip.is_loopback:
        return None
    return (
        f"the API key will be sent unencrypted: http://{parts.netloc} is plain http:// to a "
        f"host that is not loopback, so anyone on the way can read it; use https://"
    )


def _check_request(v: dict[str, Any]) -> list[str]:
    problems = []
    if not isinstance(v["model"], str) or not v["model"]:
        problems.append("model must be a non-empty string")
    if not _is_int(v["max_tokens"]) or v["max_tokens"] < 1:
        problems.append("max_tokens must be a whole number >= 1")
    if v["temperature"] is not None and not _is_number(v["temperature"]):
        problems.append(f"temperature must be a number{_not(v['temperature'])}")
    problems += [
        f"{key} must be a string"
        for key in ("system", "template", "id_column", "prompt_column", "image_column")
        if v[key] is not None and not isinstance(v[key], str)
    ]
    # Flags arrive through the OS: an undecodable byte becomes a lone surrogate, which
    # the request (UTF-8 JSON) could not carry.
    problems += [
        f"{key} holds a character UTF-8 cannot encode (an undecodable byte in the flag?)"
        for key in ("model", "system", "template", "id_column", "prompt_column", "image_column")
        if isinstance(v[key], str) and not is_utf8(v[key])
    ]
    if not isinstance(v["stream"], bool):
        problems.append("stream must be true or false")
    if not _is_int(v["output_retries"]) or v["output_retries"] < 0:
        problems.append("output_retries must be a whole number >= 0")
    return problems


def _check_limits(v: dict[str, Any]) -> list[str]:
    problems = [
        f"{attr} must be a whole number >= 1"
        for attr in ("concurrency", "max_attempts")
        if not _is_int(v[attr]) or v[attr] < 1
    ]
    if _is_int(v["concurrency"]) and v["concurrency"] > 10_000:
        problems.append("concurrency must be at most 10000")
    problems += [
        f"{attr.removesuffix('_s')} must be a number >= 0{_not(v[attr])}"
        for attr in ("rpm", "tpm", "stall_timeout_s", "grace_s", "max_elapsed_s")
        if not _is_number(v[attr]) or v[attr] < 0
    ]
    if v["timeout_s"] is not None and (not _is_number(v["timeout_s"]) or v["timeout_s"] <= 0):
        problems.append(f"timeout must be a number of seconds > 0{_not(v['timeout_s'])}")
    if not _is_number(v["max_wait_s"]) or not 0 < v["max_wait_s"] < float("inf"):
        problems.append("max_wait must be a number of seconds > 0")
    if not _is_int(v["breaker_window"]) or v["breaker_window"] < 0:
        problems.append("breaker_window must be a whole number >= 0")
    if not _is_int(v["max_response_bytes"]) or v["max_response_bytes"] < 1:
        problems.append("max_response_bytes must be a whole number >= 1")
    cost = v["max_cost"]
    if cost is not None and (not _is_number(cost) or cost <= 0):
        problems.append(f"max_cost must be a number of USD > 0{_not(cost)}")
    return problems


def _optional_sections(
    data: dict[str, dict[str, Any]], problems: list[str]
) -> tuple[PricingSpec | None, EvalSpec | None]:
    pricing = evals = None
    if "pricing" in data:
        bad = [k for k, val in data["pricing"].items() if not _is_number(val) or val < 0]
        problems += [f"[pricing] {k} must be a number >= 0{_not(data['pricing'][k])}" for k in bad]
        pricing = PricingSpec(**data["pricing"]) if not bad else None
    if "eval" in data:
        # Imported here: the evaluate package brings pyarrow (~0.17 s), which a job
        # without [eval] (and `batchrunner --help`) should not pay for.
        from batchrunner.evaluate.settings import parse_eval

        evals, eval_problems = parse_eval(data["eval"])
        problems += eval_problems
    return pricing, evals


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    """A real, finite number: TOML and float() both accept nan and inf."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool)


def _not(value: object) -> str:
    """ ", not nan" for the values a reader may not expect to be refused."""
    return f", not {value}" if isinstance(value, float) and not math.isfinite(value) else ""
