"""TGI's input validation: every message verbatim, in TGI's order, as JSON 422 or in-band."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from zephyr_tgi.testing import TGIEmulator

LONG = " ".join(["word"] * 40)  # 41 tokens with BOS under the built-in tokenizer


@pytest.fixture(scope="module")
def tgi() -> Iterator[TGIEmulator]:
    with TGIEmulator(
        max_input_tokens=20, max_total_tokens=30, max_best_of=2, max_stop_sequences=2, max_top_n_tokens=3
    ) as emulator:
        yield emulator


CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("best_of_too_large", "hi", {"best_of": 3, "do_sample": True}, "`best_of` must be > 0 and <= 2. Given: 3"),
    ("best_of_without_sampling", "hi", {"best_of": 2}, "you must use sampling when `best_of` is > 1"),
    ("temperature_zero", "hi", {"temperature": 0}, "`temperature` must be strictly positive"),
    ("temperature_negative", "hi", {"temperature": -1.0}, "`temperature` must be strictly positive"),
    ("repetition_penalty", "hi", {"repetition_penalty": 0}, "`repetition_penalty` must be strictly positive"),
    ("frequency_penalty", "hi", {"frequency_penalty": 2.5}, "`frequency_penalty` must be >= -2.0 and <= 2.0"),
    ("top_p_one", "hi", {"top_p": 1.0}, "`top_p` must be > 0.0 and < 1.0"),
    ("top_p_zero", "hi", {"top_p": 0.0}, "`top_p` must be > 0.0 and < 1.0"),
    ("top_p_rounds_to_one_in_f32", "hi", {"top_p": 0.999999999}, "`top_p` must be > 0.0 and < 1.0"),
    ("typical_p", "hi", {"typical_p": 1.0}, "`typical_p` must be > 0.0 and < 1.0"),
    ("top_k", "hi", {"top_k": 0}, "`top_k` must be strictly positive"),
    ("max_new_tokens_zero", "hi", {"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive"),
    ("stop_count", "hi", {"stop": ["a", "b", "c"]}, "`stop` supports up to 2 stop sequences. Given: 3"),
    (
        "seed_with_best_of",
        "hi",
        {"best_of": 2, "do_sample": True, "seed": 1},
        "`seed` must not be set when `best_of` > 1",
    ),
    ("top_n_tokens", "hi", {"top_n_tokens": 4}, "`top_n_tokens` must be >= 0 and <= 3. Given: 4"),
    ("empty_inputs", "", {}, "`inputs` cannot be empty"),
    ("truncate_zero", "hi", {"truncate": 0}, "`truncate` must be strictly positive and less than 20. Given: 0"),
    ("truncate_too_large", "hi", {"truncate": 21}, "`truncate` must be strictly positive and less than 20. Given: 21"),
    (
        "total_tokens",
        "hi",
        {"max_new_tokens": 29},
        "`inputs` tokens + `max_new_tokens` must be <= 30. Given: 2 `inputs` tokens and 29 `max_new_tokens`",
    ),
    (
        "total_tokens_checked_before_input_length",
        LONG,
        {"max_new_tokens": 5},
        "`inputs` tokens + `max_new_tokens` must be <= 30. Given: 41 `inputs` tokens and 5 `max_new_tokens`",
    ),
    ("input_length", " ".join(["word"] * 24), {}, "`inputs` must have less than 20 tokens. Given: 25"),
    (
        "grammar_json_without_properties",
        "hi",
        {"grammar": {"type": "json", "value": {"type": "object"}}},
        "grammar is not valid: Grammar must have a 'properties' field",
    ),
    (
        "grammar_json_string_that_is_not_json",
        "hi",
        {"grammar": {"type": "json", "value": "{nope"}},
        "grammar is not valid: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
    ),
    ("grammar_json_of_a_number", "hi", {"grammar": {"type": "json", "value": 5}}, "grammar is not supported"),
    (
        "grammar_bad_regex",
        "hi",
        {"grammar": {"type": "regex", "value": "("}},
        "grammar is not valid: missing ), unterminated subpattern at position 0",
    ),
]


@pytest.mark.parametrize(("inputs", "parameters", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_generate_rejects_with_the_verbatim_message(
    http: httpx2.Client, inputs: str, parameters: dict[str, Any], message: str
) -> None:
    response = http.post("/generate", json={"inputs": inputs, "parameters": parameters})
    assert response.status_code == 422
    assert response.json() == {"error": f"Input validation error: {message}", "error_type": "validation"}


def test_the_first_failing_check_wins(http: httpx2.Client) -> None:
    everything_wrong = {"temperature": 0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 0, "stop": ["a"] * 9}
    response = http.post("/generate", json={"inputs": "", "parameters": everything_wrong})
    assert response.json()["error"] == "Input validation error: `temperature` must be strictly positive"


def test_truncate_keeps_the_last_tokens_so_long_inputs_pass(http: httpx2.Client) -> None:
    response = http.post("/generate", json={"inputs": LONG, "parameters": {"truncate": 10, "max_new_tokens": 5}})
    assert response.status_code == 200
    assert response.headers["x-prompt-tokens"] == "10"


def test_an_unset_max_new_tokens_uses_the_remaining_budget(http: httpx2.Client) -> None:
    response = http.post("/generate", json={"inputs": " ".join(["word"] * 19), "parameters": {"details": True}})
    assert response.status_code == 200
    assert response.json()["details"]["generated_tokens"] == 10  # 30 total - 20 input tokens


def test_streams_report_validation_errors_in_band(http: httpx2.Client) -> None:
    response = http.post("/generate_stream", json={"inputs": "hi", "parameters": {"temperature": 0}})
    assert response.status_code == 200
    assert response.content == (
        b'data: {"error":"Input validation error: `temperature` must be strictly positive",'
        b'"error_type":"validation"}\n\n'
    )


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"best_of": 2, "do_sample": True}, "`best_of` != 1 is not supported when streaming tokens"),
        ({"best_of": 0}, "`best_of` != 1 is not supported when streaming tokens"),
        ({"decoder_input_details": True}, "`decoder_input_details` == true is not supported when streaming tokens"),
    ],
)
def test_stream_only_rejections(http: httpx2.Client, parameters: dict[str, Any], message: str) -> None:
    response = http.post("/generate_stream", json={"inputs": "hi", "parameters": parameters})
    assert json.loads(response.content.decode()[len("data: ") :]) == {
        "error": f"Input validation error: {message}",
        "error_type": "validation",
    }


def test_chat_streams_report_validation_errors_in_openai_shape(http: httpx2.Client) -> None:
    response = http.post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "stream": True, "top_p": 1.0}
    )
    assert response.status_code == 200
    assert response.content == (
        b'data: {"error":{"message":"Input validation error: `top_p` must be > 0.0 and < 1.0",'
        b'"http_status_code":422}}\n\ndata: [DONE]\n\n'
    )


def test_chat_temperature_zero_means_greedy_not_an_error(http: httpx2.Client) -> None:
    response = http.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "temperature": 0, "max_tokens": 2},
    )
    assert response.status_code == 200


def test_best_of_is_disabled_when_the_limit_is_one() -> None:
    with TGIEmulator(max_best_of=1) as tgi:
        response = httpx2.post(
            f"{tgi.url}/generate",
            json={"inputs": "hi", "parameters": {"best_of": 2, "do_sample": True}},
            trust_env=False,
        )
    assert response.json()["error"] == "Input validation error: `best_of` != 1 is not allowed for this endpoint"


def test_grammar_can_be_disabled() -> None:
    with TGIEmulator(grammar_support=False) as tgi:
        response = httpx2.post(
            f"{tgi.url}/generate",
            json={"inputs": "hi", "parameters": {"grammar": {"type": "regex", "value": "a+"}}},
            trust_env=False,
        )
    assert response.json()["error"] == "Input validation error: grammar is not supported"


def test_chat_without_a_template_is_a_template_error() -> None:
    with TGIEmulator(chat_template=False) as tgi:
        response = httpx2.post(
            f"{tgi.url}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
            trust_env=False,
        )
    assert response.status_code == 422
    assert response.json() == {"error": "Template error: template not found", "error_type": "template_error"}


def test_response_format_and_tools_are_mutually_exclusive(http: httpx2.Client) -> None:
    response = http.post(
        "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [],
            "response_format": {"type": "json", "value": {"properties": {}}},
        },
    )
    assert response.status_code == 422
    assert response.json() == {
        "error": "Tool error: Grammar and tools are mutually exclusive",
        "error_type": "tool_error",
    }
