"""The emulator answers with the bytes TGI 3.3.7 sends, point by point as TGI.md §9 reads them from TGI's source."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx2
import pytest

from zephyr_tgi.testing import TGIEmulator

CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
CORS = {
    "access-control-allow-origin": "*",
    "vary": "origin, access-control-request-method, access-control-request-headers",
}


# --- SSE framing: axum 0.7.9 writes `data: ` with one space -------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/generate_stream", {"inputs": "x", "parameters": {"max_new_tokens": 3}}),
        ("/", {"inputs": "x", "parameters": {"max_new_tokens": 3}, "stream": True}),
        ("/v1/chat/completions", {**CHAT, "stream": True}),
        ("/v1/completions", {"prompt": "x", "max_tokens": 3, "stream": True}),
    ],
)
def test_every_sse_event_is_data_space_json(http: httpx2.Client, path: str, body: dict[str, object]) -> None:
    events = [event for event in http.post(path, json=body).content.split(b"\n\n") if event]
    assert events
    assert all(event.startswith(b"data: {") or event == b"data: [DONE]" for event in events)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_openai_streams_end_with_data_space_done(http: httpx2.Client, path: str) -> None:
    body = {**CHAT, "stream": True} if "chat" in path else {"prompt": "x", "max_tokens": 2, "stream": True}
    assert http.post(path, json=body).content.endswith(b"\n\ndata: [DONE]\n\n")


def test_in_band_errors_use_the_same_framing(http: httpx2.Client) -> None:
    body = http.post("/generate_stream", json={"inputs": "", "parameters": {}}).content
    assert body == b'data: {"error":"Input validation error: `inputs` cannot be empty","error_type":"validation"}\n\n'


# --- the HTTP layer: HEAD, Allow, CORS ------------------------------------------------------------


@pytest.mark.parametrize("path", ["/info", "/health", "/v1/models", "/metrics", "/"])
def test_head_is_answered_like_get_without_a_body(tgi: TGIEmulator, path: str) -> None:
    with httpx2.Client(base_url=tgi.url) as http:
        get = http.get(path)
        head = http.head(path)
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(get.content))
    assert head.headers.get("content-type") == get.headers.get("content-type")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/info", "GET,HEAD"),
        ("PUT", "/health", "GET,HEAD"),
        ("GET", "/generate", "POST"),
        ("HEAD", "/generate", "POST"),
        ("DELETE", "/", "GET,HEAD,POST"),
    ],
)
def test_a_wrong_method_is_405_with_axums_allow_header(http: httpx2.Client, method: str, path: str, allow: str) -> None:
    response = http.request(method, path)
    assert (response.status_code, response.content, response.headers["allow"]) == (405, b"", allow)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/info", None),
        ("POST", "/generate", {"inputs": "x", "parameters": {"max_new_tokens": 2}}),
        ("POST", "/generate", {"inputs": ""}),
        ("POST", "/v1/chat/completions", {**CHAT, "stream": True}),
        ("GET", "/nope", None),
        ("POST", "/info", None),
    ],
)
def test_every_response_carries_the_cors_headers(
    http: httpx2.Client, method: str, path: str, body: dict[str, object] | None
) -> None:
    headers = http.request(method, path, json=body).headers
    assert {name: headers[name] for name in CORS} == CORS


def test_an_options_preflight_gets_200_and_the_allowed_methods(http: httpx2.Client) -> None:
    preflight = http.options(
        "/v1/chat/completions",
        headers={"origin": "https://app.example", "access-control-request-method": "POST"},
    )
    assert (preflight.status_code, preflight.content) == (200, b"")
    assert preflight.headers["access-control-allow-methods"] == "GET,POST"
    assert preflight.headers["access-control-allow-headers"] == "content-type"
    assert preflight.headers["access-control-allow-origin"] == "*"


def test_the_401_of_a_protected_route_also_carries_cors_headers() -> None:
    with TGIEmulator(api_key="k") as tgi, httpx2.Client(base_url=tgi.url) as http:
        response = http.post("/generate", json={"inputs": "x"})
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == "*"


# --- /tokenize ------------------------------------------------------------------------------------


def test_tokenize_offsets_are_utf8_byte_offsets(http: httpx2.Client) -> None:
    text = "Grüße, 東京!"
    tokens = http.post("/tokenize", json={"inputs": text}).json()
    encoded = text.encode("utf-8")
    assert tokens[0] == {"id": 1, "text": "", "start": 0, "stop": 0}
    for token in tokens[1:]:
        assert encoded[token["start"] : token["stop"]].decode("utf-8") == token["text"]
    assert tokens[-1]["stop"] == len(encoded) > len(text)


def test_tokenize_ignores_truncate(http: httpx2.Client) -> None:
    whole = http.post("/tokenize", json={"inputs": "one two three four"}).json()
    truncated = http.post("/tokenize", json={"inputs": "one two three four", "parameters": {"truncate": 2}}).json()
    assert truncated == whole
    assert len(whole) == 5


# --- identity -------------------------------------------------------------------------------------


def test_completions_name_the_served_model_and_send_no_compute_time(http: httpx2.Client) -> None:
    response = http.post("/v1/completions", json={"prompt": "x", "max_tokens": 2, "model": "my-alias"})
    assert response.json()["model"] == "TheBloke/zephyr-7B-alpha-GPTQ"
    assert "x-compute-time" not in response.headers
    assert response.headers["x-compute-type"] == "1-nvidia-a10g"
    stream = http.post("/v1/completions", json={"prompt": "x", "max_tokens": 2, "model": "my-alias", "stream": True})
    first = json.loads(stream.content.split(b"\n\n")[0][len(b"data: ") :])
    assert first["model"] == "TheBloke/zephyr-7B-alpha-GPTQ"


def test_chat_echoes_the_requested_model_with_an_official_images_fingerprint(http: httpx2.Client) -> None:
    body = http.post("/v1/chat/completions", json={**CHAT, "model": "my-alias"}).json()
    assert (body["model"], body["system_fingerprint"]) == ("my-alias", "3.3.6-dev0-sha-dfb3fbe")


def test_info_has_an_official_images_docker_label(http: httpx2.Client) -> None:
    info = http.get("/info").json()
    assert info["docker_label"] == f"sha-{info['sha'][:7]}"


# --- request types as TGI's serde sees them -------------------------------------------------------


def _post_text(http: httpx2.Client, path: str, text: str) -> httpx2.Response:
    return http.post(path, content=text.encode(), headers={"content-type": "application/json"})


def test_logit_bias_as_a_map_is_a_422_with_serdes_text(http: httpx2.Client) -> None:
    text = '{"messages":[{"role":"user","content":"Hi"}],"logit_bias":{"50256":-100}}'
    response = _post_text(http, "/v1/chat/completions", text)
    assert response.status_code == 422
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text == (
        "Failed to deserialize the JSON body into the target type: "
        "logit_bias: invalid type: map, expected a sequence at line 1 column 59"
    )


def test_logit_bias_as_a_list_is_accepted(http: httpx2.Client) -> None:
    assert http.post("/v1/chat/completions", json={**CHAT, "logit_bias": [0.5, -1.0]}).status_code == 200


def test_stream_options_null_is_a_422_but_empty_is_accepted(http: httpx2.Client) -> None:
    rejected = http.post("/v1/chat/completions", json={**CHAT, "stream": True, "stream_options": None})
    assert rejected.status_code == 422
    assert "stream_options: invalid type: null, expected struct StreamOptions" in rejected.text
    accepted = http.post("/v1/chat/completions", json={**CHAT, "stream": True, "stream_options": {}})
    assert accepted.status_code == 200
    assert accepted.content.endswith(b"data: [DONE]\n\n")


def test_an_assistant_message_with_null_content_and_tool_calls_is_accepted(http: httpx2.Client) -> None:
    call = {"id": "0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "0", "content": "18 C"},
        {"role": "user", "content": "Thanks"},
    ]
    response = http.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 3})
    assert response.status_code == 200
    templated = http.post("/chat_tokenize", json={"messages": messages}).json()["templated_text"]
    # TGI renders a tool-call message's content as its calls in JSON, `arguments` as a string.
    rendered = '[{"id":"0","type":"function","function":{"description":null,"name":"get_weather","arguments":'
    assert rendered in templated


def test_a_message_that_is_neither_content_nor_tool_calls_names_the_untagged_enum(http: httpx2.Client) -> None:
    text = '{"messages":[{"role":"user","content":5}]}'
    response = _post_text(http, "/v1/chat/completions", text)
    assert (response.status_code, response.text) == (
        422,
        "Failed to deserialize the JSON body into the target type: messages[0]: data did not match any variant "
        "of untagged enum MessageBody at line 1 column 40",
    )


@pytest.mark.parametrize(
    ("path", "text", "error"),
    [
        ("/generate", '{"inputs":"a","inputs":"b"}', "duplicate field `inputs` at line 1 column 22"),
        (
            "/generate",
            '{"inputs":"a","parameters":{"top_k":2,"top_k":3}}',
            "parameters: duplicate field `top_k` at line 1 column 45",
        ),
        (
            "/v1/chat/completions",
            '{"messages":[],"stream":false,"stream":true}',
            "duplicate field `stream` at line 1 column 38",
        ),
    ],
)
def test_a_duplicate_field_is_a_422(http: httpx2.Client, path: str, text: str, error: str) -> None:
    response = _post_text(http, path, text)
    assert (response.status_code, response.text) == (
        422,
        "Failed to deserialize the JSON body into the target type: " + error,
    )


def test_a_repeated_unknown_key_is_ignored_like_any_unknown_key(http: httpx2.Client) -> None:
    assert _post_text(http, "/generate", '{"inputs":"a","extra":1,"extra":2}').status_code == 200


def test_parameters_as_an_empty_list_are_the_defaults(http: httpx2.Client) -> None:
    response = http.post("/generate", json={"inputs": "Hi", "parameters": []})
    assert response.status_code == 200
    as_object = http.post("/generate", json={"inputs": "Hi", "parameters": {}}).json()
    assert response.json() == as_object


@pytest.mark.parametrize("trailer", [" garbage", "}", '{"inputs":""}', "\n\n\x00"])
def test_trailing_bytes_after_the_body_are_ignored(http: httpx2.Client, trailer: str) -> None:
    response = _post_text(http, "/generate", '{"inputs":"Hi","parameters":{"max_new_tokens":2}}' + trailer)
    assert response.status_code == 200
    assert "generated_text" in response.json()


def test_max_completion_tokens_is_an_alias_of_max_tokens(http: httpx2.Client) -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_completion_tokens": 2}
    assert http.post("/v1/chat/completions", json=body).json()["usage"]["completion_tokens"] == 2


# --- the budget rule of TGI >= 3.1.1 --------------------------------------------------------------


def _prompt_of(tokens: int) -> str:
    # BOS, "ask", then one builtin token per " w".
    return "ask" + " w" * (tokens - 2)


@pytest.fixture(scope="module")
def window() -> Iterator[TGIEmulator]:
    # A scripted reply longer than any window, so only the window can stop it.
    with TGIEmulator(replies={_prompt_of(3000): " ".join(["word"] * 3000)}) as tgi:
        yield tgi


def test_a_large_max_new_tokens_is_accepted_when_one_chunk_fits(window: TGIEmulator) -> None:
    with httpx2.Client(base_url=window.url, timeout=30) as http:
        response = http.post(
            "/generate", json={"inputs": _prompt_of(3000), "parameters": {"max_new_tokens": 2000, "details": True}}
        )
    assert response.status_code == 200
    details = response.json()["details"]
    # 3000 + min(2000, 1024) <= 4096 passes; generation then stops when the window is full.
    assert (details["generated_tokens"], details["finish_reason"]) == (4096 - 3000, "length")


def test_max_new_tokens_beyond_the_window_on_a_short_prompt_is_accepted(window: TGIEmulator) -> None:
    with httpx2.Client(base_url=window.url, timeout=30) as http:
        response = http.post("/generate", json={"inputs": "Hi", "parameters": {"max_new_tokens": 5000}})
    assert response.status_code == 200


def test_the_rejection_reports_the_chunk_size(window: TGIEmulator) -> None:
    with httpx2.Client(base_url=window.url, timeout=30) as http:
        response = http.post("/generate", json={"inputs": _prompt_of(3500), "parameters": {"max_new_tokens": 2000}})
    assert (response.status_code, response.json()) == (
        422,
        {
            "error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. "
            "Given: 3500 `inputs` tokens and 1024 `max_new_tokens`",
            "error_type": "validation",
        },
    )


# --- loading: the port refuses connections, no invented 503 --------------------------------------


def test_while_loading_the_port_refuses_connections() -> None:
    from zephyr_tgi.testing import Faults

    with TGIEmulator(faults=Faults(refuse_connections_for=30.0)) as tgi:
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", tgi.port), timeout=2):
            pass
        assert not tgi.listening
