"""The pools' HTTP/1.1 connections: one exchange at a time over one socket, spoken with `http11_codec`.

httpcore2's own connection goes through h11, whose event and state machinery costs about 45 µs of Python per
exchange and 5 µs per packet of a chunked body, under four generator and context-manager layers of httpcore2's
(about 10 µs per packet in all, which a stream of one token per packet pays on every token). Here a request is
one write of bytes built in one join, a response head one parse, and a body a plain `read()` the transport
calls directly (the commonest packet of a TGI stream, one whole chunk, is a find and a slice). httpcore2's
pools still assign, limit, reuse and expire the connections. The sync and async connections share everything
but their waits: the state of a connection, the codec and the body's framing are one code.
"""

from __future__ import annotations

import contextlib
import enum
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpcore2

from .http11_codec import BodyFraming, HeadReader, ResponseHead, encode_request

__all__ = ["BODY_READER", "AsyncHttp11Connection", "AsyncHttp11Pool", "Http11Connection", "Http11Pool"]

# Where a response of these pools carries its body reader, for a transport that reads it without a generator.
BODY_READER = "zephyr_tgi.body_reader"

_READ_SIZE = 64 * 1024
_NO_RESPONSE = "Server disconnected without sending a response."


class _State(enum.Enum):
    NEW = 0
    ACTIVE = 1
    IDLE = 2
    CLOSED = 3


class _Connection:
    """What a connection is, sync or async: its origin, its state, and when the pool may reuse it."""

    def __init__(
        self,
        origin: httpcore2.Origin,
        backend: Any,
        ssl_context: ssl.SSLContext | None,
        keepalive_expiry: float | None,
    ) -> None:
        self._origin = origin
        self._backend = backend
        self._ssl_context = ssl_context
        self._keepalive_expiry = keepalive_expiry
        self._stream: Any = None  # the network stream, once connected
        self._state = _State.NEW
        self._lock = threading.Lock()  # never held across a wait: the async connection uses it too
        self._expire_at: float | None = None
        self._just_idle = False  # idle since the last exchange, and not yet asked whether it expired
        self._exchanges = 0

    def _begin(self, request: httpcore2.Request) -> dict[str, float | None]:
        """Take the connection for `request`; its timeouts."""
        if not self.can_handle_request(request.url.origin):
            raise RuntimeError(f"a request to {request.url.origin} on a connection to {self._origin}")
        with self._lock:
            if self._state not in (_State.NEW, _State.IDLE):
                raise httpcore2.ConnectionNotAvailable()
            self._state = _State.ACTIVE
            self._expire_at = None
            self._just_idle = False
            self._exchanges += 1
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        return timeouts

    def _tls_target(self, request: httpcore2.Request) -> tuple[ssl.SSLContext, str] | None:
        """The TLS context and server name of an https connection; None for http."""
        if self._origin.scheme != b"https":
            return None
        if self._ssl_context is None:
            raise httpcore2.UnsupportedProtocol("an https connection needs a TLS context")
        return self._ssl_context, request.extensions.get("sni_hostname") or self._origin.host.decode("ascii")

    def _response(self, head: ResponseHead, body: Any) -> httpcore2.Response:
        return httpcore2.Response(
            status=head.status,
            headers=head.headers,
            content=body,
            extensions={
                "http_version": b"HTTP/" + head.http_version,
                "reason_phrase": head.reason,
                "network_stream": self._stream,
                BODY_READER: body,
            },
        )

    def _release(self, reusable: bool) -> bool:
        """The exchange is over: whether the connection must now be closed (else it is idle, for the next)."""
        if not reusable or self._state is not _State.ACTIVE:
            return True
        with self._lock:
            self._state = _State.IDLE
            # The pool asks right away whether it expired: a body just read to its end, with nothing after
            # it, leaves nothing to see on the socket yet. The next request's own check probes it.
            self._just_idle = True
            if self._keepalive_expiry is not None:
                self._expire_at = time.monotonic() + self._keepalive_expiry
        return False

    def _detach(self) -> Any:
        """Mark the connection closed; the stream to close, if any."""
        self._state = _State.CLOSED
        stream, self._stream = self._stream, None
        return stream

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

    def can_multiplex(self) -> bool:
        return False

    def is_closed(self) -> bool:
        return self._state is _State.CLOSED

    def info(self) -> str:
        return f"{str(self._origin)!r}, HTTP/1.1, {self._state.name}, Request Count: {self._exchanges}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} [{self.info()}]>"


