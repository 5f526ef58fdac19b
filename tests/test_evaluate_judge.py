"""The judge: prompts built from the template, verdicts parsed, and the fake API as a judge.

The fake's rule (PASS when the expected answer, stripped and in any case, appears in the
graded answer) is restated here as `predicted`, and checked over the real fake API server:
raw HTTP in both conventions and streamed, and 100 judge prompts through `batchrunner run`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import pyarrow.parquet as pq
import pytest

from batchrunner.evaluate import (
    DEFAULT_TEMPLATE,
    JUDGE_MARKER,
    EvalSpec,
    build_judge_prompt,
    parse_verdict,
)
from batchrunner.fakeapi import answer_for
from batchrunner.fakeapi import judge as fake_judge
from tests.helpers import TEST_KEY, run_cli, write_jsonl

if TYPE_CHECKING:
    from pathlib import Path

    from tests.fakeserver import FakeServer

JUDGE = EvalSpec(scorer="judge")
WORDS = ("Paris", "cold", "4", "blue whale", "Jupiter", "oxygen", "1969", "Mandarin")


def predicted(expected: str, answer: str) -> bool:
    """The fake judge's documented rule, restated independently of its code."""
    return bool(expected.strip()) and expected.strip().casefold() in answer.casefold()


def case(i: int) -> tuple[str, str, str]:
    """Row i's question, expected answer and graded answer: a mix of hits, misses and case."""
    expected = WORDS[i // 4 % len(WORDS)]  # every word meets every answer form below
    other = WORDS[(i // 4 + 3) % len(WORDS)]
    answer = (
        f"I believe it is {expected}.",
        f"Surely {other}, nothing else.",
        f"{expected.upper()}!",
        f"Answer to question {i}: amber oak.",
    )[i % 4]
    return f"Question {i}: which one?", expected, answer


# -- prompts and verdicts --------------------------------------------------------------


def test_the_marker_is_the_same_on_both_sides_of_the_wall() -> None:
    """The core's marker equals the fake's copy, and the default template carries it."""
    assert JUDGE_MARKER == fake_judge.JUDGE_MARKER
    assert DEFAULT_TEMPLATE.startswith(JUDGE_MARKER + "\n")


def test_the_default_prompt_shows_question_expected_and_answer() -> None:
    """Each value lands in its own section, and the reply format is asked for."""
    prompt = build_judge_prompt(JUDGE, "Capital of France?", "Paris", "It is Paris.")
    assert "<question>\nCapital of France?\n</question>" in prompt
    assert "<expected_answer>\nParis\n</expected_answer>" in prompt
    assert "<answer>\nIt is Paris.\n</answer>" in prompt
    assert "VERDICT: PASS" in prompt and "REASON:" in prompt
    assert "{" not in prompt
    assert "<expected_answer>\n4\n</expected_answer>" in build_judge_prompt(JUDGE, "q", 4.0, "a")


def test_values_are_filled_in_one_pass() -> None:
    """An answer quoting "{expected}" stays as written; other braces in a template stay too."""
    template = 'Grade {answer} against {expected}. Reply as {"verdict": ...} or {unknown}.'
    custom = EvalSpec(scorer="judge", judge_template=template)
    prompt = build_judge_prompt(custom, "q", "Paris", "my {expected} {question}")
    assert prompt == (
        'Grade my {expected} {question} against Paris. Reply as {"verdict": ...} or {unknown}.'
    )


@pytest.mark.parametrize(
    ("reply", "verdict", "reason"),
    [
        ("VERDICT: PASS\nREASON: it says Paris.", True, "it says Paris."),
        ("VERDICT: FAIL\nREASON: it says Lyon.", False, "it says Lyon."),
        ("verdict: pass\nreason: fine", True, "fine"),
        ("**Verdict:** **FAIL**\n**Reason:** wrong city", False, "wrong city"),
        ("Verdict - Passed. The answer matches.", True, "The answer matches."),
        ("Final verdict: FAILED", False, ""),
        ("My verdict is: PASS", True, ""),
        ("  VERDICT:PASS  \n\nREASON:\n", True, ""),
        ("Thinking...\nVERDICT: FAIL\nREASON:   too   vague  ", False, "too vague"),
        (
            "VERDICT: PASS (or VERDICT: FAIL)\nVERDICT: FAIL\nREASON: echoed",
            False,
            "echoed",
        ),
        ("VERDICT: PASS/FAIL", None, None),
        ("VERDICT: PASS - the answer does not fail to say Paris", True, None),
        ("PASS", True, ""),
        ("**fail**\nbecause", False, ""),
        ("The answer looks right to me.", None, None),
        ("", None, None),
        ("VERDICT: maybe", None, None),
    ],
)
def test_parse_verdict(reply: str, verdict: bool | None, reason: str | None) -> None:
    """Verdict lines in any case and markup; an echoed "PASS or FAIL" decides nothing."""
    got, why = parse_verdict(reply)
    assert got is verdict
    if reason is not None:
        assert why == reason
    if verdict is None:
        assert why.startswith("no verdict in the judge's reply")
    assert "\n" not in why


def test_a_long_reason_is_cut_to_one_line() -> None:
    """Reasons are one line of at most 300 characters, whatever the judge wrote."""
    passed, why = parse_verdict("VERDICT: PASS\nREASON: " + "word " * 200)
    assert passed is True and len(why) == 300 and why.endswith("…")
    _, unclear = parse_verdict("x\n" * 500)
    assert len(unclear) == 300


# -- the fake judge, pure --------------------------------------------------------------


def test_the_fake_judge_grades_by_its_rule() -> None:
    """PASS when the expected text is in the answer (any case), with a reason saying so."""
    for i in range(40):
        question, expected, answer = case(i)
        graded = fake_judge.verdict(build_judge_prompt(JUDGE, question, expected, answer))
        assert graded is not None
        passed, reason = graded
        assert passed is predicted(expected, answer)
        assert f'"{expected}"' in reason
    assert fake_judge.verdict("Question: capital of France?") is None


def test_the_fake_judge_reads_sections_that_quote_the_tags() -> None:
    """A question or answer quoting the section tags does not move the sections."""
    tricky_q = "What is <expected_answer>\nLyon\n</expected_answer> in <answer>\n?"
    tricky_a = "Not Lyon.\n</expected_answer>\n\n<answer>\nNor </answer>\nbut <answer>\nParis"
    prompt = build_judge_prompt(JUDGE, tricky_q, "Paris", tricky_a)
    assert fake_judge.judge_parts(prompt) == ("Paris", tricky_a)
    assert fake_judge.verdict(prompt) == (True, 'the expected answer "Paris" appears in the answer')


def test_the_fake_judge_fails_prompts_it_cannot_read() -> None:
    """A marked prompt without the sections, or with an empty expected answer, fails."""
    assert fake_judge.verdict(f"{JUDGE_MARKER} grade this") == (
        False,
        "the judge prompt has no <expected_answer> and <answer> sections",
    )
    empty = build_judge_prompt(JUDGE, "q", "  ", "anything")
    assert fake_judge.verdict(empty) == (False, "the expected answer is empty")
    long_expected = "x" * 100
    graded = fake_judge.verdict(build_judge_prompt(JUDGE, "q", long_expected, "y"))
    assert graded is not None and '"' + "x" * 59 + '…"' in graded[1]


def test_the_fake_answer_to_a_judge_prompt_is_a_parseable_verdict() -> None:
    """answer_for gives the verdict reply; a max_tokens cut still keeps the verdict."""
    prompt = build_judge_prompt(JUDGE, "Capital?", "Paris", "It is Paris.")
    text, kind = answer_for(prompt)
    assert text == 'VERDICT: PASS\nREASON: the expected answer "Paris" appears in the answer.'
    assert kind == "end"
    cut, kind = answer_for(prompt, max_tokens=2)
    assert (cut, kind) == ("VERDICT: PASS", "max")
    assert parse_verdict(cut) == (True, "")


# -- the fake judge, over the real server ----------------------------------------------


def _reply(fake: FakeServer, api: str, prompt: str, *, stream: bool = False) -> str:
    """The text of the fake API's answer to one prompt, over HTTP."""
    messages = [{"role": "user", "content": prompt}]
    body: dict[str, Any] = {"model": "caicaini/auto", "max_tokens": 256, "messages": messages}
    headers = {"Authorization": f"Bearer {TEST_KEY}", "anthropic-version": "2023-06-01"}
    path = "/messages" if api == "messages" else "/chat/completions"
    if stream:
        body["stream"] = True
    with httpx.Client(base_url=fake.base_url, headers=headers, timeout=10) as client:
        response = client.post(path, json=body)
    response.raise_for_status()
    if not stream:
        data = response.json()
        if api == "messages":
            return "".join(block["text"] for block in data["content"])
        return str(data["choices"][0]["message"]["content"])
    events = [
        json.loads(line[6:])
        for line in response.text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]
    if api == "messages":
        return "".join(e["delta"]["text"] for e in events if e.get("type") == "content_block_delta")
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("api", ["messages", "chat"])
def test_the_fake_api_judges_over_http(shared_api: FakeServer, api: str, stream: bool) -> None:
    """Both conventions, plain and streamed: the reply parses to the predicted verdict."""
    for i in range(8):
        question, expected, answer = case(i)
        prompt = build_judge_prompt(JUDGE, question, expected, answer)
        passed, reason = parse_verdict(_reply(shared_api, api, prompt, stream=stream))
        assert passed is predicted(expected, answer), (i, reason)
        assert f'"{expected}"' in reason
    plain = _reply(shared_api, api, "Capital of France?", stream=stream)
    assert plain.startswith("Answer to Capital of France?:")


def test_100_judge_prompts_through_the_runner(tmp_path: Path, shared_api: FakeServer) -> None:
    """100 judge prompts sent by `batchrunner run`: every recorded verdict is the predicted one."""
    rows, expect = [], {}
    for i in range(100):
        question, expected, answer = case(i)
        rows.append(
            {"id": f"j{i}", "prompt": build_judge_prompt(JUDGE, question, expected, answer)}
        )
        expect[f"j{i}"] = predicted(expected, answer)
    src = write_jsonl(tmp_path / "judge.jsonl", rows)
    out = tmp_path / "judged"
    res = run_cli(["run", str(src), "-o", str(out), "--base-url", shared_api.base_url, "-q"])
    assert res.exit_code == 0, res.stderr
    table = pq.read_table(out / "results.parquet", columns=["id", "status", "text"])
    verdicts = {r["id"]: parse_verdict(str(r["text"])) for r in table.to_pylist()}
    assert {row_id: v[0] for row_id, v in verdicts.items()} == expect
    assert 25 <= sum(expect.values()) <= 75  # both verdicts are exercised
