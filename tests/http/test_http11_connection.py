"""The transport's HTTP/1.1 exchanges over real sockets: connections are reused when, and only when, a response
allows it; bodies of every framing (chunked, a length, until the close, compressed) are read; what a request
carries besides its own headers (Host, the body's length, the URL's userinfo) is sent; a closed client sends
nothing. Sync and async alike, against a server on 127.0.0.1 that answers several requests per connection.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.http.conftest import Twin
from tests.http.hostile import loopback_server, read_request
from zephyr_tgi import APIConnectionError, ConfigurationError, RetryPolicy

INFO = json.dumps({"model_id": "TheBloke/zephyr-7B-alpha-GPTQ", "max_input_tokens": 3696, "max_total_tokens": 4096})
ANSWER = json.dumps({"generated_text": "Hello there", "details": {"finish_reason": "eos_token", "generated_tokens": 2}})
EVENTS = [
    b'data: {"index":1,"token":{"id":5,"text":"Hello","logprob":-0.1,"special":false},"generated_text":null}\n\n',
    b'data: {"index":2,"token":{"id":6,"text":" there","logprob":-0.2,"special":false},'
    b'"generated_text":"Hello there","details":{"finish_reason":"eos_token","generated_tokens":2}}\n\n',
]


def head(status: int = 200, *fields: str, version: str = "1.1") -> bytes:
    return (f"HTTP/{version} {status} X\r\n" + "".join(f"{field}\r\n" for field in fields) + "\r\n").encode()


def with_length(body: bytes, *fields: str) -> bytes:
    return head(200, "content-type: application/json", f"content-length: {len(body)}", *fields) + body


def chunked(pieces: list[bytes], *fields: str, end: bytes = b"0\r\n\r\n") -> bytes:
    wire = b"".join(b"%x\r\n" % len(piece) + piece + b"\r\n" for piece in pieces)
    return head(200, "content-type: text/event-stream", "transfer-encoding: chunked", *fields) + wire + end


# (path, request) -> what to write, after which the connection is closed if the answer says so (an HTTP/1.0
# answer, or `connection: close`); None: close it without answering.
Answer = Callable[[str, bytes], bytes | None]


class KeepAliveServer:
    """Answers every request of every connection with `answer`; counts connections, keeps the requests."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []

    def serve(self, sock: socket.socket, stop: threading.Event) -> None:
        with sock:
            while not stop.is_set():
                try:
                    request = read_request(sock)
                except OSError:
                    return
                if not request:
                    return
                self.requests.append(request)
                reply = self.answer(request.split(b" ", 2)[1].decode(), request)
                if reply is None:
                    return
                try:
                    sock.sendall(reply)
                except OSError:
                    return
                reply_head = reply.split(b"\r\n\r\n", 1)[0].lower()
                if reply_head.startswith(b"http/1.0") or b"connection: close" in reply_head:
                    return  # as the answer said
                if b"x-then-close: yes" in reply_head:
                    time.sleep(0.05)  # after the client has read the answer
                    return  # without having said so (a server's idle timeout)


TLS = Path(__file__).parent / "tls"  # a self-signed certificate for 127.0.0.1 (valid until 2126) and its key


@contextmanager
def keep_alive_server(answer: Answer, *, tls: bool = False) -> Iterator[tuple[str, KeepAliveServer]]:
    server = KeepAliveServer(answer)
    context = None
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(TLS / "cert.pem", TLS / "key.pem")

    def handle(sock: socket.socket, stop: threading.Event) -> None:
        server.connections += 1
        if context is not None:
            try:
                sock.settimeout(5)
                sock = context.wrap_socket(sock, server_side=True)
                sock.settimeout(None)
            except (OSError, ssl.SSLError):
                sock.close()
                return
        server.serve(sock, stop)

    with loopback_server(handle) as port:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}", server


def tgi(generate: Callable[[], bytes | None], stream: Callable[[], bytes | None]) -> Answer:
    def answer(path: str, request: bytes) -> bytes | None:
        if path == "/info":
            return with_length(INFO.encode())
        return stream() if path == "/generate_stream" else generate()

    return answer


