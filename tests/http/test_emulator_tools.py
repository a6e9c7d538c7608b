"""Tool calling on /v1/chat/completions answers as TGI's router does (server.rs chat_completions, chat.rs)."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import jsonschema
import pytest

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
TIME: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def _chat(http: httpx2.Client, **body: Any) -> httpx2.Response:
    return http.post("/v1/chat/completions", json={"messages": ASK, **body})


def _chunks(response: httpx2.Response) -> list[dict[str, Any]]:
    events = [event for event in response.content.decode().split("\n\n") if event]
    assert events[-1] == "data: [DONE]"
    return [json.loads(event[len("data: ") :]) for event in events[:-1]]


def test_a_tool_call_answer_has_tool_calls_and_no_content_key(http: httpx2.Client) -> None:
    body = _chat(http, tools=[WEATHER]).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"] == {
        "role": "assistant",
        "tool_calls": [
            {
                "id": "0",
                "type": "function",
                "function": {
                    "description": None,
                    "name": "get_weather",
                    "arguments": choice["message"]["tool_calls"][0]["function"]["arguments"],
                },
            }
        ],
    }


def test_the_arguments_are_a_json_string_that_validates_against_the_tools_parameters(http: httpx2.Client) -> None:
    call = _chat(http, tools=[WEATHER]).json()["choices"][0]["message"]["tool_calls"][0]
    arguments = json.loads(call["function"]["arguments"])
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])


def test_a_stream_carries_tool_call_deltas_that_join_into_valid_arguments(http: httpx2.Client) -> None:
    chunks = _chunks(_chat(http, tools=[WEATHER], stream=True))
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks]
    assert all(set(delta) == {"role", "tool_calls"} for delta in deltas)
    calls = [delta["tool_calls"][0] for delta in deltas]
    assert calls[0]["function"] == {"name": "get_weather", "arguments": "{"}
    assert all(call["function"]["name"] is None for call in calls[1:])
    assert {(call["index"], call["id"], call["type"]) for call in calls} == {(0, "0", "function")}
    arguments = json.loads("".join(call["function"]["arguments"] for call in calls))
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])
    # Like TGI, nothing is sent after the call is complete: no chunk carries a finish_reason.
    assert all(chunk["choices"][0]["finish_reason"] is None for chunk in chunks)


def test_a_tool_stream_with_include_usage_ends_with_the_usage_chunk(http: httpx2.Client) -> None:
    chunks = _chunks(_chat(http, tools=[WEATHER], stream=True, stream_options={"include_usage": True}))
    assert chunks[-1]["choices"] == []
    usage = chunks[-1]["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_tool_choice_none_answers_in_text(http: httpx2.Client) -> None:
    message = _chat(http, tools=[WEATHER], tool_choice="none").json()["choices"][0]["message"]
    assert set(message) == {"role", "content"}
    assert message["content"]


@pytest.mark.parametrize(
    "choice", ["get_time", {"type": "function", "function": {"name": "get_time"}}], ids=["string", "object"]
)
def test_a_named_tool_is_the_one_called(http: httpx2.Client, choice: object) -> None:
    call = _chat(http, tools=[WEATHER, TIME], tool_choice=choice).json()["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_time"
    assert json.loads(call["function"]["arguments"]) == {"zone": "example"}


def test_required_calls_the_first_tool(http: httpx2.Client) -> None:
    call = _chat(http, tools=[TIME, WEATHER], tool_choice="required").json()["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_time"


def test_an_unknown_tool_name_is_a_tool_error(http: httpx2.Client) -> None:
    response = _chat(http, tools=[WEATHER], tool_choice="get_stock")
    assert (response.status_code, response.json()) == (
        422,
        {"error": "Tool error: Tool with name get_stock not found", "error_type": "tool_error"},
    )


def test_the_tools_are_appended_to_the_last_message_as_tgi_does_for_a_template_without_tools(
    http: httpx2.Client,
) -> None:
    templated = http.post("/chat_tokenize", json={"messages": ASK, "tools": [WEATHER]}).json()["templated_text"]
    assert templated.startswith("<|user|>\nWhat is the weather in Paris?\n---\n[")
    assert '"name":"get_weather"' in templated
    assert '"name":"no_tool"' in templated  # auto adds TGI's no_tool function
    assert "Given the functions available" in templated
    assert templated.endswith("</s>\n<|assistant|>\n")


def _after_a_tool_result(call_id: str) -> list[dict[str, Any]]:
    call = {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    return [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": '{"temperature": 18}'},
    ]


def test_after_a_tool_result_auto_answers_in_text(http: httpx2.Client) -> None:
    messages = _after_a_tool_result("0")
    body = http.post("/v1/chat/completions", json={"messages": messages, "tools": [WEATHER]}).json()
    assert set(body["choices"][0]["message"]) == {"role", "content"}
    streamed = _chunks(
        http.post("/v1/chat/completions", json={"messages": messages, "tools": [WEATHER], "stream": True})
    )
    assert all("content" in chunk["choices"][0]["delta"] for chunk in streamed)
    assert streamed[-1]["choices"][0]["finish_reason"] == "stop"


def test_the_next_call_id_follows_the_largest_integer_id_so_far(http: httpx2.Client) -> None:
    messages = [*_after_a_tool_result("4"), {"role": "user", "content": "And in Rome?"}]
    body = http.post("/v1/chat/completions", json={"messages": messages, "tools": [WEATHER]}).json()
    assert body["choices"][0]["message"]["tool_calls"][0]["id"] == "5"


def test_tools_and_response_format_are_mutually_exclusive(http: httpx2.Client) -> None:
    response = _chat(http, tools=[WEATHER], response_format={"type": "json", "value": {"properties": {}}})
    assert response.json() == {
        "error": "Tool error: Grammar and tools are mutually exclusive",
        "error_type": "tool_error",
    }
