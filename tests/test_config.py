"""config.load_job: defaults, job file + flags, relative paths and up-front validation.

Job files are real files under tmp_path; the base URL's environment variable is set or
removed per test with monkeypatch, so the machine's own environment never leaks in.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from batchrunner.config import BASE_ENV, load_job
from batchrunner.errors import ConfigError
from batchrunner.evaluate import EvalSpec
from batchrunner.spec import DEFAULT_BASE, JobSpec, LimitsSpec, PricingSpec, RequestSpec


@pytest.fixture(autouse=True)
def _no_base_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without CAICAINI_BASE; tests that need it set it themselves."""
    monkeypatch.delenv("CAICAINI_BASE", raising=False)


def job_file(tmp_path: Path, text: str, name: str = "jobs/job.toml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load(
    job: Path | None = None,
    *,
    input_path: Path | None = Path("in.jsonl"),
    output: Path | None = Path("out"),
    base_url_env: str | None = None,
    **overrides: Any,
) -> JobSpec:
    return load_job(
        job, input_path=input_path, output=output, overrides=overrides, base_url_env=base_url_env
    )


def problems(job: Path | None = None, **kw: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load(job, **kw)
    return str(caught.value)


# --- defaults and precedence ----------------------------------------------------------------


def test_defaults_without_a_job_file() -> None:
    """With only INPUT and -o, every setting takes its documented default."""
    spec = load(input_path=Path("in.jsonl"), output=Path("runs/a"))
    assert (spec.input, spec.output) == (Path("in.jsonl"), Path("runs/a"))
    assert spec.request == RequestSpec()
    assert (spec.request.model, spec.request.max_tokens, spec.request.stream) == (
        "caicaini/auto",
        1024,
        False,
    )
    assert (spec.limits.concurrency, spec.limits.max_attempts) == (32, 6)
    assert spec.limits == LimitsSpec()
    assert (spec.api, spec.base_url) == ("messages", "https://caicaini.com/v1")
    assert spec.base_url == DEFAULT_BASE
    assert (spec.durability, spec.limit, spec.retry_errors) == ("process", None, False)
    assert (spec.pricing, spec.eval) == (None, None)


def test_base_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """CAICAINI_BASE's value (the CLI reads it) sets the base URL, trailing slash dropped;
    --base-url beats it; load_job itself never reads the environment."""
    env = "http://127.0.0.1:8080/v1/"
    assert load(base_url_env=env).base_url == "http://127.0.0.1:8080/v1"
    flag = "http://127.0.0.1:9000/v1"
    assert load(base_url=flag, base_url_env=env).base_url == flag
    monkeypatch.setenv(BASE_ENV, env)
    assert load().base_url == DEFAULT_BASE


def test_base_url_from_the_job_file(tmp_path: Path) -> None:
    """A job file's base_url is used over the environment's; a flag still wins over both."""
    env = "http://127.0.0.1:8080/v1"
    job = job_file(tmp_path, '[job]\nbase_url = "http://127.0.0.1:7000/v1"\n')
    assert load(job, base_url_env=env).base_url == "http://127.0.0.1:7000/v1"
    assert load(job, base_url="http://127.0.0.1:1/v1", base_url_env=env).base_url == (
        "http://127.0.0.1:1/v1"
    )


def test_attempt_timeout_defaults() -> None:
    """The attempt timeout is 120 s, 300 s with streaming, unless set."""
    spec = load()
    assert spec.limits.timeout_s is None
    assert (spec.limits.attempt_timeout(False), spec.limits.attempt_timeout(True)) == (120, 300)
    set_ = load(timeout_s=45.0).limits
    assert (set_.attempt_timeout(False), set_.attempt_timeout(True)) == (45.0, 45.0)


FULL_JOB = """\
[job]
input = "data/questions.jsonl"
output = "../runs/nightly"
api = "chat"
durability = "os"

[request]
model = "file-model"
max_tokens = 64
system = "Answer in one word."
temperature = 0
stream = true

[limits]
concurrency = 4
max_attempts = 8
timeout = 30
rpm = 600

[pricing]
input_per_mtok = 3.0
output_per_mtok = 15.0

[eval]
expected = "answer"
scorer = "contains"
"""


def test_job_file_values_and_relative_paths(tmp_path: Path) -> None:
    """Every section is read; input and output are relative to the job file, `..` folded."""
    job = job_file(tmp_path, FULL_JOB)
    spec = load(job, input_path=None, output=None)
    assert spec.input == tmp_path / "jobs" / "data" / "questions.jsonl"
    assert spec.output == tmp_path / "runs" / "nightly"
    assert (spec.api, spec.durability) == ("chat", "os")
    assert spec.request == RequestSpec(
        model="file-model", max_tokens=64, system="Answer in one word.", temperature=0, stream=True
    )
    assert (spec.limits.concurrency, spec.limits.max_attempts, spec.limits.rpm) == (4, 8, 600)
    assert spec.limits.attempt_timeout(True) == 30
    assert spec.pricing == PricingSpec(input_per_mtok=3.0, output_per_mtok=15.0)
    assert spec.eval == EvalSpec(expected="answer", scorer="contains")


def test_relative_job_path_keeps_paths_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job file given by a relative path resolves its paths from the file's own folder."""
    job_file(tmp_path, FULL_JOB)
    monkeypatch.chdir(tmp_path)
    spec = load(Path("jobs/job.toml"), input_path=None, output=None)
    assert spec.input == Path("jobs/data/questions.jsonl")
    assert spec.output == Path("runs/nightly")


def test_flags_override_the_job_file(tmp_path: Path) -> None:
    """A given flag wins over the file; a flag left as None keeps the file's value."""
    job = job_file(tmp_path, FULL_JOB)
    spec = load(
        job,
        input_path=Path("other.jsonl"),
        output=Path("elsewhere"),
        api="messages",
        model="flag-model",
        max_tokens=None,
        stream=False,
        concurrency=64,
        timeout_s=None,
        max_attempts=None,
        durability=None,
        limit=10,
        retry_errors=True,
    )
    assert (spec.input, spec.output) == (Path("other.jsonl"), Path("elsewhere"))
    assert (spec.api, spec.request.model, spec.request.max_tokens) == ("messages", "flag-model", 64)
    assert spec.request.stream is False  # --no-stream is a given flag, not "unset"
    assert (spec.limits.concurrency, spec.limits.max_attempts, spec.limits.timeout_s) == (64, 8, 30)
    assert (spec.durability, spec.limit, spec.retry_errors) == ("os", 10, True)


# --- refusals --------------------------------------------------------------------------------


def test_several_value_problems_in_one_error(tmp_path: Path) -> None:
    """Bad values across sections, and a missing output, are all named in one ConfigError."""
    job = job_file(
        tmp_path,
        '[job]\napi = "responses"\n[request]\nmax_tokens = 0\ntemperature = "hot"\n'
        '[limits]\nconcurrency = 0\ntimeout = -1\n[eval]\nscorer = "fuzzy"\n',
    )
    text = problems(job, output=None)
    for fragment in (
        "api must be 'messages' or 'chat', not 'responses'",
        "max_tokens must be a whole number >= 1",
        "temperature must be a number",
        "concurrency must be a whole number >= 1",
        "timeout must be a number of seconds > 0",
        "[eval] scorer must be one of exact, contains, regex, json, numeric, choice, judge",
        "no run directory",
    ):
        assert fragment in text


def test_unknown_key_reported_with_the_value_problems(tmp_path: Path) -> None:
    """An unknown key, a bad api and concurrency 0 are all named in the same ConfigError."""
    job = job_file(
        tmp_path, '[job]\napi = "responses"\ncolour = "blue"\n[limits]\nconcurrency = 0\n'
    )
    text = problems(job)
    assert "unknown key 'colour' in [job]" in text
    assert "api must be 'messages' or 'chat'" in text
    assert "concurrency must be a whole number >= 1" in text


def test_unknown_sections_and_keys_refused_by_name(tmp_path: Path) -> None:
    """Every unknown section and key is named, with the file, in one error."""
    job = job_file(
        tmp_path,
        '[jobs]\ninput = "x"\n[limits]\nconcurency = 4\ntimeout_s = 9\n[request]\nmodle = "m"\n',
    )
    text = problems(job)
    assert text.startswith(str(job))
    assert "unknown section [jobs]" in text
    assert "unknown key 'concurency' in [limits]" in text
    assert "unknown key 'timeout_s' in [limits]" in text  # the file says `timeout`
    assert "unknown key 'modle' in [request]" in text


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    """A section name used as a plain key is refused."""
    assert "[limits] must be a table" in problems(job_file(tmp_path, "limits = 3\n"))


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    """Broken TOML is a ConfigError that names the file."""
    job = job_file(tmp_path, '[job]\ninput = "unterminated\n')
    text = problems(job)
    assert str(job) in text and "invalid TOML" in text


def test_missing_job_file(tmp_path: Path) -> None:
    """A job file that does not exist is a ConfigError naming it."""
    missing = tmp_path / "nope.toml"
    assert f"job file not found: {missing}" in problems(missing)


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({"input_path": None}, "no input"),
        ({"output": None}, "no run directory"),
    ],
)
def test_missing_input_or_output(given: dict[str, Any], missing: str) -> None:
    """Without INPUT (or [job] input) or -o (or [job] output) nothing is loaded."""
    assert missing in problems(**given)


