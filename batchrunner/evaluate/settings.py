"""The `[eval]` table of a job file: a frozen EvalSpec, checked key by key.

`parse_eval` returns every problem at once, each naming its key, so the job loader can list
them with the rest; `check_columns` names a column the input lacks. Pure: no IO.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any, TypeGuard, cast, get_args

from batchrunner.spec import EvalSpec, Scorer

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

SCORERS: tuple[str, ...] = get_args(Scorer)
TEMPLATE_FIELDS = ("question", "expected", "answer")


# Keys that only one scorer reads: set with another scorer they would do nothing, which
# hides a mistake (a forgotten `scorer = "numeric"` turns every near miss into a fail).
_ONLY_FOR: dict[str, tuple[str, ...]] = {
    "tolerance": ("numeric",),
    "json_keys": ("json",),
    "judge_model": ("judge",),
    "judge_template": ("judge",),
}
_BOOLS = ("strip", "casefold", "collapse_whitespace")
_KEYS = ("expected", "scorer", *_BOOLS, *_ONLY_FOR, "group")


def _unknown(key: str) -> str:
    close = difflib.get_close_matches(key, _KEYS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"[eval] unknown key {key!r}{hint}; known keys: {', '.join(_KEYS)}"


def _is_column(value: object) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _template_problems(value: object) -> list[str]:
    if not isinstance(value, str) or not value.strip():
        return [f"[eval] judge_template must be a non-empty string, not {value!r}"]
    missing = [f"{{{name}}}" for name in ("expected", "answer") if f"{{{name}}}" not in value]
    if missing:
        return [f"[eval] judge_template must contain {' and '.join(missing)}"]
    return []


def _value_problems(key: str, value: object) -> list[str]:
    """What is wrong with one known key's value (nothing: [])."""
    if key in ("expected", "group") and not _is_column(value):
        return [f"[eval] {key} must be a column name (a non-empty string), not {value!r}"]
    if key == "scorer" and value not in SCORERS:
        return [f"[eval] scorer must be one of {', '.join(SCORERS)}, not {value!r}"]
    if key in _BOOLS and not isinstance(value, bool):
        return [f"[eval] {key} must be true or false, not {value!r}"]
    if key == "tolerance" and not (_is_number(value) and value >= 0):
        return [f"[eval] tolerance must be a number >= 0, not {value!r}"]
    if key == "json_keys" and not (
        isinstance(value, list) and value and all(_is_column(k) for k in value)
    ):
        return [f"[eval] json_keys must be a non-empty list of key names, not {value!r}"]
    if key == "judge_model" and not _is_column(value):
        return [f"[eval] judge_model must be a non-empty string, not {value!r}"]
    if key == "judge_template":
        return _template_problems(value)
    return []


def parse_eval(section: Mapping[str, object]) -> tuple[EvalSpec | None, list[str]]:
    """The EvalSpec of an `[eval]` table, or None and every problem, each naming its key."""
    problems = [_unknown(key) for key in section if key not in _KEYS]
    known = {key: value for key, value in section.items() if key in _KEYS}
    for key, value in known.items():
        problems += _value_problems(key, value)
    scorer = known.get("scorer", "exact")
    if scorer in SCORERS:
        problems += [
            f"[eval] {key} applies only to scorer = {' or '.join(map(repr, only))}, not {scorer!r}"
            for key, only in _ONLY_FOR.items()
            if key in known and scorer not in only
        ]
    if problems:
        return None, problems
    values = cast("dict[str, Any]", dict(known))  # every value was checked above
    if "json_keys" in values:
        values["json_keys"] = tuple(values["json_keys"])
    if "tolerance" in values:
        values["tolerance"] = float(values["tolerance"])
    return EvalSpec(**values), []


def eval_table(spec: EvalSpec) -> dict[str, Any]:
    """The `[eval]` table that `parse_eval` turns back into `spec` (for DIR/eval.json).

    Keys that do not apply to the spec's scorer, and unset optional keys, are left out:
    `parse_eval` refuses the first and has defaults for the second.
    """
    table: dict[str, Any] = {}
    for key in _KEYS:
        value = getattr(spec, key)
        if value is None or (key in _ONLY_FOR and spec.scorer not in _ONLY_FOR[key]):
            continue
        table[key] = list(value) if isinstance(value, tuple) else value
    if not spec.json_keys:
        table.pop("json_keys", None)  # an empty list is refused; () is the default
    return table


def check_columns(spec: EvalSpec, columns: Collection[str]) -> list[str]:
    """A problem for each column the spec names (`expected`, `group`) that the input lacks."""
    listed = ", ".join(sorted(columns)) or "none"
    return [
        f"[eval] {key} = {name!r}: the input has no such column (columns: {listed})"
        for key, name in (("expected", spec.expected), ("group", spec.group))
        if name is not None and name not in columns
    ]
