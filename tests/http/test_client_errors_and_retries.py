"""Typed errors and TGI-aware retries over real HTTP, with fault injection in the emulator."""

from __future__ import annotations

import time

import pytest

from tests.http.conftest import Twin, generation_requests
from zephyr_tgi import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    GenerationError,
    InputValidationError,
    OverloadedError,
    RetryPolicy,
    ServerUnavailableError,
    Timeout,
    ZephyrTGIError,
)
from zephyr_tgi.testing import ScriptedResponse, TGIEmulator


async def test_overloaded_is_retried_until_it_succeeds(twin: Twin, emulator: TGIEmulator) -> None:
    emulator.set_faults(overload_next=2)
    result = await twin.call("chat", "Hi")
    assert result.text
    assert len(generation_requests(emulator)) == 3


async def test_overloaded_raises_once_attempts_are_used_up(twin: Twin, emulator: TGIEmulator) -> None:
    emulator.set_faults(overload_next=10)
    with pytest.raises(OverloadedError) as info:
        await twin.call("chat", "Hi")
    assert info.value.status_code == 429
    assert info.value.error_type == "overloaded"
    assert len(generation_requests(emulator)) == 4


async def test_in_band_overload_as_first_stream_event_is_retried(twin: Twin, emulator: TGIEmulator) -> None:
    emulator.set_faults(overload_next=1)
    chunks = await twin.stream("chat_stream", "Hi")
    assert chunks[-1].result is not None
    assert len(generation_requests(emulator)) == 2


async def test_validation_errors_are_never_retried(twin: Twin, emulator: TGIEmulator) -> None:
    body = (
        '{"error":"Input validation error: `inputs` must have less than 3696 tokens. Given: 4000",'
        '"error_type":"validation"}'
    )
    emulator.set_faults(scripted_responses=[ScriptedResponse(status=422, body=body, content_type="application/json")])
    with pytest.raises(InputValidationError) as info:
        await twin.call("chat", "Hi")
    assert "must have less than 3696 tokens" in info.value.message
    assert len(generation_requests(emulator)) == 1


async def test_generation_errors_are_never_retried(twin: Twin, emulator: TGIEmulator) -> None:
    emulator.set_faults(stream_error_next=1, stream_error_type="generation")
    with pytest.raises(GenerationError):
        await twin.call("chat", "Hi")
    assert len(generation_requests(emulator)) == 1


@pytest.mark.parametrize(
    ("status", "body", "content_type", "expected"),
    [
        (
            422,
            "Failed to deserialize the JSON body into the target type: missing field `inputs`",
            "text/plain",
            InputValidationError,
        ),
        (401, "", None, AuthenticationError),
        (502, "<html><body>502 Bad Gateway</body></html>", "text/html", ServerUnavailableError),
    ],
)
async def test_non_json_error_bodies_map_to_typed_errors(
    twin: Twin, emulator: TGIEmulator, status: int, body: str, content_type: str | None, expected: type[APIStatusError]
) -> None:
    emulator.set_faults(scripted_responses=[ScriptedResponse(status=status, body=body, content_type=content_type)] * 4)
    with pytest.raises(expected) as info:
        await twin.call("chat", "Hi")
    assert info.value.status_code == status
    assert info.value.body == body


async def test_a_proxy_502_is_retried(twin: Twin, emulator: TGIEmulator) -> None:
    emulator.set_faults(
        scripted_responses=[ScriptedResponse(status=502, body="<html>bad gateway</html>", content_type="text/html")]
    )
    assert (await twin.call("chat", "Hi")).text
    assert len(generation_requests(emulator)) == 2


async def test_retry_after_is_honoured(twin: Twin, emulator: TGIEmulator) -> None:
    emulator.set_faults(overload_next=1, retry_after="0.4")
    started = time.monotonic()
    await twin.call("chat", "Hi")
    assert time.monotonic() - started >= 0.4


async def test_connection_dropped_before_the_first_byte_is_retried(twin: Twin, emulator: TGIEmulator) -> None:
    emulator.set_faults(drop_before_first_byte_next=2)
    assert (await twin.call("chat", "Hi")).text
    chunks = await twin.stream("chat_stream", "Hi")
    assert chunks[-1].result is not None


