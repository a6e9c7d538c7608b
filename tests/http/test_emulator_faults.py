"""Each fault knob, observed over real HTTP."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx2
import pytest

from zephyr_tgi.testing import Faults, ScriptedResponse, TGIEmulator, _core

CHAT: dict[str, Any] = {"messages": [{"role": "user", "content": "Hi"}]}


def _data_lines(body: bytes) -> list[str]:
    return [line for line in body.decode().split("\n\n") if line]


def test_overload_next_answers_429_then_recovers(http: httpx2.Client, tgi: TGIEmulator) -> None:
    tgi.set_faults(overload_next=2)
    statuses = [http.post("/generate", json={"inputs": "x"}).status_code for _ in range(3)]
    assert statuses == [429, 429, 200]
    assert tgi.stats.overloaded_total == 2


def test_overloaded_body_and_retry_after(http: httpx2.Client, tgi: TGIEmulator) -> None:
    tgi.set_faults(overload_next=1, retry_after="3")
    response = http.post("/generate", json={"inputs": "x"})
    assert response.json() == {"error": "Model is overloaded", "error_type": "overloaded"}
    assert response.headers["retry-after"] == "3"


def test_overload_is_in_band_on_native_streams(http: httpx2.Client, tgi: TGIEmulator) -> None:
    tgi.set_faults(overload_next=1)
    response = http.post("/generate_stream", json={"inputs": "x"})
    assert response.status_code == 200
    assert response.content == b'data: {"error":"Model is overloaded","error_type":"overloaded"}\n\n'


def test_overload_is_in_band_on_the_compat_stream(http: httpx2.Client, tgi: TGIEmulator) -> None:
    tgi.set_faults(overload_next=1)
    response = http.post("/", json={"inputs": "x", "stream": True})
    assert response.content == b'data: {"error":"Model is overloaded","error_type":"overloaded"}\n\n'


def test_overload_on_chat_streams_uses_the_openai_shape_then_done(http: httpx2.Client, tgi: TGIEmulator) -> None:
    tgi.set_faults(overload_next=1)
    response = http.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.content == (
        b'data: {"error":{"message":"Model is overloaded","http_status_code":422}}\n\ndata: [DONE]\n\n'
    )


def test_overload_on_non_streaming_chat_is_429(http: httpx2.Client, tgi: TGIEmulator) -> None:
    tgi.set_faults(overload_next=1)
    assert http.post("/v1/chat/completions", json=CHAT).status_code == 429


def test_unavailable_for_fails_the_health_check_only(http: httpx2.Client, tgi: TGIEmulator) -> None:
    tgi.set_faults(unavailable_for=0.3)
    health = http.get("/health")
    assert (health.status_code, health.json()) == (503, {"error": "unhealthy", "error_type": "healthcheck"})
    # TGI never answers 503 on a generation route: a failing health check leaves generation running.
    assert http.post("/generate", json={"inputs": "x"}).status_code == 200
    assert http.get("/info").status_code == 200
    deadline = time.monotonic() + 5
    while http.get("/health").status_code != 200:
        assert time.monotonic() < deadline


def test_proxy_unavailable_for_answers_503_with_retry_after_on_every_route(
    http: httpx2.Client, tgi: TGIEmulator
) -> None:
    tgi.set_faults(proxy_unavailable_for=0.3, retry_after="2")
    generate = http.post("/generate", json={"inputs": "x"})
    assert (generate.status_code, generate.text, generate.headers["retry-after"]) == (
        503,
        "503 Service Unavailable",
        "2",
    )
    assert http.get("/health").status_code == 503
    deadline = time.monotonic() + 5
    while http.post("/generate", json={"inputs": "x"}).status_code != 200:
        assert time.monotonic() < deadline


def test_the_proxy_fault_sends_retry_after_1_by_default(http: httpx2.Client, tgi: TGIEmulator) -> None:
    tgi.set_faults(proxy_unavailable_for=5.0)
    assert http.post("/v1/chat/completions", json=CHAT).headers["retry-after"] == "1"


def test_assigning_unavailable_for_directly_also_starts_a_window(http: httpx2.Client, tgi: TGIEmulator) -> None:
    tgi.faults.unavailable_for = 5.0
    assert http.get("/health").status_code == 503
    tgi.faults.unavailable_for = 0.0
    assert http.get("/health").status_code == 200


def test_drop_before_first_byte_resets_the_connection(http: httpx2.Client, tgi: TGIEmulator) -> None:
    tgi.set_faults(drop_before_first_byte_next=1)
    with pytest.raises((httpx2.ReadError, httpx2.RemoteProtocolError)):
        http.post("/generate", json={"inputs": "x"})
    assert http.post("/generate", json={"inputs": "x"}).status_code == 200
    assert tgi.stats.requests_by_route["/generate"] == 2


def test_drop_mid_stream_sends_some_tokens_then_resets(http: httpx2.Client, tgi: TGIEmulator) -> None:
    tgi.set_faults(drop_mid_stream_next=1, drop_after_tokens=3)
    received: list[str] = []
    with (
        pytest.raises((httpx2.ReadError, httpx2.RemoteProtocolError)),
        http.stream("POST", "/generate_stream", json={"inputs": "x"}) as response,
    ):
        received.extend(line for line in response.iter_lines() if line)
    assert len(received) == 3
    assert all(json.loads(line[len("data: ") :])["generated_text"] is None for line in received)


def test_stream_error_after_tokens_is_a_native_in_band_error(http: httpx2.Client, tgi: TGIEmulator) -> None:
    tgi.set_faults(stream_error_next=1, stream_error_after_tokens=2)
    lines = _data_lines(http.post("/generate_stream", json={"inputs": "x"}).content)
    assert len(lines) == 3
    assert json.loads(lines[-1][len("data: ") :]) == {
        "error": "Request failed during generation: CUDA out of memory",
        "error_type": "generation",
    }


def test_stream_error_on_chat_streams_is_openai_shaped_then_done(http: httpx2.Client, tgi: TGIEmulator) -> None:
    tgi.set_faults(stream_error_next=1, stream_error_after_tokens=1, stream_error_type="incomplete_generation")
    lines = _data_lines(http.post("/v1/chat/completions", json={**CHAT, "stream": True}).content)
    assert lines[-2:] == [
        'data: {"error":{"message":"Incomplete generation","http_status_code":422}}',
        "data: [DONE]",
    ]


@pytest.mark.parametrize(
    ("error_type", "status", "message"),
    [
        ("generation", 424, "Request failed during generation: CUDA out of memory"),
        ("incomplete_generation", 500, "Incomplete generation"),
        ("overloaded", 429, "Model is overloaded"),
        ("validation", 422, "Input validation error: `inputs` cannot be empty"),
    ],
)
def test_stream_error_applies_to_non_streaming_requests_as_http_errors(
    http: httpx2.Client, tgi: TGIEmulator, error_type: str, status: int, message: str
) -> None:
    tgi.set_faults(stream_error_next=1, stream_error_type=error_type)
    response = http.post("/generate", json={"inputs": "x"})
    assert (response.status_code, response.json()) == (status, {"error": message, "error_type": error_type})
    assert http.post("/generate", json={"inputs": "x"}).status_code == 200


def test_streams_only_stream_errors_pass_non_streaming_requests_by(http: httpx2.Client, tgi: TGIEmulator) -> None:
    tgi.set_faults(stream_error_next=1, stream_error_after_tokens=1, stream_error_streams_only=True)
    assert http.post("/generate", json={"inputs": "x"}).status_code == 200
    assert tgi.faults.stream_error_next == 1
    lines = _data_lines(http.post("/generate_stream", json={"inputs": "x"}).content)
    assert json.loads(lines[-1][len("data: ") :])["error_type"] == "generation"
    assert len(lines) == 2
    assert tgi.faults.stream_error_next == 0


@pytest.mark.parametrize(
    ("scripted", "content_type"),
    [
        (ScriptedResponse(status=422, body="Failed to deserialize", content_type="text/plain"), "text/plain"),
        (ScriptedResponse(status=401, body=b""), None),
        (ScriptedResponse(status=502, body="<html>Bad Gateway</html>", content_type="text/html"), "text/html"),
    ],
)
def test_scripted_responses_are_sent_verbatim_in_order(
    http: httpx2.Client, tgi: TGIEmulator, scripted: ScriptedResponse, content_type: str | None
) -> None:
    tgi.set_faults(scripted_responses=[scripted, ScriptedResponse(status=503, headers={"retry-after": "9"})])
    first = http.post("/generate", json={"inputs": "x"})
    second = http.post("/generate_stream", json={"inputs": "x"})
    third = http.post("/generate", json={"inputs": "x"})
    body = scripted.body.encode() if isinstance(scripted.body, str) else scripted.body
    assert (first.status_code, first.content, first.headers.get("content-type")) == (
        scripted.status,
        body,
        content_type,
    )
    assert (second.status_code, second.headers["retry-after"]) == (503, "9")
    assert third.status_code == 200


def test_first_token_latency_delays_the_first_event(tgi: TGIEmulator, http: httpx2.Client) -> None:
    tgi.set_faults(first_token_latency=0.3)
    started = time.monotonic()
    http.post("/generate", json={"inputs": "x", "parameters": {"max_new_tokens": 2}})
    assert time.monotonic() - started >= 0.3


def test_fault_token_latency_overrides_the_constructor_value(tgi: TGIEmulator, http: httpx2.Client) -> None:
    tgi.set_faults(token_latency=0.05)
    started = time.monotonic()
    with http.stream("POST", "/generate_stream", json={"inputs": "x", "parameters": {"max_new_tokens": 4}}) as r:
        arrivals = [time.monotonic() - started for line in r.iter_lines() if line]
    assert len(arrivals) == 4
    assert arrivals[-1] >= 0.2


def test_refuse_connections_then_listen_on_the_same_port() -> None:
    with TGIEmulator(faults=Faults(refuse_connections_for=0.4)) as tgi:
        assert not tgi.listening
        port = tgi.port
        assert port != 0
        with pytest.raises(httpx2.ConnectError):
            httpx2.get(f"{tgi.url}/health", trust_env=False)
        deadline = time.monotonic() + 5
        while not tgi.listening:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert httpx2.get(f"{tgi.url}/health", trust_env=False).status_code == 200
        assert tgi.port == port


def test_admin_routes_change_faults_and_reset(http: httpx2.Client, tgi: TGIEmulator) -> None:
    response = http.post(
        "/__emulator__/faults",
        json={
            "overload_next": 1,
            "scripted_responses": [{"status": 418, "body": "teapot", "content_type": "text/plain"}],
        },
    )
    assert response.status_code == 200
    assert response.json()["overload_next"] == 1
    assert tgi.faults.overload_next == 1
    assert http.post("/generate", json={"inputs": "x"}).status_code == 418
    assert http.post("/generate", json={"inputs": "x"}).status_code == 429
    stats = http.get("/__emulator__/stats").json()
    assert stats["requests_by_route"] == {"/generate": 2}
    assert stats["requests"][0]["json"] == {"inputs": "x"}
    assert http.post("/__emulator__/reset").status_code == 200
    assert http.get("/__emulator__/stats").json()["requests_total"] == 0


def test_admin_faults_rejects_unknown_knobs(http: httpx2.Client) -> None:
    response = http.post("/__emulator__/faults", json={"explode": True})
    assert response.status_code == 400
    assert "unknown fault" in response.json()["error"]


def test_admin_requests_are_not_recorded(http: httpx2.Client, tgi: TGIEmulator) -> None:
    http.get("/__emulator__/stats")
    http.get("/__emulator__/faults")
    assert tgi.stats.requests_total == 0


def test_set_faults_rejects_unknown_names(tgi: TGIEmulator) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        tgi.set_faults(overlaod_next=1)


def test_reset_clears_faults_and_stats(http: httpx2.Client, tgi: TGIEmulator) -> None:
    tgi.set_faults(overload_next=5)
    http.post("/generate", json={"inputs": "x"})
    tgi.reset()
    assert tgi.faults == Faults()
    assert tgi.stats.requests_total == 0
    assert http.post("/generate", json={"inputs": "x"}).status_code == 200


def test_long_silences_carry_sse_keep_alive_comments(
    http: httpx2.Client, tgi: TGIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_core, "_KEEP_ALIVE_EVERY", 0.05)
    tgi.set_faults(first_token_latency=0.12)
    body = http.post("/generate_stream", json={"inputs": "x", "parameters": {"max_new_tokens": 1}}).content
    assert body.startswith(b":\n\n:\n\ndata: {")


def test_a_scripted_bodyless_status_drops_its_body(http: httpx2.Client, tgi: TGIEmulator) -> None:
    tgi.set_faults(scripted_responses=[ScriptedResponse(status=304, body="ignored")])
    response = http.post("/generate", json={"inputs": "x"})
    assert (response.status_code, response.content) == (304, b"")
