"""Other clients see TGI in the emulator: huggingface_hub's InferenceClient and the openai SDK, as CLIENTS.md
describes them against TGI (where CLIENTS.md was measured against the old `data:` framing, TGI.md §9 wins)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import OverloadedError, ValidationError

from zephyr_tgi.testing import TGIEmulator, expected_reply

MESSAGES: Any = [{"role": "user", "content": "Hi"}]
CHAT_PROMPT = "<|user|>\nHi</s>\n<|assistant|>\n"
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
def tgi() -> Iterator[TGIEmulator]:
    with TGIEmulator() as emulator:
        yield emulator


@pytest.fixture
def hub(tgi: TGIEmulator) -> InferenceClient:
    return InferenceClient(base_url=tgi.url)


@pytest.fixture
def oai(tgi: TGIEmulator) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{tgi.url}/v1", api_key="unused") as client:
        yield client


# --- huggingface_hub ------------------------------------------------------------------------------


def test_hub_text_generation_with_details(hub: InferenceClient) -> None:
    output = hub.text_generation("Hello", max_new_tokens=4, details=True)
    assert output.details is not None
    # InferenceClient posts to `/`, where an unset return_full_text follows the pipeline tag: the prompt is echoed.
    assert output.generated_text == "Hello" + "".join(token.text for token in output.details.tokens)
    assert (output.details.generated_tokens, output.details.finish_reason) == (4, "length")


def test_hub_text_generation_stream_ends_with_the_full_text(hub: InferenceClient) -> None:
    events = list(hub.text_generation("Hello", max_new_tokens=4, stream=True, details=True))
    assert len(events) == 4
    assert events[-1].generated_text == "Hello" + "".join(event.token.text for event in events)


def test_hub_chat_completion(hub: InferenceClient) -> None:
    output = hub.chat_completion(MESSAGES, max_tokens=200)
    assert output.choices[0].message.content == expected_reply(CHAT_PROMPT)
    assert output.system_fingerprint == "3.3.6-dev0-sha-dfb3fbe"


def test_hub_chat_completion_stream_ends_cleanly_at_data_space_done(hub: InferenceClient) -> None:
    # The regression this framing fixes: with `data:[DONE]` this loop died in a JSONDecodeError.
    chunks = list(hub.chat_completion(MESSAGES, max_tokens=200, stream=True))
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == expected_reply(CHAT_PROMPT)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_hub_chat_completion_stream_with_usage(hub: InferenceClient) -> None:
    options: Any = {"include_usage": True}
    chunks = list(hub.chat_completion(MESSAGES, max_tokens=3, stream=True, stream_options=options))
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3


def test_hub_text_generation_errors_are_typed(hub: InferenceClient, tgi: TGIEmulator) -> None:
    with pytest.raises(ValidationError, match="`top_k` must be strictly positive"):
        hub.text_generation("Hello", top_k=-1)
    tgi.set_faults(overload_next=1)
    with pytest.raises(OverloadedError, match="Model is overloaded"):
        hub.text_generation("Hello", max_new_tokens=2)


def test_hub_in_band_stream_errors_are_typed(hub: InferenceClient, tgi: TGIEmulator) -> None:
    tgi.set_faults(overload_next=1)
    with pytest.raises(OverloadedError):
        list(hub.text_generation("Hello", max_new_tokens=2, stream=True))


def test_hub_chat_tool_calls(hub: InferenceClient) -> None:
    output = hub.chat_completion(MESSAGES, tools=[WEATHER], max_tokens=100)
    calls = output.choices[0].message.tool_calls
    assert calls is not None
    call = calls[0]
    assert (call.id, call.function.name) == ("0", "get_weather")
    assert output.choices[0].message.content is None


# --- the openai SDK -------------------------------------------------------------------------------


def test_openai_chat(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=200)
    assert completion.choices[0].message.content == expected_reply(CHAT_PROMPT)
    assert completion.model == "TheBloke/zephyr-7B-alpha-GPTQ"


def test_openai_stream(oai: openai.OpenAI) -> None:
    stream: Any = oai.chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=200, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == expected_reply(CHAT_PROMPT)


def test_openai_stream_of_a_tool_call(oai: openai.OpenAI) -> None:
    stream: Any = oai.chat.completions.create(
        model="tgi",
        messages=MESSAGES,
        tools=[WEATHER],
        stream=True,
    )
    calls = [call for chunk in stream for call in chunk.choices[0].delta.tool_calls or ()]
    assert calls[0].function is not None
    assert calls[0].function.name == "get_weather"
    arguments = "".join(call.function.arguments or "" for call in calls if call.function is not None)
    assert json.loads(arguments) == {"city": "example"}


def test_openai_validation_errors_are_422_and_not_retried(oai: openai.OpenAI, tgi: TGIEmulator) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        oai.chat.completions.create(model="tgi", messages=MESSAGES, top_p=1.5)
    # openai keeps the `error` member of the body: TGI's message.
    assert caught.value.body == "Input validation error: `top_p` must be > 0.0 and < 1.0"
    assert tgi.stats.requests_by_route.get("/v1/chat/completions") == 1


def test_openai_retries_a_429_and_then_succeeds(oai: openai.OpenAI, tgi: TGIEmulator) -> None:
    tgi.set_faults(overload_next=1)
    started = time.monotonic()
    completion = oai.chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=3)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3
    assert tgi.stats.requests_by_route["/v1/chat/completions"] == 2
    # No Retry-After from TGI: only openai's backoff (0.375-0.5 s for the first retry).
    assert time.monotonic() - started >= 0.3


def test_openai_gives_up_on_429_after_its_retries(oai: openai.OpenAI, tgi: TGIEmulator) -> None:
    tgi.set_faults(overload_next=3)
    with pytest.raises(openai.RateLimitError):
        oai.with_options(max_retries=2).chat.completions.create(model="tgi", messages=MESSAGES)
    assert tgi.stats.requests_by_route["/v1/chat/completions"] == 3


def test_openai_in_band_stream_errors_raise_without_a_retry(oai: openai.OpenAI, tgi: TGIEmulator) -> None:
    tgi.set_faults(overload_next=1)
    stream = oai.chat.completions.create(model="tgi", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError):
        list(stream)
    assert tgi.stats.requests_by_route["/v1/chat/completions"] == 1
