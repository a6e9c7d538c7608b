"""What `ZephyrChatModel` adds to LangChain's standard tests: Zephyr's exact prompt, TGI's wire fields, typed tool
calls, zephyr_tgi's structured output, retries and errors, all over real HTTP against the emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from zephyr_tgi import (
    ConfigurationError,
    InputValidationError,
    StructuredOutputError,
    ZephyrClient,
    render_prompt,
)
from zephyr_tgi.integrations.langchain import ZephyrChatModel
from zephyr_tgi.testing import ScriptedResponse, TGIEmulator


@pytest.fixture
def emulator(langchain_emulator: TGIEmulator) -> Iterator[TGIEmulator]:
    langchain_emulator.reset()
    yield langchain_emulator
    langchain_emulator.reset()


@pytest.fixture
def model(emulator: TGIEmulator) -> ZephyrChatModel:
    return ZephyrChatModel(base_url=emulator.url, max_tokens=32, max_retries=2, timeout=30)


def sent(emulator: TGIEmulator, path: str) -> list[Any]:
    return [r.json for r in emulator.stats.requests if r.path == path]


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Joke(BaseModel):
    setup: str = Field(description="the question")
    punchline: str


def test_invoke_sends_zephyrs_exact_prompt_to_native_generate(emulator: TGIEmulator, model: ZephyrChatModel) -> None:
    history = [SystemMessage("Be brief."), HumanMessage("Hi"), AIMessage("Hello!"), HumanMessage("What is GPTQ?")]
    answer = model.invoke(history)
    expected = render_prompt(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "What is GPTQ?"},
        ]
    )
    (request,) = sent(emulator, "/generate")
    assert request["inputs"] == expected
    assert request["parameters"]["max_new_tokens"] == 32
    assert isinstance(answer.content, str)
    assert answer.content
    with ZephyrClient(emulator.url) as client:
        prompt_tokens = client.count_tokens(expected)
    assert answer.usage_metadata is not None
    assert answer.usage_metadata["input_tokens"] == prompt_tokens
    assert answer.usage_metadata["total_tokens"] == prompt_tokens + answer.usage_metadata["output_tokens"]
    assert answer.usage_metadata["output_tokens"] > 0
    assert answer.response_metadata["finish_reason"] in {"length", "eos_token", "stop_sequence"}


def test_stop_sequences_and_call_options_reach_tgi(emulator: TGIEmulator, model: ZephyrChatModel) -> None:
    model.invoke("Hi", stop=["you"], temperature=0.5, seed=7)
    (request,) = sent(emulator, "/generate")
    assert "you" in request["parameters"]["stop"]
    assert request["parameters"]["temperature"] == 0.5
    assert request["parameters"]["seed"] == 7


def test_stream_joins_to_the_answer_and_ends_with_usage(emulator: TGIEmulator, model: ZephyrChatModel) -> None:
    chunks = list(model.stream("Tell me a story", temperature=0, seed=1))
    whole = model.invoke("Tell me a story", temperature=0, seed=1)
    assert "".join(str(chunk.content) for chunk in chunks) == whole.content
    last = chunks[-1]
    assert isinstance(last, AIMessageChunk)
    assert last.chunk_position == "last"
    assert last.usage_metadata is not None
    assert last.usage_metadata["output_tokens"] == whole.usage_metadata["output_tokens"]  # type: ignore[index]
    assert [chunk.usage_metadata for chunk in chunks[:-1]] == [None] * (len(chunks) - 1)


async def test_async_invoke_and_stream(model: ZephyrChatModel) -> None:
    answer = await model.ainvoke("Hi")
    chunks = [chunk async for chunk in model.astream("Hi")]
    assert isinstance(answer.content, str)
    assert answer.content
    assert chunks[-1].usage_metadata is not None


def test_batch_answers_in_input_order(model: ZephyrChatModel) -> None:
    answers = model.batch(["one", "two", "three"])
    assert [type(a) for a in answers] == [AIMessage] * 3
    assert [a.content for a in answers] == [model.invoke(q).content for q in ["one", "two", "three"]]


def test_tool_calls_are_typed_and_stream_to_the_same_call(emulator: TGIEmulator, model: ZephyrChatModel) -> None:
    with_tools = model.bind_tools([add], tool_choice="any")
    answer = with_tools.invoke("What is 1 + 2?")
    assert len(answer.tool_calls) == 1
    call = answer.tool_calls[0]
    assert call["name"] == "add"
    assert set(call["args"]) == {"a", "b"}
    assert all(isinstance(v, int) for v in call["args"].values())
    assert call["id"]
    streamed: AIMessageChunk | None = None
    for chunk in with_tools.stream("What is 1 + 2?"):
        assert isinstance(chunk, AIMessageChunk)
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed is not None
    assert [(c["name"], c["args"]) for c in streamed.tool_calls] == [("add", call["args"])]
    assert streamed.usage_metadata is not None
    assert sent(emulator, "/v1/chat/completions")[0]["tool_choice"] == "required"  # LangChain's "any"


def test_tool_results_go_back_as_zephyr_turns(emulator: TGIEmulator, model: ZephyrChatModel) -> None:
    history = [
        HumanMessage("What is 1 + 2?"),
        AIMessage("", tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": "7", "type": "tool_call"}]),
        ToolMessage("3", tool_call_id="7"),
    ]
    model.bind_tools([add]).invoke(history)
    (request,) = sent(emulator, "/v1/chat/completions")
    # Zephyr's template has no tool role (TGI would drop it): the call is the assistant's turn, its result a user's.
    assert [(m["role"], m["content"]) for m in request["messages"][1:3]] == [
        ("assistant", 'Calling add({"a": 1, "b": 2})'),
        ("user", "Result of add: 3"),
    ]


def test_a_tool_choice_naming_no_bound_tool_is_refused_before_sending(
    emulator: TGIEmulator, model: ZephyrChatModel
) -> None:
    with pytest.raises(ConfigurationError, match="names no bound tool"):
        model.bind_tools([add], tool_choice="multiply")
    assert sent(emulator, "/v1/chat/completions") == []


def test_structured_output_is_grammar_constrained_and_validated(emulator: TGIEmulator, model: ZephyrChatModel) -> None:
    joke = model.with_structured_output(Joke).invoke("Tell me a joke about cats")
    assert isinstance(joke, Joke)
    (request,) = sent(emulator, "/generate")
    assert request["parameters"]["grammar"]["type"] == "json"
    assert set(request["parameters"]["grammar"]["value"]["properties"]) == {"setup", "punchline"}


def test_structured_output_that_does_not_validate_is_a_structured_output_error(
    emulator: TGIEmulator, model: ZephyrChatModel
) -> None:
    body = json.dumps([{"generated_text": '{"setup": "why?"}', "details": None}])
    emulator.set_faults(scripted_responses=[ScriptedResponse(body=body, content_type="application/json")])
    with pytest.raises(StructuredOutputError) as caught:
        model.with_structured_output(Joke).invoke("Tell me a joke")
    assert caught.value.raw_text == '{"setup": "why?"}'


def test_structured_output_with_include_raw_keeps_the_message(model: ZephyrChatModel) -> None:
    out = model.with_structured_output(Joke, include_raw=True).invoke("Tell me a joke")
    assert isinstance(out, dict)
    assert isinstance(out["raw"], AIMessage)
    assert isinstance(out["parsed"], Joke)
    assert out["parsing_error"] is None


def test_a_schema_tgi_would_refuse_is_refused_at_once(model: ZephyrChatModel) -> None:
    with pytest.raises(ConfigurationError, match="properties"):
        model.with_structured_output({"title": "anything", "type": "string"})


def test_retries_are_zephyr_tgis(emulator: TGIEmulator) -> None:
    model = ZephyrChatModel(base_url=emulator.url, max_retries=2, timeout=30)
    emulator.set_faults(scripted_responses=[ScriptedResponse(status=503, body="busy")] * 2)
    assert model.invoke("Hi").content
    assert len(sent(emulator, "/generate")) == 3


def test_server_errors_are_zephyr_tgi_errors(emulator: TGIEmulator, model: ZephyrChatModel) -> None:
    body = json.dumps({"error": "Input validation error: bad", "error_type": "validation"})
    emulator.set_faults(scripted_responses=[ScriptedResponse(status=422, body=body, content_type="application/json")])
    with pytest.raises(InputValidationError, match="bad"):
        model.invoke("Hi")
    assert len(sent(emulator, "/generate")) == 1  # 422 is never retried


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ([{"type": "image_url", "image_url": {"url": "http://x/y.png"}}], "reads text only"),
    ],
)
def test_content_zephyr_cannot_read_is_refused_before_sending(
    emulator: TGIEmulator, model: ZephyrChatModel, content: Any, match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match):
        model.invoke([HumanMessage(content=content)])
    assert emulator.stats.requests_by_route.get("/generate", 0) == 0


def test_another_model_name_or_an_unknown_option_is_refused(model: ZephyrChatModel) -> None:
    with pytest.raises(ConfigurationError, match="serves one model"):
        model.invoke("Hi", model="gpt-4")
    with pytest.raises(ConfigurationError, match="does not take"):
        model.invoke("Hi", frobnicate=True)


def test_no_url_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZEPHYR_TGI_URL", raising=False)
    with pytest.raises(ConfigurationError, match="ZEPHYR_TGI_URL"):
        ZephyrChatModel()
