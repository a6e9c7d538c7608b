"""The emulator's tool-call stream parser is TGI's ChatState, checked on the tokens of TGI's own unit test."""

from __future__ import annotations

from zephyr_tgi.testing._tools import NO_TOOL, ToolStreamState, parse_tool_output, tool_call_text

# router/src/chat.rs test_chat_stream_tool_get_weather: the tokens Llama wrote under the tool grammar.
TGI_TOKENS = [
    '{"', "function", '":', ' {"', "_", "name", '":', ' "', "get", "_current", "_weather", '",',
    ' "', "location", '":', ' "', "San", " Francisco", ",", " CA", '",', ' "', "format", '":', ' "',
    "c", "elsius", '"}}',
]  # fmt: skip


def test_the_first_eleven_tokens_are_buffered_then_each_token_is_one_event() -> None:
    state = ToolStreamState()
    assert [state.push(token) for token in TGI_TOKENS[:11]] == [None] * 11
    events = [state.push(token) for token in TGI_TOKENS[11:]]
    assert all(isinstance(event, tuple) for event in events)
    names = [event[0] for event in events if isinstance(event, tuple)]
    assert names == ["get_current_weather"] + [None] * 16
    arguments = "".join(event[1] for event in events if isinstance(event, tuple))
    # The exact text TGI's test expects: "{" replaces the token that closed the name, one "}" is dropped.
    assert arguments == '{ "location": "San Francisco, CA", "format": "celsius"}'


def test_no_tool_is_recognised_as_soon_as_its_name_closes() -> None:
    state = ToolStreamState()
    tokens = ['{"', "function", '":', ' {"', "_", "name", '":', ' "', "no", "_tool", '"}}']
    assert [state.push(token) for token in tokens[:-1]] == [None] * 10
    assert state.push(tokens[-1]) == NO_TOOL


def test_parse_output_reads_the_name_and_keeps_the_arguments_in_order() -> None:
    text = '{"function": {"_name": "get_weather", "unit": "c", "city": "Paris"}}'
    assert parse_tool_output(text) == ("get_weather", '{"unit":"c","city":"Paris"}')
    assert parse_tool_output('{"function": {"_name": "no_tool"}}') is None


def test_the_stand_in_model_writes_spaced_json_as_llama_did() -> None:
    from zephyr_tgi.testing._tools import ToolSpec

    tool = ToolSpec("function", "f", None, {"type": "object", "properties": {"x": {"type": "integer"}}})
    assert tool_call_text([tool], after_tool_result=False) == '{"function": {"_name": "f", "x": 1}}'
