"""The HTTP layer: extractor rejections, auth, raw framing and keep-alive, as TGI/axum do them."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx2
import pytest

from zephyr_tgi.testing import TGIEmulator

KEY = "s3cret-Key"


@pytest.fixture(scope="module")
def secured() -> Iterator[TGIEmulator]:
    with TGIEmulator(api_key=KEY) as emulator:
        yield emulator


def _raw_exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes on a fresh connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_malformed_json_is_400_plain_text(http: httpx2.Client) -> None:
    response = http.post("/generate", content=b"{", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text == "Failed to parse the request body as JSON: EOF while parsing an object at line 1 column 1"


def test_a_wrong_shape_is_422_plain_text(http: httpx2.Client) -> None:
    response = http.post("/generate", json={"input": "typo"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text.startswith("Failed to deserialize the JSON body into the target type: ")
    assert "missing field `inputs`" in response.text


def test_a_missing_content_type_is_415(http: httpx2.Client) -> None:
    response = http.post("/generate", content=b'{"inputs":"x"}')
    assert response.status_code == 415
    assert response.text == "Expected request with `Content-Type: application/json`"


def test_streaming_routes_reject_bodies_before_streaming(http: httpx2.Client) -> None:
    response = http.post("/generate_stream", json={"parameters": {}})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("text/plain")


def test_a_body_over_the_payload_limit_is_413(http: httpx2.Client) -> None:
    response = http.post("/generate", content=b"x" * 2_000_001, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.text == "Failed to buffer the request body: length limit exceeded"


def test_a_malformed_request_line_gets_400_and_a_close(tgi: TGIEmulator) -> None:
    assert _raw_exchange(tgi.port, b"NOT HTTP\r\n\r\n").startswith(b"HTTP/1.1 400 ")


def test_sse_is_chunked_with_one_event_per_chunk_and_a_terminating_chunk(tgi: TGIEmulator) -> None:
    body = json.dumps({"inputs": "Hello", "parameters": {"max_new_tokens": 2}}).encode()
    raw = _raw_exchange(
        tgi.port,
        b"POST /generate_stream HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body),
    )
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    chunks = []
    while payload:
        size_line, _, payload = payload.partition(b"\r\n")
        size = int(size_line, 16)
        chunks.append(payload[:size])
        assert payload[size : size + 2] == b"\r\n"
        payload = payload[size + 2 :]
    assert chunks[-1] == b""
    events = chunks[:-1]
    assert len(events) == 2
    assert all(chunk.startswith(b"data: {") and chunk.endswith(b"}\n\n") for chunk in events)


def test_keep_alive_serves_sequential_requests_on_one_socket(tgi: TGIEmulator) -> None:
    body = b'{"inputs":"x","parameters":{"max_new_tokens":1}}'
    request = (
        b"POST /generate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
        % (
            len(body),
            body,
        )
    )
    with socket.create_connection(("127.0.0.1", tgi.port), timeout=5) as sock:
        for _ in range(3):
            sock.sendall(request)
            response = b""
            while b"generated_text" not in response or not response.endswith(b"}"):
                response += sock.recv(65536)
            assert response.startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize(
    "path", ["/generate", "/generate_stream", "/", "/v1/chat/completions", "/v1/completions", "/tokenize"]
)
def test_protected_routes_answer_401_with_an_empty_body(secured: TGIEmulator, path: str) -> None:
    response = httpx2.post(f"{secured.url}{path}", json={"inputs": "x"}, trust_env=False)
    assert (response.status_code, response.content) == (401, b"")


def test_a_wrong_key_is_401(secured: TGIEmulator) -> None:
    response = httpx2.post(
        f"{secured.url}/generate", json={"inputs": "x"}, headers={"authorization": "Bearer nope"}, trust_env=False
    )
    assert response.status_code == 401


@pytest.mark.parametrize("header", [f"Bearer {KEY}", f"bearer {KEY.lower()}", f"BEARER {KEY.upper()}"])
def test_the_key_is_compared_case_insensitively(secured: TGIEmulator, header: str) -> None:
    response = httpx2.post(
        f"{secured.url}/generate",
        json={"inputs": "x", "parameters": {"max_new_tokens": 1}},
        headers={"authorization": header},
        trust_env=False,
    )
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/health", "/info", "/metrics", "/v1/models", "/", "/__emulator__/stats"])
def test_info_and_admin_routes_stay_open(secured: TGIEmulator, path: str) -> None:
    assert httpx2.get(f"{secured.url}{path}", trust_env=False).status_code == 200


def test_chat_tokenize_is_an_open_info_route_like_in_tgi(secured: TGIEmulator) -> None:
    response = httpx2.post(
        f"{secured.url}/chat_tokenize", json={"messages": [{"role": "user", "content": "x"}]}, trust_env=False
    )
    assert response.status_code == 200


def test_recorded_headers_show_whether_authorization_was_sent(secured: TGIEmulator) -> None:
    secured.reset()
    httpx2.post(f"{secured.url}/generate", json={"inputs": "x"}, trust_env=False)
    httpx2.post(
        f"{secured.url}/generate",
        json={"inputs": "x", "parameters": {"max_new_tokens": 1}},
        headers={"Authorization": f"Bearer {KEY}"},
        trust_env=False,
    )
    first, second = secured.stats.requests
    assert "authorization" not in first.headers
    assert second.headers["authorization"] == f"Bearer {KEY}"
    assert second.json == {"inputs": "x", "parameters": {"max_new_tokens": 1}}
