"""Pure parts of budgets, conversations, structured output and perplexity."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from zephyr_tgi import ConfigurationError, Message, SamplingParams, StructuredOutputError, TokenBudgetError
from zephyr_tgi._client.budget import fit_budget, needs_count, token_upper_bound
from zephyr_tgi._client.conversation import shorter_histories
from zephyr_tgi._client.params import Limits
from zephyr_tgi._client.perplexity import perplexity_of, plan_windows
from zephyr_tgi._client.structured import parse_json_answer, parse_regex_answer
from zephyr_tgi._client.tokenizer import ZephyrTokenizer

MODEL = Path(str(importlib.resources.files("mistral_common") / "data" / "tokenizer.model.v1"))
TOKENIZER = ZephyrTokenizer.from_file(MODEL)


@given(
    pieces=st.lists(
        st.sampled_from([*"ab é😀\n\t<>/su|", "</s>", "<s>", "<unk>", " Hello", "\u2028", "   "]), max_size=60
    )
)
def test_the_cheap_bound_is_never_below_the_exact_count(pieces: list[str]) -> None:
    text = "".join(pieces)
    assert token_upper_bound(text) >= TOKENIZER.count(text)


LIMITS = Limits(max_input_tokens=100, max_total_tokens=150)


def test_fit_budget_clamps_raises_or_leaves_alone() -> None:
    params = SamplingParams(max_new_tokens=80)
    clamped, warning = fit_budget(90, params, LIMITS, "clamp")
    assert clamped.max_new_tokens == 60
    assert warning is not None
    assert fit_budget(50, params, LIMITS, "clamp") == (params, None)
    with pytest.raises(TokenBudgetError) as info:
        fit_budget(90, params, LIMITS, "raise")
    assert (info.value.input_tokens, info.value.max_new_tokens, info.value.max_total_tokens) == (90, 80, 150)
    assert fit_budget(10_000, params, LIMITS, "off") == (params, None)


def test_too_long_prompts_raise_under_every_policy_but_off() -> None:
    for policy in ("clamp", "raise"):
        with pytest.raises(TokenBudgetError):
            fit_budget(101, SamplingParams(), LIMITS, policy)


def test_truncate_caps_the_counted_input() -> None:
    params = SamplingParams(truncate=40, max_new_tokens=100)
    assert fit_budget(5000, params, LIMITS, "raise") == (params, None)


def test_short_prompts_need_no_count() -> None:
    assert not needs_count("Hi", SamplingParams(max_new_tokens=100), LIMITS)
    assert needs_count("x" * 200, SamplingParams(), LIMITS)


def m(role: str, text: str) -> Message:
    return Message(role=role, content=text)


def test_histories_drop_whole_oldest_turns_and_keep_the_newest_user_turn() -> None:
    turns = [m("user", "1"), m("assistant", "a"), m("user", "2"), m("assistant", "b"), m("user", "3")]
    assert [[x.content for x in h] for h in shorter_histories(turns)] == [
        ["1", "a", "2", "b", "3"],
        ["2", "b", "3"],
        ["3"],
    ]


def test_plan_windows_scores_each_token_once() -> None:
    windows = plan_windows(10, 4, 2)
    assert [(w.start, w.end, w.score_from) for w in windows] == [(0, 4, 0), (2, 6, 4), (4, 8, 6), (6, 10, 8)]
    assert [(w.start, w.end, w.score_from) for w in plan_windows(3, 4, 2)] == [(0, 3, 0)]
    with pytest.raises(ConfigurationError):
        plan_windows(10, 4, 5)


@given(n=st.integers(1, 300), window=st.integers(1, 50), data=st.data())
def test_windows_cover_every_token_exactly_once(n: int, window: int, data: st.DataObject) -> None:
    stride = data.draw(st.integers(1, window))
    scored = [i for w in plan_windows(n, window, stride) for i in range(w.score_from, w.end)]
    assert scored == list(range(n))
    assert all(w.end - w.start <= window for w in plan_windows(n, window, stride))


def test_perplexity_of_known_logprobs() -> None:
    assert perplexity_of([-1.0, -1.0]) == pytest.approx(2.718281828)


class Item(BaseModel):
    name: str


def test_json_answers_are_validated() -> None:
    assert parse_json_answer('{"name": "x"}', Item) == Item(name="x")
    assert parse_json_answer('{"a": 1}', {"properties": {"a": {}}, "required": ["a"]}) == {"a": 1}
    for bad, schema in [
        ('{"nom": 1}', Item),
        ("not json", {"properties": {}}),
        ("[1]", {"properties": {}}),
        ("{}", {"properties": {"a": {}}, "required": ["a"]}),
    ]:
        with pytest.raises(StructuredOutputError) as info:
            parse_json_answer(bad, schema)  # type: ignore[arg-type]
        assert info.value.raw_text == bad


def test_regex_answers_must_match_whole() -> None:
    assert parse_regex_answer("42", r"\d+") == "42"
    with pytest.raises(StructuredOutputError):
        parse_regex_answer("42 apples", r"\d+")


class _Terminal:
    """A stand-in stderr that says it is a terminal and keeps what is written."""

    def __init__(self) -> None:
        self.text = ""

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


def test_batch_progress_shows_items_and_tokens_per_second_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from zephyr_tgi import GenerationResult
    from zephyr_tgi._client.batch import BatchProgress

    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    with BatchProgress(2, enabled=True) as bar:
        bar.done(GenerationResult(text="a", generated_text="a", generated_tokens=5))
        bar.done(ConfigurationError("failed item"))
    assert bar.tokens == 5
    assert "2/2" in terminal.text
    assert "tok_s" in terminal.text


def test_batch_progress_is_silent_when_off_or_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from zephyr_tgi._client.batch import BatchProgress

    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    with BatchProgress(1, enabled=False) as bar:
        bar.done(ConfigurationError("x"))
    assert terminal.text == ""