def test_missing_both_are_reported_together(tmp_path: Path) -> None:
    """A job file with neither input nor output gets both problems in one message."""
    text = problems(job_file(tmp_path, '[request]\nmodel = "m"\n'), input_path=None, output=None)
    assert "no input" in text and "no run directory" in text


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ('[eval]\nscorer = "fuzzy"\n', "[eval] scorer must be one of"),
        ("[pricing]\ninput_per_mtok = -1\n", "[pricing] input_per_mtok must be a number >= 0"),
        ("[request]\nstream = 1\n", "stream must be true or false"),
        ('[request]\nmodel = ""\n', "model must be a non-empty string"),
        ("[request]\nmax_tokens = 1.5\n", "max_tokens must be a whole number"),
        ("[limits]\nmax_attempts = true\n", "max_attempts must be a whole number"),
        ("[limits]\nconcurrency = 20000\n", "concurrency must be at most 10000"),
        ("[limits]\nrpm = -5\n", "rpm must be a number >= 0"),
        ('[job]\ndurability = "fsync"\n', "durability must be one of process, os"),
    ],
)
def test_bad_values_refused(tmp_path: Path, toml: str, fragment: str) -> None:
    """Each out-of-range or mistyped value is refused with a message naming it."""
    assert fragment in problems(job_file(tmp_path, toml))


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ("[limits]\nmax_cost = 0\n", "max_cost must be a number of USD > 0"),
        ('[limits]\nmax_cost = "5"\n', "max_cost must be a number of USD > 0"),
        ("[limits]\nmax_cost = nan\n", "max_cost must be a number of USD > 0, not nan"),
        ("[limits]\nmax_cost = 5\n", "needs a [pricing] section in the job file"),
    ],
)
def test_a_bad_cost_cap_or_one_without_pricing_is_refused(
    tmp_path: Path, toml: str, fragment: str
) -> None:
    """max_cost must be a positive number, and it needs [pricing] to price the spend."""
    assert fragment in problems(job_file(tmp_path, toml))


