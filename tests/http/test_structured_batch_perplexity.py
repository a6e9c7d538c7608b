"""chat_json / chat_regex, batch_chat and perplexity over real HTTP."""

from __future__ import annotations

import asyncio
import importlib.resources
import math
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from tests.http.conftest import Twin, generation_requests
from zephyr_tgi import (
    ConfigurationError,
    GenerationResult,
    InputValidationError,
    OverloadedError,
    PrefillUnavailableError,
    StructuredOutputError,
    ZephyrClient,
    ZephyrTokenizer,
)
from zephyr_tgi.testing import ScriptedResponse, SentencePieceTokenizer, TGIEmulator, expected_reply

MODEL = Path(str(importlib.resources.files("mistral_common") / "data" / "tokenizer.model.v1"))


class Variant(BaseModel):
    branch: str
    bits: int
    act_order: bool
    tags: list[str]


async def test_chat_json_returns_a_validated_model_instance(twin: Twin, emulator: TGIEmulator) -> None:
    variant = await twin.call("chat_json", "Describe the main branch as JSON.", Variant)
    assert isinstance(variant, Variant)
    grammar = generation_requests(emulator)[0].json["parameters"]["grammar"]
    assert grammar["type"] == "json"
    assert set(grammar["value"]["properties"]) == {"branch", "bits", "act_order", "tags"}


async def test_chat_json_with_a_dict_schema_returns_a_dict(twin: Twin) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "n": {"type": "integer"}},
        "required": ["city", "n"],
    }
    answer = await twin.call("chat_json", "A city and a number, as JSON.", schema)
    assert isinstance(answer["city"], str)
    assert isinstance(answer["n"], int)


async def test_invalid_structured_output_carries_the_raw_text(kind: str) -> None:
    # A grammar-less server (or a model that ignores it) answers free text: we must notice.
    with TGIEmulator(replies={"Describe it.": "Sure! It is the 4-bit branch."}, grammar_support=True) as emulator:
        emulator.set_faults(
            scripted_responses=[
                ScriptedResponse(
                    status=200,
                    content_type="application/json",
                    body='{"generated_text":"Sure! It is the 4-bit branch.","details":{"finish_reason":"eos_token",'
                    '"generated_tokens":3,"seed":null,"prefill":[],"tokens":[]}}',
                )
            ]
        )
        twin = Twin(kind, emulator.url)
        with pytest.raises(StructuredOutputError) as info:
            await twin.call("chat_json", "Describe it.", Variant)
        await twin.close()
    assert info.value.raw_text == "Sure! It is the 4-bit branch."


async def test_chat_regex(twin: Twin, emulator: TGIEmulator) -> None:
    answer = await twin.call("chat_regex", "Pick a branch size.", r"(4|8)-bit, [0-9]{2,3}g")
    assert re.fullmatch(r"(4|8)-bit, [0-9]{2,3}g", answer)
    assert generation_requests(emulator)[0].json["parameters"]["grammar"] == {
        "type": "regex",
        "value": r"(4|8)-bit, [0-9]{2,3}g",
    }


async def test_a_schema_tgi_would_refuse_is_refused_before_sending(twin: Twin, emulator: TGIEmulator) -> None:
    with pytest.raises(ConfigurationError):
        await twin.call("chat_json", "x", {"type": "array"})
    assert generation_requests(emulator) == []


async def test_batch_results_are_in_input_order(twin: Twin) -> None:
    prompts = [f"Question number {i}?" for i in range(12)]
    results = await twin.call("batch_chat", prompts, concurrency=4, progress=False)
    expected = [(await twin.call("chat", p)).text for p in prompts]
    assert [r.text for r in results] == expected


async def test_batch_keeps_exactly_concurrency_requests_in_flight(kind: str) -> None:
    with TGIEmulator(token_latency=0.01) as emulator:
        twin = Twin(kind, emulator.url)
        await twin.call("batch_chat", [f"q{i}" for i in range(20)], concurrency=5, progress=False, max_new_tokens=8)
        await twin.close()
        assert emulator.stats.max_in_flight == 5


