"""The client against servers that misbehave: every call ends within its deadline, in a typed error, with its
memory bounded and no secret in any message. Each test is one of issue 9's observations, over real HTTP."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import pytest

from tests.http.conftest import Twin
from tests.http.hostile import Conn, hostile_server, sse_headers
from zephyr_tgi import (
    APIConnectionError,
    APITimeoutError,
    ConfigurationError,
    InputValidationError,
    MalformedResponseError,
    RetryPolicy,
    ServerUnavailableError,
    StreamChunk,
    Timeout,
    ZephyrTGIError,
)
from zephyr_tgi._client.async_client import AsyncStream
from zephyr_tgi._client.sync_client import Stream
from zephyr_tgi.testing import ScriptedResponse, TGIEmulator

SLACK = 0.5  # the contract: a call ends within its deadline plus half a second
INFO = json.dumps({"model_id": "TheBloke/zephyr-7B-alpha-GPTQ", "max_input_tokens": 3696, "max_total_tokens": 4096})
TOKEN_EVENT = b'data: {"index":1,"token":{"id":5,"text":"Hi","logprob":-0.1,"special":false},"generated_text":null}\n\n'


def _http(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    head = f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
    return head.encode() + b"connection: close\r\n\r\n" + body


def tgi_like(generation: Callable[[Conn], None]) -> Callable[[Conn], None]:
    """Answer /info as TGI does and hand every other request to `generation`."""

    def behaviour(conn: Conn) -> None:
        if conn.path == "/info":
            conn.send(_http(200, INFO.encode()))
        else:
            generation(conn)

    return behaviour


def keep_alive_forever(conn: Conn) -> None:
    conn.send(sse_headers())
    conn.every(0.05, b": keep-alive\n\n")


def trickle_a_token_event(conn: Conn) -> None:
    conn.send(sse_headers())
    for byte in TOKEN_EVENT[:-2]:  # an event that never completes, one byte at a time
        if conn.stop.wait(0.05) or not conn.send(bytes([byte])):
            return
    conn.stop.wait(30)


def trickle_an_answer(conn: Conn) -> None:
    conn.send(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000\r\nconnection: close\r\n\r\n"
    )
    conn.every(0.05, b" ")


def never_answer(conn: Conn) -> None:
    conn.stop.wait(60)


# -- 1. keep-alive comments and trickles do not hold a stream open -------------------------------------------


@pytest.mark.parametrize("timeout", [Timeout(read=0.5), Timeout(deadline=0.8)], ids=["read", "deadline"])
async def test_keep_alive_comments_do_not_reset_the_read_timeout_or_the_deadline(kind: str, timeout: Timeout) -> None:
    with hostile_server(tgi_like(keep_alive_forever)) as url:
        twin = Twin(kind, url, timeout=timeout, retry=RetryPolicy.never())
        started = time.monotonic()
        with pytest.raises(APITimeoutError, match=r"keep-alive comments do not count|deadline passed"):
            await twin.stream("chat_stream", "Hi")
        elapsed = time.monotonic() - started
        await twin.close()
    limit = timeout.read if timeout.read is not None else timeout.deadline
    assert limit is not None
    assert limit - 0.1 <= elapsed <= limit + SLACK


async def test_a_stream_trickled_one_byte_at_a_time_ends_at_its_deadline(kind: str) -> None:
    with hostile_server(tgi_like(trickle_a_token_event)) as url:
        twin = Twin(kind, url, timeout=Timeout(deadline=1.0))
        started = time.monotonic()
        with pytest.raises(APITimeoutError):
            await twin.stream("chat_stream", "Hi")
        elapsed = time.monotonic() - started
        await twin.close()
    assert elapsed <= 1.0 + SLACK


# -- 2. an attempt gets what is left of the deadline, and /info shares it -----------------------------------


async def test_a_trickled_answer_cannot_outlive_the_deadline_and_attempts_share_it(kind: str) -> None:
    with hostile_server(tgi_like(trickle_an_answer)) as url:
        twin = Twin(kind, url, timeout=Timeout(read=0.8, deadline=1.2), retry=RetryPolicy(initial_delay=0.05))
        started = time.monotonic()
        with pytest.raises(APITimeoutError):
            await twin.call("chat", "Hi")
        elapsed = time.monotonic() - started
        await twin.close()
    assert elapsed <= 1.2 + SLACK


async def test_the_implicit_info_request_shares_the_calls_deadline_and_attempts(kind: str) -> None:
    with hostile_server(never_answer) as url:  # /info itself hangs
        twin = Twin(kind, url, timeout=Timeout(deadline=1.0), retry=RetryPolicy(initial_delay=0.05))
        started = time.monotonic()
        with pytest.raises(APITimeoutError):
            await twin.call("chat", "Hi")
        elapsed = time.monotonic() - started
        await twin.close()
    assert elapsed <= 1.0 + SLACK


async def test_a_refused_port_fails_within_the_deadline_with_a_hint(kind: str) -> None:
    from tests.http.test_client_errors_and_retries import _refused_url

    url = _refused_url()
    twin = Twin(kind, url, timeout=Timeout(deadline=2.0), retry=RetryPolicy(initial_delay=0.5))
    started = time.monotonic()
    with pytest.raises(APIConnectionError) as info:
        await twin.call("chat", "Hi")
    elapsed = time.monotonic() - started
    await twin.close()
    assert elapsed <= 2.0 + SLACK
    assert url in str(info.value)
    assert "Is the server running" in str(info.value)


async def test_retry_refused_false_fails_at_once(kind: str) -> None:
    from tests.http.test_client_errors_and_retries import _refused_url

    twin = Twin(kind, _refused_url(), retry=RetryPolicy(retry_refused=False, initial_delay=1.0))
    started = time.monotonic()
    with pytest.raises(APIConnectionError):
        await twin.call("info")
    assert time.monotonic() - started < SLACK
    await twin.close()


# -- 3. the defaults bound each route ------------------------------------------------------------------------


async def test_by_default_info_and_health_give_up_on_a_silent_server_within_seconds(kind: str) -> None:
    with hostile_server(never_answer) as url:
        twin = Twin(kind, url, retry=RetryPolicy())
        started = time.monotonic()
        with pytest.raises(APITimeoutError):
            await twin.call("info")
        info_elapsed = time.monotonic() - started
        started = time.monotonic()
        assert await twin.call("health") is False
        health_elapsed = time.monotonic() - started
        await twin.close()
    assert info_elapsed <= 10.0 + SLACK  # the admin routes' default deadline
    assert health_elapsed <= 5.0 + SLACK  # one attempt, the admin read timeout


async def test_a_number_as_timeout_bounds_a_whole_non_streaming_call(kind: str) -> None:
    with hostile_server(tgi_like(never_answer)) as url:
        twin = Twin(kind, url, timeout=1.0, retry=RetryPolicy())
        started = time.monotonic()
        with pytest.raises(APITimeoutError):
            await twin.call("chat", "Hi")
        elapsed = time.monotonic() - started
        await twin.close()
    assert elapsed <= 1.0 + SLACK


# -- 4. a missing /info is remembered ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("engine", "probes"),
    [
        ("tgi", ["/info"]),
        # `auto` asks SGLang's and vLLM's identification routes once too, then settles on TGI.
        ("auto", ["/info", "/get_model_info", "/version"]),
    ],
)
async def test_an_info_route_that_answers_404_is_read_once_and_tgis_defaults_apply(
    kind: str, engine: str, probes: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    paths: list[str] = []
    answer = b'{"generated_text": "Hello", "details": {"finish_reason": "eos_token", "generated_tokens": 1}}'

    def not_quite_tgi(conn: Conn) -> None:  # a proxy that only forwards /generate
        paths.append(conn.path)
        conn.send(_http(404, b"") if conn.path == "/info" else _http(200, answer))

    with hostile_server(not_quite_tgi) as url, caplog.at_level(logging.WARNING, logger="zephyr_tgi"):
        twin = Twin(kind, url, engine=engine)
        for _ in range(3):
            assert (await twin.call("chat", "Hi", max_new_tokens=3)).text == "Hello"
        assert twin.client.limits.max_total_tokens == 4096  # TGI's default
        assert twin.client.engine == "tgi"
        await twin.close()
    assert paths == [*probes, "/generate", "/generate", "/generate"]
    assert caplog.text.count("has no usable /info") == 1
    assert "retrying GET /info" not in caplog.text


# -- 5. nothing a server sends raises anything but our errors -----------------------------------------------

DEEP = "[" * 100_000


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (ScriptedResponse(200, DEEP, "application/json"), MalformedResponseError),
        (ScriptedResponse(200, '{"generated_text": 1e999}', "application/json"), MalformedResponseError),
        (ScriptedResponse(422, '{"error": ' + DEEP + "}", "application/json"), InputValidationError),
    ],
    ids=["deep-answer", "wrong-type", "deep-422"],
)
async def test_hostile_answers_are_typed_errors(
    twin: Twin, emulator: TGIEmulator, response: ScriptedResponse, error: type[ZephyrTGIError]
) -> None:
    emulator.set_faults(scripted_responses=[response])
    await twin.call("info")
    with pytest.raises(error):
        await twin.call("chat", "Hi")


@pytest.mark.parametrize(
    "event",
    [
        DEEP,
        '{"error": ' + DEEP + "}",
        '{"index": 1e999, "token": {"id": 1, "text": "a", "special": false}}',
        '{"index": "one", "token": {"id": 1, "text": "a", "special": false}}',
    ],
    ids=["deep-event", "deep-in-band-error", "huge-index", "string-index"],
)
async def test_hostile_stream_events_are_typed_errors(twin: Twin, emulator: TGIEmulator, event: str) -> None:
    emulator.set_faults(scripted_responses=[ScriptedResponse(200, f"data: {event}\n\n", "text/event-stream")])
    await twin.call("info")
    _, error = await twin.stream_until_error("chat_stream", "Hi")
    assert isinstance(error, MalformedResponseError)


def _token_event(index: int, text: str) -> str:
    token = {"id": 100 + index, "text": text, "logprob": -0.1, "special": False}
    return "data: " + json.dumps({"index": index, "token": token, "generated_text": None}) + "\n\n"


async def test_a_bad_event_among_good_ones_in_one_packet_ends_the_stream_after_them(
    twin: Twin, emulator: TGIEmulator
) -> None:
    # The events of one packet become chunks together: the chunks before the bad event still reach the caller,
    # in order, and the bad one is the stream's typed error, wherever it sits in the packet.
    body = _token_event(1, "Hel") + _token_event(2, "lo") + 'data: {"index": "three"}\n\n' + _token_event(4, "!")
    emulator.set_faults(scripted_responses=[ScriptedResponse(200, body, "text/event-stream")])
    await twin.call("info")
    items, error = await twin.stream_until_error("chat_stream", "Hi")
    assert isinstance(error, MalformedResponseError)
    assert [chunk.text for chunk in items] == ["Hel", "lo"]
    assert [chunk.index for chunk in items] == [1, 2]


async def test_events_after_the_last_one_in_its_packet_are_ignored(twin: Twin, emulator: TGIEmulator) -> None:
    last = {
        "index": 1,
        "token": {"id": 5, "text": "Hi", "logprob": -0.1, "special": False},
        "generated_text": "Hi",
        "details": {"finish_reason": "length", "generated_tokens": 1, "seed": None, "input_length": 3},
    }
    body = "data: " + json.dumps(last) + "\n\n" + _token_event(2, " again")
    emulator.set_faults(scripted_responses=[ScriptedResponse(200, body, "text/event-stream")])
    chunks = await twin.stream("generate_stream", "Hi", max_new_tokens=1)
    assert [chunk.text for chunk in chunks] == ["Hi"]
    assert chunks[-1].result is not None


async def test_a_nan_logprob_is_carried_as_a_float(twin: Twin, emulator: TGIEmulator) -> None:
    body = (
        '{"generated_text": "Hi", "details": {"finish_reason": "length", "generated_tokens": 1, '
        '"tokens": [{"id": 5, "text": "Hi", "logprob": NaN, "special": false}]}}'
    )
    emulator.set_faults(scripted_responses=[ScriptedResponse(200, body, "application/json")])
    await twin.call("info")
    result = await twin.call("chat", "Hi")
    assert result.text == "Hi"
    assert result.tokens[0].logprob != result.tokens[0].logprob


async def test_batch_chat_keeps_every_other_answer_when_one_is_hostile(twin: Twin, emulator: TGIEmulator) -> None:
    await twin.call("info")
    emulator.set_faults(scripted_responses=[ScriptedResponse(200, DEEP, "application/json")])
    outcomes = await twin.call("batch_chat", [f"question {i}" for i in range(6)], concurrency=2, progress=False)
    errors = [o for o in outcomes if isinstance(o, ZephyrTGIError)]
    assert len(outcomes) == 6
    assert len(errors) == 1
    assert isinstance(errors[0], MalformedResponseError)


# -- 6. memory: capped bodies, linear SSE, capped lines ------------------------------------------------------


async def test_a_huge_error_page_is_read_only_up_to_its_cap(kind: str) -> None:
    page = b"<html>" + b"<p>gateway trouble</p>\n" * 2_300_000 + b"</html>"  # about 50 MB

    def huge_error(conn: Conn) -> None:
        conn.send(_http(502, page, "text/html"))

    with hostile_server(tgi_like(huge_error)) as url:
        twin = Twin(kind, url, retry=RetryPolicy.never())
        with pytest.raises(ServerUnavailableError) as info:
            await twin.call("chat", "Hi")
        await twin.close()
    assert info.value.body is not None
    assert len(info.value.body) <= 64 * 1024
    assert len(str(info.value)) < 600


@pytest.mark.parametrize("ends", [True, False], ids=["40MB-line", "line-that-never-ends"])
async def test_an_enormous_stream_line_ends_the_stream_with_a_typed_error(kind: str, ends: bool) -> None:
    def enormous_line(conn: Conn) -> None:
        conn.send(sse_headers() + b"data: ")
        block = b"x" * (1 << 20)
        for _ in range(40):
            if conn.stop.is_set() or not conn.send(block):
                return
        if ends:
            conn.send(b"\n\n")
        conn.stop.wait(30)

    with hostile_server(tgi_like(enormous_line)) as url:
        twin = Twin(kind, url, retry=RetryPolicy.never(), timeout=Timeout(deadline=20))
        _, error = await twin.stream_until_error("chat_stream", "Hi")
        await twin.close()
    assert isinstance(error, MalformedResponseError)
    assert "longer than" in str(error)


# -- 7. secrets never show ----------------------------------------------------------------------------------


async def test_a_gateway_page_echoing_the_api_key_does_not_leak_it(kind: str, emulator: TGIEmulator) -> None:
    key = "sk-zephyr-0123456789abcdef"
    page = f"<html>502 from upstream; request was: authorization: Bearer {key}; key={key}</html>"
    emulator.set_faults(scripted_responses=[ScriptedResponse(502, page, "text/html")] * 4)
    twin = Twin(kind, emulator.url, api_key=key, retry=RetryPolicy.never())
    await twin.call("info")
    with pytest.raises(ServerUnavailableError) as info:
        await twin.call("chat", "Hi")
    await twin.close()
    for text in (str(info.value), repr(info.value), info.value.body or "", info.value.message):
        assert key not in text


async def test_a_password_in_the_url_is_never_shown(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    from tests.http.test_client_errors_and_retries import _refused_url

    url = _refused_url().replace("http://", "http://admin:hunter2-PASSWORD@")
    twin = Twin(kind, url, retry=RetryPolicy(max_attempts=2, initial_delay=0.01))
    with caplog.at_level(logging.WARNING, logger="zephyr_tgi"), pytest.raises(APIConnectionError) as info:
        await twin.call("chat", "Hi")
    assert "hunter2-PASSWORD" not in repr(twin.client)
    assert "hunter2-PASSWORD" not in twin.client.base_url
    assert "hunter2-PASSWORD" not in str(info.value)
    assert "retrying" in caplog.text
    assert "hunter2-PASSWORD" not in caplog.text
    await twin.close()


# -- 8. user errors are the user's ------------------------------------------------------------------------


async def test_a_schema_json_cannot_carry_is_a_configuration_error_and_nothing_is_sent(
    twin: Twin, emulator: TGIEmulator
) -> None:
    schema = {"type": "object", "properties": {"color": {"enum": {"red", "green"}}}}
    with pytest.raises(ConfigurationError, match="cannot be sent as JSON"):
        await twin.call("chat_json", "Pick a color", schema)
    assert [r.path for r in emulator.stats.requests if r.path == "/generate"] == []


# -- one streaming convention ---------------------------------------------------------------------------------


async def test_a_stream_checks_its_arguments_at_once_and_sends_on_first_iteration(
    kind: str, emulator: TGIEmulator
) -> None:
    twin = Twin(kind, emulator.url)
    with pytest.raises(ConfigurationError):
        twin.client.chat_stream("Hi", temperature=-1)
    stream = twin.client.chat_stream("Hi", max_new_tokens=3)
    assert emulator.stats.requests_total == 0
    if isinstance(stream, Stream):
        first = next(stream)
        stream.close()
    else:
        assert isinstance(stream, AsyncStream)
        first = await anext(stream)
        await stream.aclose()
    assert isinstance(first, StreamChunk)
    assert emulator.stats.requests_total >= 1
    await twin.close()
