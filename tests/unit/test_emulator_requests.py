"""Request decoding mirrors axum's Json extractor and serde's messages."""

from __future__ import annotations

import json

import pytest

from zephyr_tgi.testing._requests import (
    BodyError,
    parse_chat_request,
    parse_completion_request,
    parse_generate_request,
    read_json_body,
)

JSON = {"content-type": "application/json"}


def _syntax_error(body: bytes) -> str:
    with pytest.raises(BodyError) as caught:
        read_json_body(JSON, body)
    assert caught.value.status == 400
    return caught.value.text


def _shape_error(text: str) -> str:
    with pytest.raises(BodyError) as caught:
        parse_generate_request(json.loads(text), text=text)
    assert caught.value.status == 422
    return caught.value.text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "EOF while parsing a value at line 1 column 0"),
        (b"{", "EOF while parsing an object at line 1 column 1"),
        (b'{"a":1,}', "trailing comma at line 1 column 8"),
        (b'{"a" 1}', "expected `:` at line 1 column 6"),
        (b"[1,2", "EOF while parsing a list at line 1 column 4"),
        (b'{"x":NaN}', "expected value at line 1 column 6"),
        (b'{\n  "x": tru\n}', "expected ident at line 2 column 11"),
        (b"\xff", "invalid unicode code point at line 1 column 0"),
    ],
)
def test_malformed_json_is_a_400_with_serde_wording(body: bytes, message: str) -> None:
    assert _syntax_error(body) == f"Failed to parse the request body as JSON: {message}"


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx"])
def test_a_non_json_content_type_is_a_415(content_type: str | None) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    with pytest.raises(BodyError) as caught:
        read_json_body(headers, b"{}")
    assert (caught.value.status, caught.value.text) == (415, "Expected request with `Content-Type: application/json`")


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/vnd.api+json", "APPLICATION/JSON"]
)
def test_json_content_types_are_accepted(content_type: str) -> None:
    assert read_json_body({"content-type": content_type}, b"{}") == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"x":1}', "missing field `inputs` at line 1 column 7"),
        ('{"inputs":5}', "inputs: invalid type: integer `5`, expected a string at line 1 column 11"),
        ('{"inputs":null}', "inputs: invalid type: null, expected a string at line 1 column 14"),
        (
            '{"inputs":"hi","parameters":{"max_new_tokens":-1}}',
            "parameters.max_new_tokens: invalid value: integer `-1`, expected u32 at line 1 column 48",
        ),
        (
            '{"inputs":"hi","parameters":{"max_new_tokens":1.5}}',
            "parameters.max_new_tokens: invalid type: floating point `1.5`, expected u32 at line 1 column 49",
        ),
        (
            '{"inputs":"hi","parameters":{"temperature":"hot"}}',
            'parameters.temperature: invalid type: string "hot", expected f32 at line 1 column 48',
        ),
        (
            '{"inputs":"hi","parameters":{"details":1}}',
            "parameters.details: invalid type: integer `1`, expected a boolean at line 1 column 40",
        ),
        (
            '{"inputs":"hi","parameters":{"stop":"x"}}',
            'parameters.stop: invalid type: string "x", expected a sequence at line 1 column 39',
        ),
        (
            '{"inputs":"hi","parameters":{"stop":[1]}}',
            "parameters.stop[0]: invalid type: integer `1`, expected a string at line 1 column 38",
        ),
        (
            '{"inputs":"hi","parameters":null}',
            "parameters: invalid type: null, expected struct GenerateParameters at line 1 column 32",
        ),
        ("[1]", "invalid type: sequence, expected struct GenerateRequest at line 1 column 1"),
        (
            '{"inputs":"hi","parameters":{"grammar":{"type":"yaml","value":1}}}',
            "parameters.grammar.type: unknown variant `yaml`, expected one of `json`, `json_object`, `regex`, "
            "`json_schema` at line 1 column 53",
        ),
        (
            '{"inputs":"hi","parameters":{"grammar":{"value":1}}}',
            "parameters.grammar: missing field `type` at line 1 column 50",
        ),
        (
            '{"inputs":"hi","parameters":{"top_k":3000000000}}',
            "parameters.top_k: invalid value: integer `3000000000`, expected i32 at line 1 column 47",
        ),
    ],
)
def test_a_wrong_shape_is_a_422_with_the_serde_path(text: str, message: str) -> None:
    assert _shape_error(text) == f"Failed to deserialize the JSON body into the target type: {message}"


def test_unknown_fields_are_ignored() -> None:
    parsed = parse_generate_request({"inputs": "hi", "surprise": 1, "parameters": {"nope": True}})
    assert parsed.inputs == "hi"


def test_omitting_parameters_turns_sampling_on() -> None:
    assert parse_generate_request({"inputs": "hi"}).parameters.do_sample is True
    assert parse_generate_request({"inputs": "hi", "parameters": {}}).parameters.do_sample is False


def test_stream_is_only_read_on_the_compat_route() -> None:
    assert parse_generate_request({"inputs": "hi", "stream": True}, compat=True).stream is True
    assert parse_generate_request({"inputs": "hi", "stream": True}).stream is False


def test_json_object_is_an_alias_of_the_json_grammar() -> None:
    parsed = parse_generate_request({"inputs": "hi", "parameters": {"grammar": {"type": "json_object", "value": {}}}})
    assert parsed.parameters.grammar is not None
    assert parsed.parameters.grammar.kind == "json"


def test_chat_content_chunks_are_joined_and_images_become_markdown() -> None:
    content = [{"type": "text", "text": "Look: "}, {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]
    chat = parse_chat_request({"messages": [{"role": "user", "content": content}]})
    assert chat.messages == [("user", "Look: ![](http://x/y.png)")]


def test_chat_requires_messages() -> None:
    with pytest.raises(BodyError, match="missing field `messages`"):
        parse_chat_request({"model": "tgi"})


def test_chat_stream_options_default_include_usage_but_null_is_rejected() -> None:
    # StreamOptions is a plain struct whose field has a serde default (TGI.md §9).
    assert parse_chat_request({"messages": [], "stream_options": {}}).include_usage is False
    with pytest.raises(BodyError, match="stream_options: invalid type: null, expected struct StreamOptions"):
        parse_chat_request({"messages": [], "stream_options": None})


def test_completion_prompt_may_be_a_string_or_a_list() -> None:
    assert parse_completion_request({"prompt": "a"}).prompts == ["a"]
    assert parse_completion_request({"prompt": ["a", "b"]}).prompts == ["a", "b"]


def test_completion_rejects_an_empty_prompt_list() -> None:
    with pytest.raises(BodyError, match="Empty array detected"):
        parse_completion_request({"prompt": []})