def test_the_cost_cap_comes_from_the_job_file_or_the_flag(tmp_path: Path) -> None:
    """[limits] max_cost with [pricing] sets the cap; --max-cost wins; absent, no cap."""
    job = job_file(tmp_path, "[limits]\nmax_cost = 2.5\n[pricing]\ninput_per_mtok = 1\n")
    assert load(job).limits.max_cost == 2.5
    assert load(job, max_cost=7.0).limits.max_cost == 7.0
    assert load().limits.max_cost is None
    assert "needs a [pricing] section" in problems(max_cost=1.0)


def test_limit_flag_must_be_positive() -> None:
    """--limit 0 is refused."""
    assert "--limit must be at least 1" in problems(limit=0)


# --- request settings and their fingerprint -------------------------------------------------


def test_request_settings_leave_out_stream_and_base_url() -> None:
    """request_settings() holds the api and request defaults, without stream or base URL."""
    spec = load(model="m", max_tokens=50, stream=True, base_url="http://127.0.0.1:1/v1")
    settings = spec.request_settings()
    assert settings["api"] == "messages"
    assert settings["request"]["model"] == "m" and settings["request"]["max_tokens"] == 50
    assert "stream" not in settings["request"]
    assert "base_url" not in settings and "base_url" not in settings["request"]


def _fingerprint(spec: JobSpec) -> str:
    """The settings part of the run's fingerprint, as manifest.json keeps it."""
    return json.dumps(spec.request_settings(), sort_keys=True, default=str)


def test_fingerprint_tracks_what_is_asked() -> None:
    """The fingerprint changes with max_tokens (or api, model), not with stream, URL or limits."""
    base = load(max_tokens=50)
    same = [
        dataclasses.replace(base, request=dataclasses.replace(base.request, stream=True)),
        dataclasses.replace(base, base_url="http://127.0.0.1:1/v1", limit=10),
        dataclasses.replace(base, limits=LimitsSpec(concurrency=4, max_attempts=2)),
    ]
    assert {_fingerprint(s) for s in same} == {_fingerprint(base)}
    different = [
        load(max_tokens=51),
        load(max_tokens=50, api="chat"),
        load(max_tokens=50, model="other"),
        load(max_tokens=50, system="Be brief."),
    ]
    prints = {_fingerprint(s) for s in different}
    assert len(prints) == len(different) and _fingerprint(base) not in prints
    assert _fingerprint(load(max_tokens=50)) == _fingerprint(base)