FAST = RetryPolicy(max_attempts=1)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_calls_and_streams_share_one_kept_alive_connection(kind: str) -> None:
    with keep_alive_server(tgi(lambda: with_length(ANSWER.encode()), lambda: chunked(EVENTS))) as (url, server):
        twin = Twin(kind, url, retry=FAST)
        try:
            for _ in range(3):
                assert (await twin.call("generate", "Hi")).text == "Hello there"
                chunks = await twin.stream("generate_stream", "Hi")
                assert "".join(chunk.text for chunk in chunks) == "Hello there"
        finally:
            await twin.close()
    assert server.connections == 1
    assert len(server.requests) == 7  # /info once, then three of each


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_response_that_says_close_is_not_reused(kind: str) -> None:
    with keep_alive_server(tgi(lambda: None, lambda: chunked(EVENTS, "connection: close"))) as (url, server):
        twin = Twin(kind, url, retry=FAST)
        try:
            for _ in range(2):
                chunks = await twin.stream("generate_stream", "Hi")
                assert chunks[-1].result.text == "Hello there"
        finally:
            await twin.close()
    assert server.connections == 2  # /info and the first stream on one, the second stream on a new one


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_chunked_body_cut_short_is_a_connection_error_and_the_next_call_reconnects(kind: str) -> None:
    cut = {"first": True}

    def answer(path: str, request: bytes) -> bytes | None:
        if path == "/info":
            return with_length(INFO.encode())
        if cut.pop("first", False):
            return chunked(EVENTS[:1], "connection: close", end=b"")  # then the server closes
        return chunked(EVENTS)

    with keep_alive_server(answer) as (url, server):
        twin = Twin(kind, url, retry=FAST)
        try:
            with pytest.raises(APIConnectionError, match="incomplete chunked read"):
                await twin.stream("generate_stream", "Hi")
            chunks = await twin.stream("generate_stream", "Hi")
            assert chunks[-1].result.text == "Hello there"
        finally:
            await twin.close()
    assert server.connections == 2


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_malformed_chunk_is_a_typed_error(kind: str) -> None:
    bad = head(200, "content-type: text/event-stream", "transfer-encoding: chunked") + b"zz\r\n" + EVENTS[0]
    with keep_alive_server(tgi(lambda: None, lambda: bad)) as (url, _server):
        twin = Twin(kind, url, retry=FAST)
        try:
            with pytest.raises(APIConnectionError, match="POST /generate_stream"):
                await twin.stream("generate_stream", "Hi")
        finally:
            await twin.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_bytes_after_a_chunked_body_end_its_connection(kind: str) -> None:
    with keep_alive_server(tgi(lambda: None, lambda: chunked(EVENTS, end=b"0\r\n\r\ngarbage"))) as (url, server):
        twin = Twin(kind, url, retry=FAST)
        try:
            for _ in range(2):
                assert (await twin.stream("generate_stream", "Hi"))[-1].result.text == "Hello there"
        finally:
            await twin.close()
    assert server.connections == 2


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_an_http_1_0_answer_read_until_the_close(kind: str) -> None:
    body = ANSWER.encode()
    reply = head(200, "content-type: application/json", version="1.0") + body
    with keep_alive_server(tgi(lambda: reply, lambda: None)) as (url, server):
        twin = Twin(kind, url, retry=FAST)
        try:
            first = await twin.call("generate", "Hi")
            second = await twin.call("generate", "Hi")
        finally:
            await twin.close()
    assert first.text == second.text == "Hello there"
    assert server.connections == 2  # /info's kept alive and carries the first answer; the server closes after it


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_compressed_answers_and_streams_are_decoded(kind: str) -> None:
    packed = gzip.compress(ANSWER.encode())
    answer = head(200, "content-type: application/json", "content-encoding: gzip", f"content-length: {len(packed)}")
    events = gzip.compress(b"".join(EVENTS))
    stream = chunked([events[:10], events[10:]], "content-encoding: gzip")
    with keep_alive_server(tgi(lambda: answer + packed, lambda: stream)) as (url, _server):
        twin = Twin(kind, url, retry=FAST)
        try:
            assert (await twin.call("generate", "Hi")).text == "Hello there"
            assert (await twin.stream("generate_stream", "Hi"))[-1].result.text == "Hello there"
        finally:
            await twin.close()