def _request_bytes(request: httpcore2.Request) -> bytes:
    body = b"".join(request.stream)  # type: ignore[arg-type]  # the transport's requests carry bytes
    return encode_request(request.method, request.url.target, request.headers, body)


class _BodyState:
    """What a body being read holds, sync or async: its connection, stream, read timeout and framing."""

    __slots__ = ("_connection", "_framing", "_pending", "_read_timeout", "_stream")

    def __init__(self, connection: Any, stream: Any, timeout: float | None, head: ResponseHead, start: bytes) -> None:
        self._connection = connection
        self._stream = stream
        self._read_timeout = timeout
        self._pending, self._framing = start, BodyFraming(head, start)  # `start`: what came with the head


class _Body(_BodyState):
    """A response body being read: `read()` returns the next bytes, b"" at the end; `close()` ends the exchange."""

    __slots__ = ()

    def read(self) -> bytes:
        """The next bytes of the body; b"" once it has all been read."""
        framing = self._framing
        while not framing.done:
            data = self._pending
            if data:
                self._pending = b""
            else:
                data = self._stream.read(_READ_SIZE, self._read_timeout)
            body = framing.take(data)
            if body:
                return body
        return b""

    def __iter__(self) -> Iterator[bytes]:
        read = self.read
        while data := read():
            yield data

    def close(self) -> None:
        self._connection.exchange_over(reusable=self._framing.reusable)


class Http11Connection(_Connection, httpcore2.ConnectionInterface):
    """One HTTP/1.1 connection to one origin, carrying one exchange at a time for httpcore2's pool."""

    def handle_request(self, request: httpcore2.Request) -> httpcore2.Response:
        timeouts = self._begin(request)
        try:
            stream = self._stream if self._stream is not None else self._connect(request, timeouts.get("connect"))
            # A server may answer (an error, typically) and close before reading the whole request: read that.
            with contextlib.suppress(httpcore2.WriteError):
                stream.write(_request_bytes(request), timeouts.get("write"))
            reader, read_timeout = HeadReader(head_request=request.method == b"HEAD"), timeouts.get("read")
            while True:
                data = stream.read(_READ_SIZE, read_timeout)
                if not data:
                    raise httpcore2.RemoteProtocolError(_NO_RESPONSE)
                if (parsed := reader.feed(data)) is not None:
                    break
            head, start = parsed
            body = _Body(self, stream, read_timeout, head, start)
        except BaseException:
            self.close()
            raise
        return self._response(head, body)

    def _connect(self, request: httpcore2.Request, timeout: float | None) -> httpcore2.NetworkStream:
        stream = self._backend.connect_tcp(self._origin.host.decode("ascii"), self._origin.port, timeout)
        self._stream = stream
        tls = self._tls_target(request)
        if tls is not None:
            self._stream = stream = stream.start_tls(tls[0], server_hostname=tls[1], timeout=timeout)
        return stream  # type: ignore[no-any-return]

    def exchange_over(self, *, reusable: bool) -> None:
        """The response was closed: keep the connection for the next exchange, or close it."""
        if self._release(reusable):
            self.close()

    def close(self) -> None:
        stream = self._detach()
        if stream is not None:
            stream.close()


class _AsyncBody(_BodyState):
    """The async twin of `_Body`."""

    __slots__ = ()

    async def read(self) -> bytes:
        """The next bytes of the body; b"" once it has all been read."""
        framing = self._framing
        while not framing.done:
            data = self._pending
            if data:
                self._pending = b""
            else:
                data = await self._stream.read(_READ_SIZE, self._read_timeout)
            body = framing.take(data)
            if body:
                return body
        return b""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while data := await self.read():
            yield data

    async def aclose(self) -> None:
        await self._connection.exchange_over(reusable=self._framing.reusable)


