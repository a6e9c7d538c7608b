"""The client types tool calls: `ChatCompletion.tool_calls` and `ChatCompletionChunk.tool_calls`, sync and async."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.http.conftest import Twin
from zephyr_tgi import StructuredOutputError, ToolCall, ToolCallDelta, ToolCallFunction

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


async def test_a_completion_exposes_typed_tool_calls(twin: Twin) -> None:
    completion = await twin.call("chat_completion", "Weather in Paris?", tools=TOOLS)
    assert completion.tool_calls == (
        ToolCall(id="0", function=ToolCallFunction(name="get_weather", arguments='{"city":"example"}')),
    )
    assert completion.tool_calls[0].function.parsed_arguments() == {"city": "example"}
    assert completion.text == ""


async def test_a_stream_exposes_typed_tool_call_fragments(twin: Twin) -> None:
    chunks = await twin.stream("chat_completion", "Weather in Paris?", tools=TOOLS, stream=True)
    deltas = [delta for chunk in chunks for delta in chunk.tool_calls]
    assert all(isinstance(delta, ToolCallDelta) for delta in deltas)
    assert [delta.name for delta in deltas if delta.name] == ["get_weather"]
    assert json.loads("".join(delta.arguments for delta in deltas)) == {"city": "example"}


async def test_a_text_answer_has_no_tool_calls(twin: Twin) -> None:
    completion = await twin.call("chat_completion", "Weather in Paris?", tools=TOOLS, tool_choice="none")
    assert completion.tool_calls == ()
    assert completion.text


def test_arguments_that_are_not_json_raise_a_structured_output_error() -> None:
    function = ToolCallFunction(name="f", arguments='{"city": ')
    with pytest.raises(StructuredOutputError) as caught:
        function.parsed_arguments()
    assert caught.value.raw_text == '{"city": '


def test_arguments_sent_as_an_object_are_kept_as_json_text() -> None:
    assert ToolCallFunction.model_validate({"name": "f", "arguments": {"a": 1}}).arguments == '{"a": 1}'