def header_of(request: bytes, name: bytes) -> bytes | None:
    for line in request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_requests_carry_host_length_and_the_defaults(kind: str) -> None:
    with keep_alive_server(tgi(lambda: with_length(ANSWER.encode()), lambda: None)) as (url, server):
        twin = Twin(kind, url, retry=FAST)
        try:
            await twin.call("generate", "Hi")
        finally:
            await twin.close()
    info, generate = server.requests
    port = url.rsplit(":", 1)[1]
    assert header_of(info, b"host") == f"127.0.0.1:{port}".encode()
    assert header_of(info, b"content-length") is None  # a GET has no body
    body = generate.split(b"\r\n\r\n", 1)[1]
    assert header_of(generate, b"content-length") == str(len(body)).encode()
    assert json.loads(body)["inputs"] == "Hi"
    assert header_of(generate, b"accept-encoding") == b"gzip, deflate"
    assert header_of(generate, b"user-agent") == b"zephyr-tgi"


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("api_key", [None, "sk-mine"])
async def test_the_urls_userinfo_is_sent_as_basic_credentials_unless_there_is_a_key(
    kind: str, api_key: str | None
) -> None:
    with keep_alive_server(tgi(lambda: with_length(ANSWER.encode()), lambda: None)) as (url, server):
        twin = Twin(kind, url.replace("http://", "http://user:s3cret@"), retry=FAST, api_key=api_key)
        try:
            await twin.call("generate", "Hi")
        finally:
            await twin.close()
    expected = b"Bearer sk-mine" if api_key else b"Basic " + base64.b64encode(b"user:s3cret")
    assert {header_of(request, b"authorization") for request in server.requests} == {expected}


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_closed_client_sends_nothing(kind: str) -> None:
    with keep_alive_server(tgi(lambda: with_length(ANSWER.encode()), lambda: None)) as (url, server):
        twin = Twin(kind, url, retry=FAST)
        await twin.call("generate", "Hi")
        await twin.close()
        with pytest.raises(ConfigurationError, match="the client is closed"):
            await twin.call("generate", "Hi")
    assert len(server.requests) == 2


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_an_answer_shorter_than_its_length_is_a_connection_error(kind: str) -> None:
    body = ANSWER.encode()
    short = head(200, "content-type: application/json", f"content-length: {len(body) + 10}", "connection: close")
    with keep_alive_server(tgi(lambda: short + body, lambda: None)) as (url, _server):
        twin = Twin(kind, url, retry=FAST)
        try:
            with pytest.raises(APIConnectionError, match="complete message body"):
                await twin.call("generate", "Hi")
        finally:
            await twin.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_bytes_after_an_answers_length_end_its_connection(kind: str) -> None:
    with keep_alive_server(tgi(lambda: with_length(ANSWER.encode()) + b"garbage", lambda: None)) as (url, server):
        twin = Twin(kind, url, retry=FAST)
        try:
            for _ in range(2):
                assert (await twin.call("generate", "Hi")).text == "Hello there"
        finally:
            await twin.close()
    assert server.connections == 2  # /info and the first answer on one; the garbage ended it


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_connection_the_server_closed_while_idle_is_not_reused(kind: str) -> None:
    reply = with_length(ANSWER.encode(), "x-then-close: yes")
    with keep_alive_server(tgi(lambda: reply, lambda: None)) as (url, server):
        twin = Twin(kind, url, retry=FAST)  # one attempt: a reused dead connection would fail the call
        try:
            await twin.call("info")
            for _ in range(3):
                await asyncio.sleep(0.2)  # the server closes meanwhile
                assert (await twin.call("generate", "Hi")).text == "Hello there"
        finally:
            await twin.close()
    assert server.connections == 3  # /info and the first answer on one, then one per answer


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_https_is_verified_against_the_trust_store_and_kept_alive(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(TLS / "cert.pem"))  # the trust store: this server's certificate
    with keep_alive_server(tgi(lambda: with_length(ANSWER.encode()), lambda: chunked(EVENTS)), tls=True) as (
        url,
        server,
    ):
        twin = Twin(kind, url, retry=FAST)
        try:
            for _ in range(2):
                assert (await twin.call("generate", "Hi")).text == "Hello there"
                assert (await twin.stream("generate_stream", "Hi"))[-1].result.text == "Hello there"
        finally:
            await twin.close()
    assert server.connections == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_an_untrusted_certificate_is_a_connection_error(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with keep_alive_server(tgi(lambda: with_length(ANSWER.encode()), lambda: None), tls=True) as (url, _server):
        twin = Twin(kind, url, retry=FAST)
        try:
            with pytest.raises(APIConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
                await twin.call("generate", "Hi")
        finally:
            await twin.close()


async def test_a_cancelled_async_stream_closes_its_connection_and_the_next_call_works() -> None:
    hang = {"first": True}

    def stream() -> bytes:  # the first stream sends one event and then nothing, the connection kept open
        return chunked(EVENTS[:1], end=b"") if hang.pop("first", False) else chunked(EVENTS)

    with keep_alive_server(tgi(lambda: None, stream)) as (url, server):
        twin = Twin("async", url, retry=FAST)
        try:
            task = asyncio.create_task(twin.stream("generate_stream", "Hi"))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert (await twin.stream("generate_stream", "Hi"))[-1].result.text == "Hello there"
        finally:
            await twin.close()
    assert server.connections == 2  # the cancelled stream's connection was closed, not reused
