"""Chat and generation over real HTTP, with the sync and the async client."""

from __future__ import annotations

import pytest

from tests.http.conftest import Twin, generation_requests
from zephyr_tgi import ConfigurationError, GenerationResult, SamplingParams, StreamChunk, render_prompt
from zephyr_tgi.testing import TGIEmulator, expected_reply

CARD_PROMPT = "<|system|>\n</s>\n<|user|>\nWhat is GPTQ?</s>\n<|assistant|>\n"


async def test_chat_renders_the_zephyr_prompt_and_returns_the_answer(twin: Twin, emulator: TGIEmulator) -> None:
    result: GenerationResult = await twin.call("chat", "What is GPTQ?")
    assert result.text == expected_reply(CARD_PROMPT)
    assert result.prompt == CARD_PROMPT
    assert result.finish_reason == "eos_token"
    (sent,) = generation_requests(emulator)
    assert sent.path == "/generate"
    assert sent.json["inputs"] == CARD_PROMPT
    assert "</s>" in sent.json["parameters"]["stop"]


async def test_chat_stream_deltas_join_to_the_same_answer_as_chat(twin: Twin) -> None:
    chunks: list[StreamChunk] = await twin.stream("chat_stream", "What is GPTQ?")
    whole: GenerationResult = await twin.call("chat", "What is GPTQ?")
    assert chunks[-1].result is not None
    assert "".join(chunk.text for chunk in chunks) == chunks[-1].result.text == whole.text
    assert all(chunk.result is None for chunk in chunks[:-1])
    assert chunks[-1].result.input_length is not None
    assert "</s>" not in chunks[-1].result.text


async def test_scripted_replies_and_multi_turn_conversations(kind: str) -> None:
    with TGIEmulator(replies={"And the 8-bit ones?": "They need about twice the VRAM."}) as emulator:
        twin = Twin(kind, emulator.url, system_prompt="Be brief.")
        conversation = [
            {"role": "user", "content": "Which branches are 4-bit?"},
            {"role": "assistant", "content": "main, 32g and 64g."},
            {"role": "user", "content": "And the 8-bit ones?"},
        ]
        result = await twin.call("chat", conversation)
        await twin.close()
        assert result.text == "They need about twice the VRAM."
        (sent,) = generation_requests(emulator)
        assert sent.json["inputs"] == render_prompt([{"role": "system", "content": "Be brief."}, *conversation])


async def test_generate_sends_the_raw_prompt(twin: Twin, emulator: TGIEmulator) -> None:
    result = await twin.call("generate", "Once upon a time", max_new_tokens=5)
    assert result.finish_reason == "length"
    assert result.generated_tokens == 5
    assert len(result.tokens) == 5
    assert generation_requests(emulator)[0].json["inputs"] == "Once upon a time"
    assert expected_reply("Once upon a time").startswith(result.text)


async def test_generate_stream_stops_at_max_new_tokens(twin: Twin) -> None:
    chunks = await twin.stream("generate_stream", "Once upon a time", max_new_tokens=4)
    assert len(chunks) == 4
    assert chunks[-1].result is not None
    assert chunks[-1].result.finish_reason == "length"
    assert [chunk.index for chunk in chunks] == [1, 2, 3, 4]


async def test_a_user_stop_sequence_ends_the_answer_and_is_removed(kind: str) -> None:
    with TGIEmulator(replies={"Count": "one two three STOP four five"}) as emulator:
        twin = Twin(kind, emulator.url)
        result = await twin.call("chat", "Count", stop=["STOP"])
        chunks = await twin.stream("chat_stream", "Count", stop=["STOP"])
        await twin.close()
    assert result.finish_reason == "stop_sequence"
    assert result.generated_text.endswith("STOP")
    assert result.text == "one two three "
    assert "".join(c.text for c in chunks) == "one two three "


async def test_client_defaults_call_params_and_keywords_reach_the_wire(kind: str, emulator: TGIEmulator) -> None:
    twin = Twin(kind, emulator.url, params=SamplingParams.preset("model_card"))
    await twin.call("chat", "Hi", params=SamplingParams(max_new_tokens=7), top_k=3)
    await twin.close()
    parameters = generation_requests(emulator)[0].json["parameters"]
    assert parameters["max_new_tokens"] == 7
    assert parameters["top_k"] == 3
    assert parameters["temperature"] == 0.7
    assert parameters["repetition_penalty"] == 1.1


async def test_temperature_zero_is_sent_as_greedy(twin: Twin, emulator: TGIEmulator) -> None:
    await twin.call("chat", "Hi", temperature=0, top_p=1.0)
    parameters = generation_requests(emulator)[0].json["parameters"]
    assert parameters["do_sample"] is False
    assert "temperature" not in parameters
    assert "top_p" not in parameters


async def test_limits_from_info_refuse_a_request_before_it_is_sent(kind: str) -> None:
    with TGIEmulator(max_stop_sequences=2) as emulator:
        twin = Twin(kind, emulator.url)
        with pytest.raises(ConfigurationError, match="up to 2 stop sequences"):
            await twin.call("chat", "Hi", stop=["a", "b"])
        await twin.close()
        assert generation_requests(emulator) == []


async def test_token_details_top_tokens_and_seed(twin: Twin) -> None:
    result = await twin.call("generate", "Hello", max_new_tokens=3, top_n_tokens=2, do_sample=True, seed=7)
    assert result.seed == 7
    assert len(result.top_tokens) == 3
    assert all(len(step) == 2 for step in result.top_tokens)
    assert all(token.logprob is not None for token in result.tokens)
