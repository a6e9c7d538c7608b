"""The client's behaviour on every engine: the same calls against the TGI, vLLM and SGLang dialects.

Each test runs for each engine and each client (sync and async) over real loopback HTTP.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from tests.http.conftest import Twin
from zephyr_tgi import (
    AsyncConversation,
    AsyncZephyrClient,
    ConfigurationError,
    Conversation,
    GenerationError,
    InputValidationError,
    RetryPolicy,
    ServerUnavailableError,
    SGLangOptions,
    VLLMOptions,
    ZephyrClient,
    render_prompt,
)
from zephyr_tgi.testing import TGIEmulator, expected_reply

ENGINES = ("tgi", "vllm", "sglang")
_GENERATION_PATHS = {
    "tgi": ("/generate", "/generate_stream"),
    "vllm": ("/v1/completions",),
    "sglang": ("/v1/completions",),
}


class Person(BaseModel):
    name: str
    age: int


@pytest.fixture(params=ENGINES)
def dialect(request: pytest.FixtureRequest) -> Iterator[TGIEmulator]:
    """An emulator speaking one engine's API."""
    with TGIEmulator(engine=request.param) as server:
        yield server


@pytest.fixture
async def client(kind: str, dialect: TGIEmulator) -> AsyncIterator[Twin]:
    """The client of `kind` with `engine="auto"`, connected to `dialect`."""
    twin = Twin(kind, dialect.url)
    yield twin
    await twin.close()


def generations(emulator: TGIEmulator) -> list[Any]:
    paths = _GENERATION_PATHS[emulator.engine]
    return [r for r in emulator.stats.requests if r.path in paths]


async def test_auto_identifies_the_engine_once_and_says_which(client: Twin, dialect: TGIEmulator) -> None:
    assert client.client.engine == "auto"
    for _ in range(3):
        await client.call("chat", "Hi", max_new_tokens=4)
    assert client.client.engine == dialect.engine
    probes = [r.path for r in dialect.stats.requests if r.path in ("/info", "/get_model_info", "/version")]
    assert (
        probes
        == {"tgi": ["/info"], "sglang": ["/info", "/get_model_info"], "vllm": ["/info", "/get_model_info", "/version"]}[
            dialect.engine
        ]
    )


async def test_chat_sends_the_byte_exact_zephyr_prompt_to_the_raw_prompt_route(
    client: Twin, dialect: TGIEmulator
) -> None:
    result = await client.call("chat", "What is GPTQ?", max_new_tokens=12)
    prompt = render_prompt([{"role": "system", "content": ""}, {"role": "user", "content": "What is GPTQ?"}])
    [sent] = generations(dialect)
    body = sent.json
    assert (body["inputs"] if dialect.engine == "tgi" else body["prompt"]) == prompt
    assert result.text
    assert result.text == expected_reply(prompt)[: len(result.text)]
    assert result.prompt == prompt


async def test_the_same_answer_on_every_engine(client: Twin, dialect: TGIEmulator) -> None:
    with TGIEmulator() as tgi, ZephyrClient(tgi.url) as reference:
        expected = reference.chat("Tell me a story", max_new_tokens=20)
    result = await client.call("chat", "Tell me a story", max_new_tokens=20)
    assert (result.text, result.finish_reason) == (expected.text, expected.finish_reason)


async def test_chat_stream_chunks_join_to_the_result(client: Twin, dialect: TGIEmulator) -> None:
    chunks = await client.stream("chat_stream", "Stream please", max_new_tokens=16)
    final = chunks[-1].result
    assert final is not None
    assert all(chunk.result is None for chunk in chunks[:-1])
    assert "".join(chunk.text for chunk in chunks) == final.text
    assert final.text == (await client.call("chat", "Stream please", max_new_tokens=16)).text
    assert final.finish_reason in ("length", "eos_token")


async def test_no_max_new_tokens_means_the_rest_of_the_window_not_the_engines_short_default(
    client: Twin, dialect: TGIEmulator
) -> None:
    result = await client.call("chat", "A long answer please")
    assert result.finish_reason == "eos_token"  # the whole reply, not 16 tokens cut by `length`
    if dialect.engine != "tgi":
        [sent] = generations(dialect)
        assert sent.json["max_tokens"] > 16


