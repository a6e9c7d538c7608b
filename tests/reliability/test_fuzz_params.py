"""Fuzzing SamplingParams: any input is refused before a request is sent, or it is a request TGI accepts.

Hypothesis feeds every field valid values, out-of-range values, wrong types, extreme floats (NaN, infinities,
subnormals, values that round to a bound in f32) and huge integers. For each input either SamplingParams raises
pydantic's ValidationError (then `client.chat(**fields)` raises ConfigurationError) or check_limits raises
ConfigurationError, and in both cases the emulator saw no generation request; or the request is sent and the
emulator, which runs TGI's deserialisation and `validate()` with TGI's verbatim messages, answers 200: never 422.

The tests at the end pin the bugs this fuzzing found (all fixed): inf, values that are 0 or 1.0 in f32, top_k
beyond i32, lone surrogates in stop sequences, and details=False on the non-streaming path.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from zephyr_tgi import (
    ConfigurationError,
    Grammar,
    InputValidationError,
    PromptError,
    RetryPolicy,
    SamplingParams,
    ZephyrClient,
)
from zephyr_tgi._client.params import to_wire
from zephyr_tgi.testing import TGIEmulator

GENERATION_ROUTES = frozenset({"/", "/generate", "/generate_stream", "/v1/chat/completions", "/v1/completions"})
PROMPT = "Name a river."
I32_MAX = 2**31 - 1

EXTREME_FLOATS = [
    0.0,
    -0.0,
    0.5,
    1.0,
    2.0,
    -2.0,
    1e-50,  # > 0, but 0 in f32 (TGI's fields are f32)
    1e-46,
    1.4e-45,  # the smallest f32 subnormal
    1e-40,
    0.99999999,  # < 1, but 1.0 in f32
    0.9999999,
    1.0000001,
    2.0000001,
    -2.0000001,
    3.4e38,
    1e39,  # finite, but inf in f32
    1e300,
    5e-324,
    math.nan,
    math.inf,
    -math.inf,
]
WRONG_TYPES: list[Any] = ["0.5", "nan", "inf", "1e-50", "abc", "", True, False, None, [0.5], {"value": 1}]
HUGE_INTS = [I32_MAX, I32_MAX + 1, 2**32 - 1, 2**32, 2**63, 2**64 - 1, 2**64, -1, 0, 10**30]
VALID_GRAMMARS: list[Any] = [
    {"type": "json", "value": {"type": "object", "properties": {"river": {"type": "string"}}}},
    {"type": "json", "value": '{"properties": {"n": {"type": "integer"}}}'},
    {"type": "regex", "value": "(yes|no)"},
    {"type": "json_schema", "value": {"name": "r", "schema": {"properties": {"a": {"type": "boolean"}}}}},
    Grammar.regex("[a-z]{1,8}"),
]
BAD_GRAMMARS: list[Any] = [
    {"type": "json", "value": {}},
    {"type": "json", "value": "not json"},
    {"type": "regex", "value": ""},
    {"type": "xml", "value": "<a/>"},
    {"type": "json_schema", "value": {"name": "r"}},
    "json",
    5,
]


def floats() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.floats(min_value=-3.0, max_value=3.0),
        st.sampled_from(EXTREME_FLOATS),
        st.integers(-3, 3),
        st.sampled_from(WRONG_TYPES),
    )


def ints(low: int = -3, high: int = 40) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.integers(low, high),
        st.integers(),
        st.sampled_from(HUGE_INTS),
        st.sampled_from([1.0, 2.5, "3", "x", math.nan, math.inf, True, False, None]),
    )


def flags() -> st.SearchStrategy[Any]:
    return st.sampled_from([True, False, None, 0, 1, 2, "true", "false", "yes", "maybe", 1.0, 0.5, [], "1"])


def stops() -> st.SearchStrategy[Any]:
    text = st.text(max_size=6)
    return st.one_of(
        text,
        st.lists(text, max_size=5),
        st.lists(text, max_size=3).map(tuple),
        st.sampled_from([None, 5, [1], ["</s>"], ["</s>", "."], [""], ["\ud800"], ("\n",), ["a"] * 3]),
    )


def sampling_fields() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "max_new_tokens": ints(-2, 5000),
            "temperature": floats(),
            "top_p": floats(),
            "top_k": ints(),
            "typical_p": floats(),
            "repetition_penalty": floats(),
            "frequency_penalty": floats(),
            "do_sample": flags(),
            "seed": ints(-2, 2**64 + 2),
            "stop": stops(),
            "truncate": ints(-2, 5000),
            "watermark": flags(),
            "return_full_text": flags(),
            "details": flags(),
            "decoder_input_details": flags(),
            "top_n_tokens": ints(-2, 8),
            "best_of": ints(-1, 4),
            "grammar": st.sampled_from([None, *VALID_GRAMMARS, *BAD_GRAMMARS]),
        },
    )


def plausible_fields() -> st.SearchStrategy[dict[str, Any]]:
    """Options a caller would likely write, edging on the bounds: most of them are valid."""
    unit = st.one_of(st.floats(min_value=0.0, max_value=1.0), st.sampled_from([1e-50, 0.99999999, 0.9999999]))
    positive = st.one_of(st.floats(min_value=0.0, max_value=4.0), st.sampled_from([1e-50, 1e-40, 1e39, 1e300]))
    return st.fixed_dictionaries(
        {},
        optional={
            "max_new_tokens": st.integers(1, 64),
            "temperature": positive,
            "top_p": unit,
            "top_k": st.one_of(st.integers(1, 100), st.sampled_from([I32_MAX, I32_MAX + 1])),
            "typical_p": unit,
            "repetition_penalty": positive,
            "frequency_penalty": st.floats(min_value=-2.0, max_value=2.0),
            "do_sample": st.booleans(),
            "seed": st.integers(0, 2**64 - 1),
            "stop": st.lists(st.text(min_size=1, max_size=4), max_size=3),
            "truncate": st.integers(1, 4000),
            "return_full_text": st.booleans(),
            "details": st.booleans(),
            "decoder_input_details": st.booleans(),
            "top_n_tokens": st.integers(0, 6),
            "best_of": st.integers(1, 3),
            "grammar": st.sampled_from([None, *VALID_GRAMMARS]),
        },
    )


def generation_requests(emulator: TGIEmulator) -> list[str]:
    return [r.path for r in emulator.stats.requests if r.method == "POST" and r.path in GENERATION_ROUTES]


@pytest.fixture(scope="module")
def client(emulator: TGIEmulator) -> Iterator[ZephyrClient]:
    # Few attempts: the property is about the first answer, and a rejected request is never retried anyway.
    with ZephyrClient(emulator.url, retry=RetryPolicy(max_attempts=2, initial_delay=0.0, max_delay=0.0)) as made:
        made.info()
        yield made


def _generate(client: ZephyrClient, params: SamplingParams, *, stream: bool) -> str:
    if stream:
        chunks = list(client.chat_stream(PROMPT, params=params))
        assert chunks[-1].result is not None
        return chunks[-1].result.text
    return client.chat(PROMPT, params=params).text


def _build(fields: dict[str, Any]) -> SamplingParams | ConfigurationError:
    """The options, or the error that refused them (both are outcomes the property allows)."""
    try:
        built: SamplingParams | ConfigurationError = SamplingParams(**fields)
    except ConfigurationError as refused:
        built = refused
    return built


@settings(max_examples=150)
@given(fields=st.one_of(sampling_fields(), plausible_fields()))
def test_options_are_refused_before_sending_or_accepted_by_tgi(
    emulator: TGIEmulator, client: ZephyrClient, fields: dict[str, Any]
) -> None:
    emulator.reset()
    built = _build(fields)
    if isinstance(built, ConfigurationError):
        assert isinstance(built.__cause__, pydantic.ValidationError), "pydantic's error is kept as the cause"
        event("refused by SamplingParams")
        with pytest.raises(ConfigurationError):
            client.chat(PROMPT, **fields)
        assert generation_requests(emulator) == [], "refused options must not reach the server"
        return
    params = built
    for stream in (False, True):
        emulator.reset()
        try:
            _generate(client, params, stream=stream)
        except (ConfigurationError, PromptError):
            # A deployment limit (/info) or the token budget: refused before sending, like a pydantic error.
            event(f"refused by the server's limits (stream={stream})")
            assert generation_requests(emulator) == [], "refused options must not reach the server"
        except InputValidationError as exc:
            pytest.fail(f"the client accepted {params!r} but TGI answers 422: {exc}")
        else:
            event(f"accepted by TGI (stream={stream})")


def test_nan_is_refused_before_sending(emulator: TGIEmulator, client: ZephyrClient) -> None:
    emulator.reset()
    for name in ("temperature", "top_p", "typical_p", "repetition_penalty", "frequency_penalty"):
        fields: dict[str, Any] = {name: math.nan}
        with pytest.raises(ConfigurationError):
            SamplingParams(**fields)
        with pytest.raises(ConfigurationError):
            client.chat(PROMPT, **fields)
    assert generation_requests(emulator) == []


# --- bugs this fuzzing found, each pinned by a test -----------------------------------------------------------


@pytest.mark.parametrize("name", ["temperature", "repetition_penalty"])
def test_infinity_is_refused_before_sending(name: str, emulator: TGIEmulator, client: ZephyrClient) -> None:
    emulator.reset()
    fields: dict[str, Any] = {name: math.inf}
    with pytest.raises(ConfigurationError):
        client.chat(PROMPT, **fields)
    assert generation_requests(emulator) == []


@pytest.mark.parametrize("name", ["temperature", "repetition_penalty", "top_p", "typical_p"])
def test_a_positive_value_that_is_zero_in_f32_is_refused_before_sending(
    name: str, emulator: TGIEmulator, client: ZephyrClient
) -> None:
    emulator.reset()
    with pytest.raises(ConfigurationError, match="too small: TGI reads it as a 32-bit float"):
        SamplingParams(**{name: 1e-50})
    fields: dict[str, Any] = {name: 1e-50}
    with pytest.raises(ConfigurationError, match="too small"):
        client.chat(PROMPT, **fields)
    assert generation_requests(emulator) == []


@pytest.mark.parametrize("name", ["top_p", "typical_p"])
def test_a_probability_that_is_one_in_f32_is_not_sent(name: str, emulator: TGIEmulator, client: ZephyrClient) -> None:
    params = SamplingParams(**{name: 0.99999999})
    assert name not in to_wire(params), "TGI's f32 reads it as 1.0, which it refuses: 1.0 means off"
    emulator.reset()
    assert client.chat(PROMPT, params=params).text
    sent = [r.json for r in emulator.stats.requests if r.path == "/generate"]
    assert len(sent) == 1
    assert name not in sent[0]["parameters"]


def test_top_k_beyond_i32_is_refused_before_sending(emulator: TGIEmulator, client: ZephyrClient) -> None:
    emulator.reset()
    with pytest.raises(ConfigurationError, match="less than or equal to 2147483647"):
        SamplingParams(top_k=I32_MAX + 1)
    with pytest.raises(ConfigurationError):
        client.chat(PROMPT, top_k=I32_MAX + 1)
    assert generation_requests(emulator) == []


def test_a_stop_sequence_with_a_lone_surrogate_is_refused_before_sending(client: ZephyrClient) -> None:
    with pytest.raises(ConfigurationError):
        client.chat(PROMPT, stop=["\ud800"])


def test_details_false_still_returns_a_result(client: ZephyrClient) -> None:
    result = client.chat(PROMPT, details=False)
    assert result.text