class AsyncHttp11Connection(_Connection, httpcore2.AsyncConnectionInterface):
    """The async twin of `Http11Connection`, for httpcore2's async pool."""

    async def handle_async_request(self, request: httpcore2.Request) -> httpcore2.Response:
        timeouts = self._begin(request)
        try:
            stream = self._stream if self._stream is not None else await self._connect(request, timeouts.get("connect"))
            with contextlib.suppress(httpcore2.WriteError):  # as in the sync connection
                await stream.write(_request_bytes(request), timeouts.get("write"))
            reader, read_timeout = HeadReader(head_request=request.method == b"HEAD"), timeouts.get("read")
            while True:
                data = await stream.read(_READ_SIZE, read_timeout)
                if not data:
                    raise httpcore2.RemoteProtocolError(_NO_RESPONSE)
                if (parsed := reader.feed(data)) is not None:
                    break
            head, start = parsed
            body = _AsyncBody(self, stream, read_timeout, head, start)
        except BaseException:
            await self.aclose()
            raise
        return self._response(head, body)

    async def _connect(self, request: httpcore2.Request, timeout: float | None) -> httpcore2.AsyncNetworkStream:
        stream = await self._backend.connect_tcp(self._origin.host.decode("ascii"), self._origin.port, timeout)
        self._stream = stream
        tls = self._tls_target(request)
        if tls is not None:
            self._stream = stream = await stream.start_tls(tls[0], server_hostname=tls[1], timeout=timeout)
        return stream  # type: ignore[no-any-return]

    async def exchange_over(self, *, reusable: bool) -> None:
        """The response was closed: keep the connection for the next exchange, or close it."""
        if self._release(reusable):
            await self.aclose()

    async def aclose(self) -> None:
        stream = self._detach()
        if stream is not None:
            with anyio.CancelScope(shield=True):  # a cancelled exchange still closes its socket
                await stream.aclose()


def _tls_context() -> ssl.SSLContext:
    """The pools' TLS context: the system's trust store (or SSL_CERT_FILE / SSL_CERT_DIR), HTTP/1.1 only."""
    context = httpcore2.default_ssl_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


class _OwnConnections:
    """What both pools give the connections they make: the network backend, the keep-alive expiry, and one TLS
    context for the pool, made when the first https connection is (loading the trust store costs milliseconds;
    httpcore2's connections make one each)."""

    def _own_init(self, backend: Any, limits: dict[str, Any]) -> None:
        self._zt_backend = backend
        self._zt_keepalive_expiry: float | None = limits.get("keepalive_expiry")
        self._zt_ssl_context: ssl.SSLContext | None = None

    def _connection_args(self, origin: httpcore2.Origin) -> tuple[Any, ssl.SSLContext | None, float | None]:
        # Called under the pool's lock.
        if origin.scheme == b"https" and self._zt_ssl_context is None:
            self._zt_ssl_context = _tls_context()
        return self._zt_backend, self._zt_ssl_context, self._zt_keepalive_expiry


class Http11Pool(_OwnConnections, httpcore2.ConnectionPool):
    """httpcore2's pool, over connections of this module (HTTP/1.1 only; no proxies: TGI is reached directly)."""

    def __init__(self, backend: httpcore2.NetworkBackend, **limits: Any) -> None:
        super().__init__(network_backend=backend, **limits)
        self._own_init(backend, limits)

    def create_connection(self, origin: httpcore2.Origin) -> httpcore2.ConnectionInterface:
        return Http11Connection(origin, *self._connection_args(origin))


class AsyncHttp11Pool(_OwnConnections, httpcore2.AsyncConnectionPool):
    """The async twin of `Http11Pool`."""

    def __init__(self, backend: httpcore2.AsyncNetworkBackend, **limits: Any) -> None:
        super().__init__(network_backend=backend, **limits)
        self._own_init(backend, limits)

    def create_connection(self, origin: httpcore2.Origin) -> httpcore2.AsyncConnectionInterface:
        return AsyncHttp11Connection(origin, *self._connection_args(origin))