async def test_structured_output_uses_each_engines_form_and_is_validated(client: Twin, dialect: TGIEmulator) -> None:
    person = await client.call("chat_json", "Who?", Person, max_new_tokens=64)
    assert isinstance(person, Person)
    digits = await client.call("chat_regex", "Digits?", r"[0-9]{3}", max_new_tokens=8)
    assert len(digits) == 3
    assert digits.isdigit()
    json_body, regex_body = (r.json for r in generations(dialect))
    if dialect.engine == "tgi":
        assert json_body["parameters"]["grammar"]["type"] == "json"
        assert regex_body["parameters"]["grammar"] == {"type": "regex", "value": "[0-9]{3}"}
    elif dialect.engine == "vllm":
        assert json_body["structured_outputs"]["json"]["properties"].keys() == {"name", "age"}
        assert regex_body["structured_outputs"] == {"regex": "[0-9]{3}"}
    else:
        assert json.loads(json_body["json_schema"])["properties"].keys() == {"name", "age"}
        assert regex_body["regex"] == "[0-9]{3}"


@pytest.mark.parametrize(
    ("option", "engines"),
    [
        ({"typical_p": 0.5}, ("vllm", "sglang")),
        ({"watermark": True}, ("vllm", "sglang")),
        ({"truncate": 100}, ("sglang",)),
        ({"engine_options": VLLMOptions(min_p=0.1)}, ("tgi", "sglang")),
        ({"engine_options": SGLangOptions(min_p=0.1)}, ("tgi", "vllm")),
    ],
)
async def test_an_option_the_engine_lacks_is_refused_before_the_generation_is_sent(
    client: Twin, dialect: TGIEmulator, option: dict[str, Any], engines: tuple[str, ...]
) -> None:
    await client.call("chat", "warm up", max_new_tokens=2)  # identified: the engine is known
    if dialect.engine not in engines:
        await client.call("chat", "Hi", max_new_tokens=4, **option)
        return
    titles = {"tgi": "TGI", "vllm": "vLLM", "sglang": "SGLang"}
    with pytest.raises(ConfigurationError, match=f"not supported on {titles[dialect.engine]}"):
        await client.call("chat", "Hi", max_new_tokens=4, **option)
    assert len(generations(dialect)) == 1  # only the warm-up


async def test_an_explicit_engine_refuses_before_anything_is_sent(kind: str) -> None:
    with TGIEmulator(engine="vllm") as server:
        twin = Twin(kind, server.url, engine="vllm")
        with pytest.raises(ConfigurationError, match=r"typical_p=0\.5 is not supported on vLLM"):
            await twin.call("chat", "Hi", typical_p=0.5)
        await twin.close()
        assert server.stats.requests == []


@pytest.mark.parametrize(
    ("engine", "options"),
    [("vllm", VLLMOptions(min_p=0.05, session_id="s-1")), ("sglang", SGLangOptions(min_p=0.05, session_id="s-1"))],
)
async def test_engine_options_reach_their_engine(kind: str, engine: str, options: Any) -> None:
    with TGIEmulator(engine=engine) as server:
        twin = Twin(kind, server.url)
        await twin.call("chat", "Hi", max_new_tokens=4, engine_options=options)
        await twin.close()
        [sent] = generations(server)
    assert (sent.json["min_p"], sent.json["session_id"]) == (0.05, "s-1")
    assert "engine" not in sent.json


async def test_count_tokens_uses_each_engines_tokenize_route(client: Twin, dialect: TGIEmulator) -> None:
    count = await client.call("count_tokens", "Hello there, general")
    with TGIEmulator() as tgi, ZephyrClient(tgi.url) as reference:
        assert count == reference.count_tokens("Hello there, general")  # BOS included everywhere


async def test_info_is_one_typed_view(client: Twin, dialect: TGIEmulator) -> None:
    info = await client.call("info")
    assert info.engine == dialect.engine
    assert info.model_id == "TheBloke/zephyr-7B-alpha-GPTQ"
    assert info.max_total_tokens == 4096
    assert client.client.limits.max_total_tokens == 4096


async def test_health_and_metrics(client: Twin, dialect: TGIEmulator) -> None:
    assert await client.call("health") is True
    await client.call("chat", "Hi", max_new_tokens=3)
    metrics = await client.call("metrics")
    prefix = {"tgi": "tgi_", "vllm": "vllm:", "sglang": "sglang:"}[dialect.engine]
    assert metrics
    assert all(name.startswith(prefix) for name in metrics)


async def test_a_request_the_engine_refuses_is_an_input_validation_error(kind: str, dialect: TGIEmulator) -> None:
    twin = Twin(kind, dialect.url, budget="off")  # let the server judge a prompt over its window
    with pytest.raises(InputValidationError) as caught:
        await twin.call("generate", "word " * 5000, max_new_tokens=4)
    await twin.close()
    assert caught.value.status_code == (422 if dialect.engine == "tgi" else 400)


async def test_503_while_warming_or_draining_is_retried_on_every_engine(client: Twin, dialect: TGIEmulator) -> None:
    await client.call("chat", "warm up", max_new_tokens=2)
    dialect.set_faults(proxy_unavailable_for=0.05)
    result = await client.call("chat", "Hi", max_new_tokens=4)
    assert result.text