async def test_batch_default_concurrency_stays_below_the_servers_limit(kind: str) -> None:
    with TGIEmulator(token_latency=0.01, max_concurrent_requests=6) as emulator:
        twin = Twin(kind, emulator.url)
        results = await twin.call("batch_chat", [f"q{i}" for i in range(12)], progress=False, max_new_tokens=4)
        await twin.close()
        assert all(isinstance(r, GenerationResult) for r in results)
        assert emulator.stats.max_in_flight == 3
        assert emulator.stats.overloaded_total == 0


async def test_batch_reports_per_item_errors_in_place(twin: Twin, emulator: TGIEmulator) -> None:
    emulator.set_faults(
        scripted_responses=[
            ScriptedResponse(
                status=422,
                content_type="application/json",
                body='{"error":"Input validation error: nope","error_type":"validation"}',
            )
        ]
    )
    results = await twin.call("batch_chat", ["a", "b", "c"], concurrency=1, progress=False)
    assert isinstance(results[0], InputValidationError)
    assert all(isinstance(r, GenerationResult) for r in results[1:])


async def test_batch_can_raise_the_first_error(twin: Twin, emulator: TGIEmulator) -> None:
    emulator.set_faults(overload_next=100)
    with pytest.raises(OverloadedError):
        await twin.call("batch_chat", ["a", "b"], concurrency=1, progress=False, return_exceptions=False)


async def test_batch_checks_every_input_before_sending(twin: Twin, emulator: TGIEmulator) -> None:
    with pytest.raises(ConfigurationError):
        await twin.call("batch_chat", ["fine", []], progress=False)
    with pytest.raises(ConfigurationError, match="concurrency"):
        await twin.call("batch_chat", ["fine"], concurrency=0, progress=False)
    assert generation_requests(emulator) == []


async def test_sync_batch_works_inside_a_running_event_loop(emulator: TGIEmulator) -> None:
    asyncio.get_running_loop()  # as in a Jupyter cell
    with ZephyrClient(emulator.url) as client:
        results = client.batch_chat(["a", "b", "c"], concurrency=2, progress=False)
    texts = [r.text if isinstance(r, GenerationResult) else repr(r) for r in results]
    assert texts == [expected_reply(client.chat_prompt(p, system=None)) for p in "abc"]


def _hand_perplexity(logprobs: list[float]) -> float:
    return math.exp(-sum(logprobs) / len(logprobs))


async def test_perplexity_matches_a_hand_computation_from_prefill_logprobs(kind: str) -> None:
    text = "Zephyr is a fine-tuned version of Mistral."
    with TGIEmulator(enable_prefill_logprobs=True, tokenizer=SentencePieceTokenizer(MODEL)) as emulator:
        twin = Twin(kind, emulator.url)
        ppl = await twin.call("perplexity", text)
        details = (await twin.call("generate", text, max_new_tokens=1, decoder_input_details=True)).prefill
        await twin.close()
    assert details[0].logprob is None  # BOS
    assert ppl == pytest.approx(_hand_perplexity([t.logprob for t in details[1:] if t.logprob is not None]))


async def test_long_texts_are_scored_in_windows_each_token_once(kind: str) -> None:
    tokenizer = ZephyrTokenizer.from_file(MODEL)
    text = " ".join(f"word{i}" for i in range(60))
    n_tokens = tokenizer.count(text, add_bos=False)
    with TGIEmulator(
        enable_prefill_logprobs=True, tokenizer=SentencePieceTokenizer(MODEL), max_input_tokens=41, max_total_tokens=60
    ) as emulator:
        twin = Twin(kind, emulator.url, tokenizer=tokenizer)
        ppl = await twin.call("perplexity", text, stride=20)
        await twin.close()
        requests = generation_requests(emulator)
    window = 41 - 2  # BOS and a token of slack
    assert len(requests) == math.ceil((n_tokens - window) / 20) + 1
    assert all(tokenizer.count(r.json["inputs"]) <= 41 for r in requests)
    assert ppl > 1.0


async def test_perplexity_without_prefill_logprobs_says_what_to_enable(twin: Twin) -> None:
    with pytest.raises(PrefillUnavailableError, match="--enable-prefill-logprobs"):
        await twin.call("perplexity", "Some text.")