# --- values that parse but cannot work (issue 9) ---------------------------------------------


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ("[limits]\ntimeout = nan\n", "timeout must be a number of seconds > 0, not nan"),
        ("[limits]\ntimeout = inf\n", "timeout must be a number of seconds > 0, not inf"),
        ("[limits]\nrpm = nan\n", "rpm must be a number >= 0, not nan"),
        ("[limits]\ntpm = inf\n", "tpm must be a number >= 0, not inf"),
        ("[limits]\nmax_elapsed = inf\n", "max_elapsed must be a number >= 0, not inf"),
        ("[request]\ntemperature = nan\n", "temperature must be a number, not nan"),
        ("[pricing]\ninput_per_mtok = inf\n", "[pricing] input_per_mtok must be a number >= 0"),
    ],
)
def test_nan_and_inf_in_a_job_file_are_refused(tmp_path: Path, toml: str, fragment: str) -> None:
    """TOML reads nan and inf as floats; none of them is a usable setting."""
    assert fragment in problems(job_file(tmp_path, toml))


@pytest.mark.parametrize(
    ("flag", "value", "fragment"),
    [
        ("timeout_s", float("nan"), "timeout must be"),
        ("temperature", float("nan"), "temperature must be a number, not nan"),
        ("rpm", float("inf"), "rpm must be a number >= 0, not inf"),
        ("stall_timeout_s", float("nan"), "stall_timeout must be"),
        ("model", "caicaini/\udcff", "model holds a character UTF-8 cannot encode"),
    ],
)
def test_nan_flags_and_undecodable_text_are_refused(flag: str, value: Any, fragment: str) -> None:
    """float('nan') passes click's ranges, and argv's bad bytes arrive as lone surrogates."""
    assert fragment in problems(**{flag: value})


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://user:hunter2@127.0.0.1:9/v1", "must not carry credentials"),
        ("https://:hunter2@example.invalid/v1", "must not carry credentials"),
        ("ftp://127.0.0.1/v1", "must look like https://host/v1"),
        ("127.0.0.1:8080/v1", "must look like https://host/v1"),
        ("http:///v1", "must look like https://host/v1"),
        ("http://127.0.0.1:port/v1", "not a valid URL"),
        ("http://127.0.0.1:9/v1\n", "control or non-ASCII"),
    ],
)
def test_bad_base_urls_are_refused_without_echoing_them(url: str, fragment: str) -> None:
    """A base URL must be http(s)://host...; credentials in it are refused, never echoed."""
    text = problems(base_url=url)
    assert fragment in text
    assert "hunter2" not in text and url.strip() not in text


def test_a_run_directory_at_or_under_a_file_is_refused(tmp_path: Path) -> None:
    """-o at an existing file, or below one, cannot become a run directory."""
    a_file = tmp_path / "results.txt"
    a_file.write_text("x")
    assert f"run directory {a_file} is not a directory" in problems(output=a_file)
    assert "which is not a directory" in problems(output=a_file / "sub" / "run")
    assert load(output=tmp_path / "new" / "run").output == tmp_path / "new" / "run"


def test_dedupe_from_the_job_file_or_the_flag(tmp_path: Path) -> None:
    """`[job] dedupe = true` or --dedupe turns it on; a non-boolean is refused by name."""
    assert load().dedupe is False
    assert load(dedupe=True).dedupe is True
    assert load(job_file(tmp_path, "[job]\ndedupe = true\n")).dedupe is True
    assert load(job_file(tmp_path, "[job]\ndedupe = true\n"), dedupe=False).dedupe is False
    with pytest.raises(ConfigError, match="dedupe must be true or false"):
        load(job_file(tmp_path, '[job]\ndedupe = "yes"\n', "b.toml"))


def test_cache_settings_from_the_job_file_and_flags(tmp_path: Path) -> None:
    """`[job] cache` is relative to the job file; flags win; bad ttl and mode are named."""
    job = job_file(tmp_path, '[job]\ncache = "../c"\ncache_ttl = 60\ncache_mode = "read"\n')
    spec = load(job)
    assert (spec.cache, spec.cache_ttl_s, spec.cache_mode) == (tmp_path / "c", 60.0, "read")
    flagged = load(job, cache=Path("d"), cache_ttl_s=5.0, cache_mode="write")
    assert (flagged.cache, flagged.cache_ttl_s, flagged.cache_mode) == (Path("d"), 5.0, "write")
    assert (load().cache, load().cache_ttl_s, load().cache_mode) == (None, 0.0, "readwrite")
    bad = job_file(tmp_path, '[job]\ncache_ttl = -1\ncache_mode = "sometimes"\n', "b.toml")
    with pytest.raises(ConfigError, match=r"cache_ttl must be.*cache_mode must be one of"):
        load(bad)
    with pytest.raises(ConfigError, match=r"\[job\] cache must be the path of a directory"):
        load(job_file(tmp_path, "[job]\ncache = 3\n", "c.toml"))