async def test_a_503_that_lasts_is_a_server_unavailable_error(kind: str, dialect: TGIEmulator) -> None:
    twin = Twin(kind, dialect.url, retry=RetryPolicy.never(), engine=dialect.engine)
    dialect.set_faults(proxy_unavailable_for=30.0)
    with pytest.raises(ServerUnavailableError):
        await twin.call("chat", "Hi", max_new_tokens=4)
    await twin.close()


async def test_an_in_band_stream_error_maps_to_the_same_class(client: Twin, dialect: TGIEmulator) -> None:
    await client.call("chat", "warm up", max_new_tokens=2)
    dialect.set_faults(stream_error_next=1, stream_error_after_tokens=2)
    items, error = await client.stream_until_error("chat_stream", "Hi", max_new_tokens=12)
    assert isinstance(error, GenerationError)
    assert len(items) == 2


async def test_chat_completion_passes_through_to_each_engine(client: Twin, dialect: TGIEmulator) -> None:
    completion = await client.call("chat_completion", "Hi", max_tokens=8)
    assert completion.choices[0].message.content
    chunks = await client.stream("chat_completion", "Hi", stream=True, max_tokens=8)
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == completion.choices[0].message.content
    )
    [sent, _] = [r for r in dialect.stats.requests if r.path == "/v1/chat/completions"]
    assert ("model" in sent.json) == (dialect.engine == "tgi")


def test_zephyr_tgi_engine_in_the_environment_picks_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    with TGIEmulator(engine="sglang") as server:
        monkeypatch.setenv("ZEPHYR_TGI_URL", server.url)
        monkeypatch.setenv("ZEPHYR_TGI_ENGINE", "sglang")
        with ZephyrClient.from_env() as client:
            assert client.engine == "sglang"  # known before any request
            assert client.chat("Hi", max_new_tokens=3).text
        assert not [r for r in server.stats.requests if r.path in ("/info", "/get_model_info", "/version")]
        monkeypatch.setenv("ZEPHYR_TGI_ENGINE", "llama.cpp")
        with pytest.raises(ConfigurationError, match="ZEPHYR_TGI_ENGINE"):
            AsyncZephyrClient.from_env()


def test_an_unknown_engine_setting_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="engine must be"):
        ZephyrClient("http://127.0.0.1:9", engine="llamacpp")  # type: ignore[arg-type]


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_conversation_drops_old_turns_counting_with_each_engines_tokenize_route(kind: str, engine: str) -> None:
    questions = ["First question about GPTQ?", "Second one about VRAM?", "Fourth, with many words " * 14]
    with TGIEmulator(engine=engine, max_input_tokens=120, max_total_tokens=160) as server:
        twin = Twin(kind, server.url)
        if isinstance(twin.client, ZephyrClient):
            conversation = Conversation(twin.client, system="Be brief.", answer_reserve=20)
            for question in questions:
                await asyncio.to_thread(conversation.ask, question, max_new_tokens=12)
            dropped = conversation.dropped
        else:
            async_conversation = AsyncConversation(twin.client, system="Be brief.", answer_reserve=20)
            for question in questions:
                await async_conversation.ask(question, max_new_tokens=12)
            dropped = async_conversation.dropped
        await twin.close()
        requests = server.stats.requests
    tokenize = {"tgi": "/tokenize", "vllm": "/tokenize", "sglang": "/v1/tokenize"}[engine]
    assert any(r.path == tokenize for r in requests)
    assert dropped >= 2
    last = [r.json for r in requests if r.path in _GENERATION_PATHS[engine]][-1]
    prompt = last["inputs"] if engine == "tgi" else last["prompt"]
    assert "First question" not in prompt
    assert prompt.startswith("<|system|>\nBe brief.</s>\n<|user|>\n")


def test_options_that_ask_for_nothing_pass_on_every_engine() -> None:
    with TGIEmulator(engine="sglang") as server, ZephyrClient(server.url, engine="sglang") as client:
        assert client.chat("Hi", max_new_tokens=3, best_of=1, watermark=False, typical_p=1.0).text


async def test_metrics_summary_reads_each_engines_names_into_one_view(client: Twin, dialect: TGIEmulator) -> None:
    for _ in range(2):
        await client.call("chat", "Hi", max_new_tokens=3)
    summary = await client.call("metrics_summary")
    assert summary.engine == dialect.engine
    assert summary.requests_running == 0
    assert summary.prompt_tokens is not None
    assert summary.prompt_tokens > 0
    assert summary.generated_tokens is not None
    assert summary.generated_tokens > 0
    assert summary.requests_succeeded == (None if dialect.engine == "sglang" else 2)
