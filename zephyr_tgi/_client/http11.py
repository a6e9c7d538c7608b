"""The sync pool's HTTP/1.1 connections: one exchange at a time over one socket, spoken with `http11_codec`.

httpcore2's own connection goes through h11, whose event and state machinery costs about 45 µs of Python per
exchange and 5 µs per packet of a chunked body, under four generator and context-manager layers of httpcore2's
(about 10 µs per packet in all, which a stream of one token per packet pays on every token). Here a request is
one write of bytes built in one join, a response head one parse, and a body a plain `read()` the transport
calls directly (the commonest packet of a TGI stream, one whole chunk, is a find and a slice). httpcore2's
pool still assigns, limits, reuses and expires the connections.
"""

from __future__ import annotations

import abc
import contextlib
import enum
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpcore2

from .http11_codec import ChunkedReader, HeadReader, ResponseHead, encode_request

__all__ = ["BODY_READER", "Http11Connection", "Http11Pool"]

# Where a response of this pool carries its body reader, for a transport that reads it without a generator.
BODY_READER = "zephyr_tgi.body_reader"

_READ_SIZE = 64 * 1024
_UNFINISHED = "peer closed connection without sending complete message body"


class _State(enum.Enum):
    NEW = 0
    ACTIVE = 1
    IDLE = 2
    CLOSED = 3


class _Body(abc.ABC):
    """A response body being read: `read()` returns the next bytes, b"" at the end; `close()` ends the exchange."""

    __slots__ = ("_connection", "_finished", "_pending", "_read_timeout", "_stream")

    def __init__(
        self,
        connection: Http11Connection,
        stream: httpcore2.NetworkStream,
        read_timeout: float | None,
        start: bytes,
    ) -> None:
        self._connection = connection
        self._stream = stream
        self._read_timeout = read_timeout
        self._pending = start  # bytes that came with the head
        self._finished = False  # the whole body was read and the connection may carry another exchange

    @abc.abstractmethod
    def read(self) -> bytes:
        """The next bytes of the body; b"" once it has all been read."""

    def _receive(self) -> bytes:
        data = self._pending
        if data:
            self._pending = b""
            return data
        return self._stream.read(_READ_SIZE, self._read_timeout)

    def __iter__(self) -> Iterator[bytes]:
        read = self.read
        while data := read():
            yield data

    def close(self) -> None:
        self._connection.exchange_over(reusable=self._finished)


class _ChunkedBody(_Body):
    __slots__ = ("_keep_alive", "_reader")

    def __init__(
        self,
        connection: Http11Connection,
        stream: httpcore2.NetworkStream,
        read_timeout: float | None,
        start: bytes,
        keep_alive: bool,
    ) -> None:
        super().__init__(connection, stream, read_timeout, start)
        self._reader = ChunkedReader()
        self._keep_alive = keep_alive

    def read(self) -> bytes:
        reader = self._reader
        while not reader.done:
            data = self._receive()
            if not data:
                raise httpcore2.RemoteProtocolError(f"{_UNFINISHED} (incomplete chunked read)")
            body = reader.feed(data)
            if reader.done:
                self._finished = self._keep_alive and not reader.extra
            if body:
                return body
        return b""


class _LengthBody(_Body):
    """A body of a known length (0 for none)."""

    __slots__ = ("_expected", "_keep_alive", "_left")

    def __init__(
        self,
        connection: Http11Connection,
        stream: httpcore2.NetworkStream,
        read_timeout: float | None,
        start: bytes,
        length: int,
        keep_alive: bool,
    ) -> None:
        super().__init__(connection, stream, read_timeout, start)
        self._expected = self._left = length
        self._keep_alive = keep_alive
        if not length:
            self._finished = keep_alive and not start

    def read(self) -> bytes:
        if not self._left:
            return b""
        data = self._receive()
        if not data:
            received = self._expected - self._left
            raise httpcore2.RemoteProtocolError(f"{_UNFINISHED}: received {received} bytes, expected {self._expected}")
        if len(data) >= self._left:
            data, extra = data[: self._left], data[self._left :]
            self._left = 0
            self._finished = self._keep_alive and not extra
            return data
        self._left -= len(data)
        return data


class _UntilCloseBody(_Body):
    """A body that ends with the connection (an HTTP/1.0 answer, or one with no length): never reused."""

    __slots__ = ()

    def read(self) -> bytes:
        return self._receive()


