"""Every emulator body validates against TGI's own OpenAPI schemas (docs/openapi.json at 3.3.6-dev0)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import jsonschema
import pytest

from zephyr_tgi.testing import TGIEmulator

OPENAPI = Path("/work/shared/reference/tgi-openapi.json")
CHAT = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}
TOOLS = {
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
}
pytestmark = pytest.mark.skipif(not OPENAPI.is_file(), reason="TGI's OpenAPI spec is not available")


def _to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 -> JSON Schema: `nullable: true` becomes a union with null."""
    if isinstance(node, list):
        return [_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _to_json_schema(value) for key, value in node.items() if key not in ("nullable", "discriminator")}
    if node.get("nullable") is True:
        if isinstance(converted.get("type"), str):
            converted["type"] = [converted["type"], "null"]
            if "enum" in converted:
                converted["enum"] = [*converted["enum"], None]
        else:
            converted = {"anyOf": [converted, {"type": "null"}]}
    return converted


@pytest.fixture(scope="module")
def components() -> dict[str, Any]:
    spec = json.loads(OPENAPI.read_text(encoding="utf-8"))
    converted: dict[str, Any] = _to_json_schema(spec["components"])
    return converted


def _check(components: dict[str, Any], name: str, instance: Any) -> None:
    schema = {"$ref": f"#/components/schemas/{name}", "components": components}
    jsonschema.validate(instance, schema)


@pytest.fixture(scope="module")
def tgi() -> Iterator[TGIEmulator]:
    with TGIEmulator(enable_prefill_logprobs=True) as emulator:
        yield emulator


def _events(response: httpx2.Response) -> list[Any]:
    return [
        json.loads(line[len("data: ") :]) for line in response.text.split("\n\n") if line and line != "data: [DONE]"
    ]


def test_schema_conversion_catches_a_bad_body(components: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        _check(components, "GenerateResponse", {"generated_text": None})


@pytest.mark.parametrize(
    "parameters",
    [
        {},
        {"details": True, "decoder_input_details": True, "top_n_tokens": 3, "seed": 3, "do_sample": True},
        {"details": True, "best_of": 2, "do_sample": True},
        {"details": True, "stop": ["the"], "max_new_tokens": 50},
    ],
    ids=["plain", "details_prefill_top_tokens", "best_of", "stop"],
)
def test_generate_response(http: httpx2.Client, components: dict[str, Any], parameters: dict[str, Any]) -> None:
    body = http.post("/generate", json={"inputs": "Hello", "parameters": parameters}).json()
    _check(components, "GenerateResponse", body)


def test_compat_generate_response(http: httpx2.Client, components: dict[str, Any]) -> None:
    body = http.post("/", json={"inputs": "Hello", "parameters": {"details": True}}).json()
    assert isinstance(body, list)
    for item in body:
        _check(components, "GenerateResponse", item)


@pytest.mark.parametrize("parameters", [{}, {"details": True, "top_n_tokens": 2}])
def test_generate_stream_events(http: httpx2.Client, components: dict[str, Any], parameters: dict[str, Any]) -> None:
    events = _events(http.post("/generate_stream", json={"inputs": "Hello", "parameters": parameters}))
    assert events
    for event in events:
        _check(components, "StreamResponse", event)


@pytest.mark.parametrize(
    "extra", [{}, {"logprobs": True, "top_logprobs": 2}, TOOLS], ids=["plain", "logprobs", "tool_calls"]
)
def test_chat_completion(http: httpx2.Client, components: dict[str, Any], extra: dict[str, Any]) -> None:
    _check(components, "ChatCompletion", http.post("/v1/chat/completions", json={**CHAT, **extra}).json())


@pytest.mark.parametrize(
    "extra",
    [{}, {"stream_options": {"include_usage": True}, "logprobs": True}, {**TOOLS, "logprobs": True}],
    ids=["plain", "usage_logprobs", "tool_calls"],
)
def test_chat_completion_chunks(http: httpx2.Client, components: dict[str, Any], extra: dict[str, Any]) -> None:
    chunks = _events(http.post("/v1/chat/completions", json={**CHAT, "stream": True, **extra}))
    assert chunks
    for chunk in chunks:
        _check(components, "ChatCompletionChunk", chunk)


def test_completions(http: httpx2.Client, components: dict[str, Any]) -> None:
    _check(components, "CompletionFinal", http.post("/v1/completions", json={"prompt": ["a", "b"]}).json())


def test_completion_chunks(http: httpx2.Client, components: dict[str, Any]) -> None:
    for chunk in _events(http.post("/v1/completions", json={"prompt": ["a", "b"], "max_tokens": 3, "stream": True})):
        _check(components, "CompletionFinal" if "usage" in chunk else "Chunk", chunk)


def test_info(http: httpx2.Client, components: dict[str, Any]) -> None:
    _check(components, "Info", http.get("/info").json())


def test_models(http: httpx2.Client, components: dict[str, Any]) -> None:
    for model in http.get("/v1/models").json()["data"]:
        _check(components, "ModelInfo", model)


def test_tokenize(http: httpx2.Client, components: dict[str, Any]) -> None:
    _check(components, "TokenizeResponse", http.post("/tokenize", json={"inputs": "Hello world"}).json())


def test_chat_tokenize(http: httpx2.Client, components: dict[str, Any]) -> None:
    _check(components, "ChatTokenizeResponse", http.post("/chat_tokenize", json=CHAT).json())


def test_error_bodies(http: httpx2.Client, tgi: TGIEmulator, components: dict[str, Any]) -> None:
    bodies = [http.post("/generate", json={"inputs": "x", "parameters": {"top_p": 1.0}}).json()]
    tgi.set_faults(overload_next=1)
    bodies.append(http.post("/generate", json={"inputs": "x"}).json())
    tgi.set_faults(stream_error_next=1)
    bodies.append(http.post("/generate", json={"inputs": "x"}).json())
    tgi.set_faults(stream_error_next=1)
    bodies.extend(event for event in _events(http.post("/generate_stream", json={"inputs": "x"})) if "error" in event)
    tgi.set_faults(unavailable_for=5.0)
    bodies.append(http.get("/health").json())
    assert len(bodies) == 5
    for body in bodies:
        _check(components, "ErrorResponse", body)


# Where the spec itself is wrong, TGI's serde types win (TGI.md §9); these tests pin the difference.


def test_the_spec_allows_stream_options_null_but_tgi_rejects_it(
    http: httpx2.Client, components: dict[str, Any]
) -> None:
    body = {**CHAT, "stream": True, "stream_options": None}
    _check(components, "ChatRequest", body)  # utoipa marks it nullable
    response = http.post("/v1/chat/completions", json=body)
    # ...but the field is a plain StreamOptions with a serde default, not an Option.
    assert response.status_code == 422
    assert "stream_options: invalid type: null, expected struct StreamOptions" in response.text


def test_the_spec_describes_logit_bias_as_a_map_but_types_it_as_a_list(
    http: httpx2.Client, components: dict[str, Any]
) -> None:
    schema = components["schemas"]["ChatRequest"]["properties"]["logit_bias"]
    assert "maps tokens" in schema["description"]
    assert schema["type"] == ["array", "null"]
    assert http.post("/v1/chat/completions", json={**CHAT, "logit_bias": {"1": 2.0}}).status_code == 422
