"""What the emulator generates: agreement with expected_reply, finish reasons, details and grammars."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx2
import jsonschema
import pytest

from zephyr_tgi.testing import BuiltinTokenizer, TGIEmulator, expected_reply

REPLIES = {"Tell me a joke": "Why did the chicken cross the road? To get to the other side.", "Hi": "Hello there!"}
SCHEMA: dict[str, Any] = {
    "$defs": {"Pet": {"type": "object", "properties": {"kind": {"enum": ["cat", "dog"]}}, "required": ["kind"]}},
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2},
        "age": {"type": "integer", "minimum": 18},
        "pets": {"type": "array", "items": {"$ref": "#/$defs/Pet"}},
    },
    "required": ["name", "age", "pets"],
}


@pytest.fixture(scope="module")
def tgi() -> Iterator[TGIEmulator]:
    with TGIEmulator(replies=REPLIES) as emulator:
        yield emulator


def _generate(http: httpx2.Client, inputs: str, **parameters: Any) -> dict[str, Any]:
    response = http.post("/generate", json={"inputs": inputs, "parameters": {"details": True, **parameters}})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _stream(http: httpx2.Client, inputs: str, **parameters: Any) -> list[dict[str, Any]]:
    response = http.post("/generate_stream", json={"inputs": inputs, "parameters": {"details": True, **parameters}})
    return [json.loads(line[len("data: ") :]) for line in response.text.split("\n\n") if line]


def _reply_tokens(text: str) -> int:
    return len(BuiltinTokenizer().encode(text))


@pytest.mark.parametrize("prompt", ["Hello", "What is the capital of France?", "Tell me a joke"])
def test_greedy_text_is_the_expected_reply(http: httpx2.Client, prompt: str) -> None:
    body = _generate(http, prompt, max_new_tokens=500)
    assert body["generated_text"] == expected_reply(prompt, replies=REPLIES)


def test_omitting_parameters_samples_but_keeps_the_same_text(http: httpx2.Client) -> None:
    body = http.post("/generate", json={"inputs": "Hello"}).json()
    assert body == {"generated_text": expected_reply("Hello")}


def test_an_explicit_seed_changes_the_sampled_text_reproducibly(http: httpx2.Client) -> None:
    first = _generate(http, "Hello", do_sample=True, seed=42, max_new_tokens=500)
    second = _generate(http, "Hello", do_sample=True, seed=42, max_new_tokens=500)
    assert first == second
    assert first["generated_text"] == expected_reply("Hello", seed=42)
    assert first["details"]["seed"] == 42


def test_sampling_without_a_seed_reports_a_deterministic_seed(http: httpx2.Client) -> None:
    seeds = {_generate(http, "Hello", temperature=0.7)["details"]["seed"] for _ in range(2)}
    assert len(seeds) == 1
    assert isinstance(seeds.pop(), int)


def test_greedy_reports_no_seed(http: httpx2.Client) -> None:
    assert _generate(http, "Hello", seed=5)["details"]["seed"] is None


def test_the_sampling_seed_salt_sets_the_reported_seed() -> None:
    with TGIEmulator(sampling_seed=1) as one, TGIEmulator(sampling_seed=2) as two:
        seeds = [
            httpx2.post(
                f"{tgi.url}/generate",
                json={"inputs": "x", "parameters": {"do_sample": True, "details": True}},
                trust_env=False,
            ).json()["details"]["seed"]
            for tgi in (one, two)
        ]
    assert seeds[0] != seeds[1]


def test_an_exhausted_reply_ends_with_an_eos_token(http: httpx2.Client) -> None:
    reply = REPLIES["Tell me a joke"]
    details = _generate(http, "Tell me a joke")["details"]
    assert details["finish_reason"] == "eos_token"
    assert details["generated_tokens"] == _reply_tokens(reply) + 1
    assert details["tokens"][-1]["id"] == 2
    assert details["tokens"][-1]["text"] == "</s>"
    assert details["tokens"][-1]["special"] is True


def test_max_new_tokens_cuts_with_finish_reason_length(http: httpx2.Client) -> None:
    body = _generate(http, "Tell me a joke", max_new_tokens=3)
    assert body["details"]["finish_reason"] == "length"
    assert body["generated_text"] == "Why did the"


def test_length_wins_when_the_last_allowed_token_is_eos(http: httpx2.Client) -> None:
    n_tokens = _reply_tokens(REPLIES["Hi"]) + 1
    body = _generate(http, "Hi", max_new_tokens=n_tokens)
    assert body["details"]["finish_reason"] == "length"
    assert body["generated_text"] == REPLIES["Hi"]


def test_a_stop_sequence_ends_generation_and_stays_in_the_text(http: httpx2.Client) -> None:
    body = _generate(http, "Tell me a joke", stop=["road?"])
    assert body["details"]["finish_reason"] == "stop_sequence"
    assert body["generated_text"] == "Why did the chicken cross the road?"


def test_a_stop_sequence_must_end_the_output_like_tgis_regex(http: httpx2.Client) -> None:
    # TGI matches `re.escape(stop) + "$"` after each token, so a stop ending mid-token never fires.
    body = _generate(http, "Tell me a joke", stop=["chick"])
    assert body["details"]["finish_reason"] == "eos_token"
    assert body["generated_text"] == REPLIES["Tell me a joke"]


def test_return_full_text_prepends_the_prompt(http: httpx2.Client) -> None:
    body = _generate(http, "Hi", return_full_text=True)
    assert body["generated_text"] == "Hi" + REPLIES["Hi"]


def test_stream_tokens_add_up_to_the_final_text_and_match_generate(http: httpx2.Client) -> None:
    events = _stream(http, "Hello")
    text = "".join(event["token"]["text"] for event in events if not event["token"]["special"])
    assert text == events[-1]["generated_text"] == _generate(http, "Hello")["generated_text"]
    assert [e["token"] for e in events] == _generate(http, "Hello")["details"]["tokens"]


def test_top_n_tokens_per_step_when_not_streaming(http: httpx2.Client) -> None:
    details = _generate(http, "Hi", top_n_tokens=3)["details"]
    assert len(details["top_tokens"]) == details["generated_tokens"]
    for step, chosen in zip(details["top_tokens"], details["tokens"], strict=True):
        assert len(step) == 3
        assert step[0] == chosen
        assert [t["logprob"] for t in step] == sorted((t["logprob"] for t in step), reverse=True)


def test_top_n_tokens_is_a_flat_list_per_stream_event(http: httpx2.Client) -> None:
    events = _stream(http, "Hi", top_n_tokens=2)
    assert all(len(event["top_tokens"]) == 2 for event in events)
    assert all("top_tokens" not in event for event in _stream(http, "Hi"))


def test_best_of_returns_the_other_sequences(http: httpx2.Client) -> None:
    body = _generate(http, "Hello", best_of=2, do_sample=True, max_new_tokens=500)
    assert body["generated_text"] == expected_reply("Hello")
    sequences = body["details"]["best_of_sequences"]
    assert len(sequences) == 1
    assert sequences[0]["generated_text"] != body["generated_text"]
    assert set(sequences[0]) == {"generated_text", "finish_reason", "generated_tokens", "seed", "prefill", "tokens"}
    assert isinstance(body["details"]["seed"], int)


def test_prefill_is_empty_without_prefill_logprobs(http: httpx2.Client) -> None:
    assert _generate(http, "Hi", decoder_input_details=True)["details"]["prefill"] == []


def test_prefill_lists_the_input_with_bos_first_when_enabled() -> None:
    with TGIEmulator(enable_prefill_logprobs=True) as tgi:
        details = httpx2.post(
            f"{tgi.url}/generate",
            json={"inputs": "Hello world", "parameters": {"decoder_input_details": True, "max_new_tokens": 1}},
            trust_env=False,
        ).json()["details"]
    prefill = details["prefill"]
    assert prefill[0] == {"id": 1, "text": "<s>", "logprob": None}
    assert [t["text"] for t in prefill[1:]] == ["Hello", " world"]
    assert all(t["logprob"] < 0 for t in prefill[1:])


@pytest.mark.parametrize(
    "grammar",
    [
        {"type": "json", "value": SCHEMA},
        {"type": "json_object", "value": SCHEMA},
        {"type": "json", "value": json.dumps(SCHEMA)},
        {"type": "json_schema", "value": {"name": "person", "schema": SCHEMA}},
    ],
    ids=["json", "json_object", "json_string", "json_schema"],
)
def test_json_grammar_output_validates_against_the_schema(http: httpx2.Client, grammar: dict[str, Any]) -> None:
    body = _generate(http, "Describe a person", grammar=grammar)
    jsonschema.validate(json.loads(body["generated_text"]), SCHEMA)
    assert body["details"]["finish_reason"] == "eos_token"


def test_regex_grammar_output_matches(http: httpx2.Client) -> None:
    pattern = r"\d{3}-[A-Z]{2}(ok|ko)"
    body = _generate(http, "Code?", grammar={"type": "regex", "value": pattern})
    assert re.fullmatch(pattern, body["generated_text"])


def test_chat_response_format_constrains_the_reply(http: httpx2.Client) -> None:
    body = http.post(
        "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "Hi"}],
            "response_format": {"type": "json_object", "value": SCHEMA},
        },
    ).json()
    jsonschema.validate(json.loads(body["choices"][0]["message"]["content"]), SCHEMA)


def test_chat_uses_the_reply_keyed_by_the_user_message(http: httpx2.Client) -> None:
    body = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}]}).json()
    assert body["choices"][0]["message"]["content"] == "Hello there!"
    assert body["choices"][0]["finish_reason"] == "stop"


def test_chat_max_tokens_and_stop_sequences(http: httpx2.Client) -> None:
    messages = [{"role": "user", "content": "Tell me a joke"}]
    cut = http.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 2}).json()
    stopped = http.post("/v1/chat/completions", json={"messages": messages, "stop": ["chicken"]}).json()
    assert (cut["choices"][0]["message"]["content"], cut["choices"][0]["finish_reason"]) == ("Why did", "length")
    assert stopped["choices"][0]["finish_reason"] == "stop_sequence"
    assert stopped["choices"][0]["message"]["content"] == "Why did the chicken"


def test_the_generate_prompt_is_rendered_chat_prompt_agrees_with_chat(http: httpx2.Client) -> None:
    prompt = "<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n"
    generated = _generate(http, prompt)["generated_text"]
    chat = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "What is 2+2?"}]}).json()
    assert generated == chat["choices"][0]["message"]["content"] == expected_reply(prompt)