class Http11Connection(httpcore2.ConnectionInterface):
    """One HTTP/1.1 connection to one origin, carrying one exchange at a time for httpcore2's pool."""

    def __init__(
        self,
        origin: httpcore2.Origin,
        backend: httpcore2.NetworkBackend,
        ssl_context: ssl.SSLContext | None,
        keepalive_expiry: float | None,
    ) -> None:
        self._origin = origin
        self._backend = backend
        self._ssl_context = ssl_context
        self._keepalive_expiry = keepalive_expiry
        self._stream: httpcore2.NetworkStream | None = None
        self._state = _State.NEW
        self._lock = threading.Lock()
        self._expire_at: float | None = None
        self._just_idle = False  # idle since the last exchange, and not yet asked whether it expired
        self._exchanges = 0

    def handle_request(self, request: httpcore2.Request) -> httpcore2.Response:
        if not self.can_handle_request(request.url.origin):
            raise RuntimeError(f"a request to {request.url.origin} on a connection to {self._origin}")
        with self._lock:
            if self._state not in (_State.NEW, _State.IDLE):
                raise httpcore2.ConnectionNotAvailable()
            self._state = _State.ACTIVE
            self._expire_at = None
            self._just_idle = False
            self._exchanges += 1
        try:
            timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
            stream = self._stream if self._stream is not None else self._connect(request, timeouts.get("connect"))
            self._send(stream, request, timeouts.get("write"))
            read_timeout = timeouts.get("read")
            head, start = self._receive_head(stream, request.method == b"HEAD", read_timeout)
            body = self._body(head, start, stream, read_timeout)
        except BaseException:
            self.close()
            raise
        return httpcore2.Response(
            status=head.status,
            headers=head.headers,
            content=body,
            extensions={
                "http_version": b"HTTP/" + head.http_version,
                "reason_phrase": head.reason,
                "network_stream": stream,
                BODY_READER: body,
            },
        )

    def _connect(self, request: httpcore2.Request, timeout: float | None) -> httpcore2.NetworkStream:
        host = self._origin.host.decode("ascii")
        stream = self._backend.connect_tcp(host, self._origin.port, timeout)
        self._stream = stream
        if self._origin.scheme == b"https":
            if self._ssl_context is None:
                raise httpcore2.UnsupportedProtocol("an https connection needs a TLS context")
            hostname = request.extensions.get("sni_hostname") or host
            stream = stream.start_tls(self._ssl_context, server_hostname=hostname, timeout=timeout)
            self._stream = stream
        return stream

    @staticmethod
    def _send(stream: httpcore2.NetworkStream, request: httpcore2.Request, timeout: float | None) -> None:
        body = b"".join(request.stream)  # type: ignore[arg-type]  # the transport's requests carry bytes
        data = encode_request(request.method, request.url.target, request.headers, body)
        # A server may answer (an error, typically) and close before reading the whole request: read that.
        with contextlib.suppress(httpcore2.WriteError):
            stream.write(data, timeout)

    @staticmethod
    def _receive_head(
        stream: httpcore2.NetworkStream, head_request: bool, timeout: float | None
    ) -> tuple[ResponseHead, bytes]:
        reader = HeadReader(head_request=head_request)
        while True:
            data = stream.read(_READ_SIZE, timeout)
            if not data:
                raise httpcore2.RemoteProtocolError("Server disconnected without sending a response.")
            parsed = reader.feed(data)
            if parsed is not None:
                return parsed

    def _body(self, head: ResponseHead, start: bytes, stream: httpcore2.NetworkStream, timeout: float | None) -> _Body:
        if head.chunked:
            return _ChunkedBody(self, stream, timeout, start, head.keep_alive)
        if head.length is not None:
            return _LengthBody(self, stream, timeout, start, head.length, head.keep_alive)
        return _UntilCloseBody(self, stream, timeout, start)

    def exchange_over(self, *, reusable: bool) -> None:
        """The response was closed: keep the connection for the next exchange, or close it."""
        if reusable and self._state is _State.ACTIVE:
            with self._lock:
                self._state = _State.IDLE
                # The pool asks right away whether it expired: a body just read to its end, with nothing after
                # it, leaves nothing to see on the socket yet. The next request's own check probes it.
                self._just_idle = True
                if self._keepalive_expiry is not None:
                    self._expire_at = time.monotonic() + self._keepalive_expiry
        else:
            self.close()

    def close(self) -> None:
        self._state = _State.CLOSED
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    def can_handle_request(self, origin: httpcore2.Origin) -> bool:
        return origin == self._origin

    def is_connected(self) -> bool:
        return self._stream is not None and self._state is not _State.CLOSED

    def is_available(self) -> bool:
        return self._state is _State.IDLE

    def has_expired(self) -> bool:
        expire_at = self._expire_at
        if expire_at is not None and time.monotonic() > expire_at:
            return True
        if self._state is not _State.IDLE or self._stream is None:
            return False
        if self._just_idle:
            self._just_idle = False
            return False
        # An idle connection whose socket is readable is one the server closed (or sent garbage on).
        return bool(self._stream.get_extra_info("is_readable"))

    def is_idle(self) -> bool:
        return self._state is _State.IDLE

    def is_closed(self) -> bool:
        return self._state is _State.CLOSED

    def info(self) -> str:
        return f"{str(self._origin)!r}, HTTP/1.1, {self._state.name}, Request Count: {self._exchanges}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} [{self.info()}]>"


class Http11Pool(httpcore2.ConnectionPool):
    """httpcore2's pool, over connections of this module (HTTP/1.1 only; no proxies: TGI is reached directly)."""

    def __init__(self, backend: httpcore2.NetworkBackend, **limits: Any) -> None:
        super().__init__(network_backend=backend, **limits)
        self._zt_backend = backend
        self._zt_keepalive_expiry: float | None = limits.get("keepalive_expiry")
        self._zt_ssl_context: ssl.SSLContext | None = None

    def create_connection(self, origin: httpcore2.Origin) -> httpcore2.ConnectionInterface:
        # Called under the pool's lock. One TLS context for the pool, made when the first https connection is:
        # loading the trust store costs milliseconds (httpcore2's connections make one each).
        if origin.scheme == b"https" and self._zt_ssl_context is None:
            context = httpcore2.default_ssl_context()  # the system's trust store, or SSL_CERT_FILE / SSL_CERT_DIR
            context.set_alpn_protocols(["http/1.1"])
            self._zt_ssl_context = context
        return Http11Connection(origin, self._zt_backend, self._zt_ssl_context, self._zt_keepalive_expiry)