async def test_a_stream_cut_after_tokens_is_not_retried_and_nothing_is_duplicated(
    twin: Twin, emulator: TGIEmulator
) -> None:
    expected = (await twin.call("chat", "Hi")).text
    emulator.reset()
    emulator.set_faults(drop_mid_stream_next=1, drop_after_tokens=3)
    chunks, error = await twin.stream_until_error("chat_stream", "Hi")
    assert isinstance(error, APIConnectionError)
    assert len(chunks) == 3
    assert expected.startswith("".join(chunk.text for chunk in chunks))
    assert len(generation_requests(emulator)) == 1


async def test_an_in_band_error_after_tokens_raises_without_retry(twin: Twin, emulator: TGIEmulator) -> None:
    emulator.set_faults(stream_error_next=1, stream_error_after_tokens=2, stream_error_type="overloaded")
    chunks, error = await twin.stream_until_error("chat_stream", "Hi")
    assert isinstance(error, OverloadedError)
    assert len(chunks) == 2
    assert len(generation_requests(emulator)) == 1


async def test_the_loading_phase_is_waited_out(kind: str) -> None:
    from zephyr_tgi.testing import Faults

    with TGIEmulator(faults=Faults(refuse_connections_for=0.5, proxy_unavailable_for=0.5)) as emulator:
        twin = Twin(kind, emulator.url, retry=RetryPolicy(max_attempts=8, initial_delay=0.2, max_delay=0.5))
        result = await twin.call("chat", "Hi")
        await twin.close()
    assert result.text


async def test_read_timeout_bounds_the_gap_between_tokens(kind: str) -> None:
    with TGIEmulator(token_latency=1.0) as emulator:
        twin = Twin(kind, emulator.url, timeout=Timeout(read=0.2), retry=RetryPolicy.never())
        with pytest.raises(APITimeoutError):
            await twin.stream("chat_stream", "Hi")
        with pytest.raises(APITimeoutError):
            await twin.call("chat", "Hi")
        await twin.close()


async def test_the_deadline_bounds_the_whole_call_with_retries(kind: str, emulator: TGIEmulator) -> None:
    emulator.set_faults(overload_next=1000)
    twin = Twin(
        kind,
        emulator.url,
        timeout=Timeout(deadline=0.6),
        retry=RetryPolicy(max_attempts=100, initial_delay=0.05, max_delay=0.1),
    )
    started = time.monotonic()
    with pytest.raises(ZephyrTGIError):
        await twin.call("chat", "Hi")
    await twin.close()
    assert time.monotonic() - started < 2.0


async def test_an_unreachable_server_is_a_connection_error(kind: str) -> None:
    twin = Twin(kind, "http://127.0.0.1:9", retry=RetryPolicy.never())
    with pytest.raises(APIConnectionError):
        await twin.call("chat", "Hi")
    with pytest.raises(APIConnectionError):
        await twin.stream("chat_stream", "Hi")
    await twin.close()


async def test_connection_errors_keep_the_transport_exception_as_cause(kind: str) -> None:
    import httpcore2
    import httpx2

    twin = Twin(kind, _refused_url(), retry=RetryPolicy.never())
    with pytest.raises(APIConnectionError) as info:
        await twin.call("chat", "Hi")
    await twin.close()
    assert isinstance(info.value.__cause__, (httpx2.HTTPError, httpcore2.ConnectError))
    assert info.value.connect_failed


async def test_status_errors_carry_the_body_and_headers_not_a_dependency_exception(
    twin: Twin, emulator: TGIEmulator
) -> None:
    emulator.set_faults(scripted_responses=[ScriptedResponse(status=422, body="nope", content_type="text/plain")])
    with pytest.raises(InputValidationError) as info:
        await twin.call("chat", "Hi")
    assert info.value.body == "nope"
    assert info.value.headers["content-type"].startswith("text/plain")


async def test_hub_offline_mode_does_not_stop_the_client(
    kind: str, emulator: TGIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client has its own transport: huggingface_hub's offline switch is about the Hub, not a TGI server.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    twin = Twin(kind, emulator.url)
    assert (await twin.call("chat", "Hi")).text
    assert (await twin.stream("chat_stream", "Hi"))[-1].result is not None
    await twin.close()


def _refused_url() -> str:
    import socket

    with socket.socket() as probe:  # a port the OS just handed out and nobody listens on now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
