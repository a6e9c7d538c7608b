"""The sync pool's HTTP/1.1 connection: h11 writes the request and parses the response head; a chunked body is
framed here, with bytes methods.

httpcore2's own connection reads a body through h11, whose chunked reader costs about 5 µs per packet, under
four generator and context-manager layers of httpcore2's: about 10 µs of Python per packet, which a stream of
one token per packet pays on every token. Here a chunked body is one sans-I/O `ChunkedReader` over the socket's
reads (the commonest packet, one whole chunk, is a find and a slice), exposed to the transport as a plain
`read()`. Everything else stays where it was: httpcore2's pool assigns, limits, reuses and expires connections;
h11 validates what it writes and the head it reads; bodies that are not chunked go through h11 as before.
A new h11 state per exchange keeps h11 out of a body it did not read.
"""

from __future__ import annotations

import abc
import contextlib
import enum
import re
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import h11
import httpcore2

__all__ = ["BODY_READER", "ChunkedReader", "Http11Connection", "Http11Pool"]

# Where a response of this pool carries its body reader, for a transport that reads it without a generator.
BODY_READER = "zephyr_tgi.body_reader"

_READ_SIZE = 64 * 1024
# A response head or a chunk's size line (with extensions) or its trailers larger than this ends the exchange:
# h11's own bound in httpcore2.
_MAX_HEAD_BYTES = 100 * 1024
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_UNFINISHED = "peer closed connection without sending complete message body"


class ChunkedReader:
    """HTTP/1.1 chunked transfer coding (RFC 9112 §7.1), decoded incrementally: feed bytes split anywhere.

    `feed` returns the body bytes its input completes; `done` turns True after the last chunk and its trailers
    (ignored, as TGI sends none); `extra` holds any bytes after them (a connection that sends some is not
    reused). Sizes are hexadecimal digits only, a size line ends with CRLF, and a chunk's data is followed by
    CRLF: anything else raises `httpcore2.RemoteProtocolError`.
    """

    __slots__ = ("_buffer", "_left", "_trailers", "done", "extra")

    def __init__(self, start: bytes = b"") -> None:
        self._buffer = start  # bytes received and not yet decoded
        self._left = -1  # data bytes left in the current chunk (-1: a size line is next)
        self._trailers = False  # past the last chunk, reading trailer lines
        self.done = False
        self.extra = b""

    def feed(self, data: bytes) -> bytes:
        """The body bytes `data` completes (b"" when it ends inside a size line or a CRLF)."""
        buffer = self._buffer + data if self._buffer else data
        self._buffer = b""
        if self._left == -1 and not self._trailers:
            # The commonest packet: exactly one whole chunk.
            end = buffer.find(b"\r\n")
            if 0 < end <= 16 and _CHUNK_SIZE.fullmatch(buffer, 0, end):
                size = int(buffer[:end], 16)
                if size and len(buffer) == end + size + 4 and buffer.endswith(b"\r\n"):
                    return buffer[end + 2 : -2]
        return self._decode(buffer)

    def _decode(self, buffer: bytes) -> bytes:
        parts: list[bytes] = []
        at, size = 0, len(buffer)
        while at < size and not self.done:
            if self._trailers:
                end = buffer.find(b"\r\n", at)
                if end == -1:
                    break
                self.done = end == at  # the empty line after the trailer fields
                at = end + 2
            elif self._left == -1:
                end = buffer.find(b"\r\n", at)
                if end == -1:
                    break
                self._left = self._size(buffer[at:end])
                at = end + 2
                if self._left == 0:
                    self._trailers = True
            elif self._left:
                take = min(self._left, size - at)
                parts.append(buffer[at : at + take])
                self._left -= take
                at += take
            else:  # the CRLF after a chunk's data
                if size - at < 2:
                    break
                if buffer[at : at + 2] != b"\r\n":
                    raise httpcore2.RemoteProtocolError("a chunk's data is not followed by CRLF")
                self._left = -1
                at += 2
        rest = buffer[at:]
        if self.done:
            self.extra = rest
        elif len(rest) > _MAX_HEAD_BYTES:
            raise httpcore2.RemoteProtocolError("a chunk's size line or the trailers are too long")
        else:
            self._buffer = rest
        return parts[0] if len(parts) == 1 else b"".join(parts)

    @staticmethod
    def _size(line: bytes) -> int:
        digits = line.split(b";", 1)[0].rstrip(b" \t")  # chunk extensions (and the whitespace before them) ignored
        if not _CHUNK_SIZE.fullmatch(digits):
            raise httpcore2.RemoteProtocolError(f"invalid chunk size line {line[:40]!r}")
        return int(digits, 16)


class _State(enum.Enum):
    NEW = 0
    ACTIVE = 1
    IDLE = 2
    CLOSED = 3


def _protocol_error(exc: h11.ProtocolError) -> httpcore2.ProtocolError:
    if isinstance(exc, h11.RemoteProtocolError):
        return httpcore2.RemoteProtocolError(str(exc))
    return httpcore2.LocalProtocolError(str(exc))


class _Body(abc.ABC):
    """A response body being read: `read()` returns the next bytes, b"" at the end; `close()` ends the exchange."""

    __slots__ = ("_connection", "_finished", "_read_timeout", "_stream")

    def __init__(self, connection: Http11Connection, stream: httpcore2.NetworkStream, read_timeout: float | None):
        self._connection = connection
        self._stream = stream
        self._read_timeout = read_timeout
        self._finished = False  # the whole body was read and the connection may carry another exchange

    @abc.abstractmethod
    def read(self) -> bytes:
        """The next bytes of the body; b"" once it has all been read."""

    def __iter__(self) -> Iterator[bytes]:
        read = self.read
        while data := read():
            yield data

    def close(self) -> None:
        self._connection.exchange_over(reusable=self._finished)


class _ChunkedBody(_Body):
    __slots__ = ("_keep_alive", "_pending", "_reader")

    def __init__(
        self,
        connection: Http11Connection,
        stream: httpcore2.NetworkStream,
        read_timeout: float | None,
        start: bytes,
        keep_alive: bool,
    ) -> None:
        super().__init__(connection, stream, read_timeout)
        self._reader = ChunkedReader()
        self._keep_alive = keep_alive
        self._pending = start  # bytes that came with the head

    def read(self) -> bytes:
        reader = self._reader
        while not reader.done:
            data = self._pending
            if data:
                self._pending = b""
            else:
                data = self._stream.read(_READ_SIZE, self._read_timeout)
                if not data:
                    raise httpcore2.RemoteProtocolError(f"{_UNFINISHED} (incomplete chunked read)")
            body = reader.feed(data)
            if reader.done:
                self._finished = self._keep_alive and not reader.extra
            if body:
                return body
        return b""


class _H11Body(_Body):
    """Any other body (a length, or until the connection closes), read by h11."""

    __slots__ = ("_h11",)

    def __init__(
        self,
        connection: Http11Connection,
        stream: httpcore2.NetworkStream,
        read_timeout: float | None,
        state: h11.Connection,
    ) -> None:
        super().__init__(connection, stream, read_timeout)
        self._h11 = state

    def read(self) -> bytes:
        state = self._h11
        while True:
            try:
                event = state.next_event()
            except h11.ProtocolError as exc:
                raise _protocol_error(exc) from exc
            if event is h11.NEED_DATA:
                state.receive_data(self._stream.read(_READ_SIZE, self._read_timeout))
            elif isinstance(event, h11.Data):
                return bytes(event.data)
            else:  # EndOfMessage (or PAUSED: nothing more for this exchange)
                self._finished = state.our_state is h11.DONE and state.their_state is h11.DONE
                return b""


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
        self._exchanges = 0

    def handle_request(self, request: httpcore2.Request) -> httpcore2.Response:
        if not self.can_handle_request(request.url.origin):
            raise RuntimeError(f"a request to {request.url.origin} on a connection to {self._origin}")
        with self._lock:
            if self._state not in (_State.NEW, _State.IDLE):
                raise httpcore2.ConnectionNotAvailable()
            self._state = _State.ACTIVE
            self._expire_at = None
            self._exchanges += 1
        try:
            timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
            stream = self._stream if self._stream is not None else self._connect(request, timeouts.get("connect"))
            state = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD_BYTES)
            self._send(state, stream, request, timeouts.get("write"))
            head = self._receive_head(state, stream, timeouts.get("read"))
            body = self._body(request, head, state, stream, timeouts.get("read"))
        except BaseException:
            self.close()
            raise
        return httpcore2.Response(
            status=head.status_code,
            headers=head.headers.raw_items(),
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
            context = self._ssl_context if self._ssl_context is not None else httpcore2.default_ssl_context()
            context.set_alpn_protocols(["http/1.1"])
            hostname = request.extensions.get("sni_hostname") or host
            stream = stream.start_tls(context, server_hostname=hostname, timeout=timeout)
            self._stream = stream
        return stream

    @staticmethod
    def _send(
        state: h11.Connection, stream: httpcore2.NetworkStream, request: httpcore2.Request, timeout: float | None
    ) -> None:
        try:
            head = state.send(h11.Request(method=request.method, target=request.url.target, headers=request.headers))
            parts = [head or b""]
            for piece in request.stream:  # type: ignore[union-attr]
                parts.append(state.send(h11.Data(data=piece)) or b"")
            parts.append(state.send(h11.EndOfMessage()) or b"")
        except h11.ProtocolError as exc:
            raise _protocol_error(exc) from exc
        # A server may answer (an error, typically) and close before reading the whole request: read that.
        with contextlib.suppress(httpcore2.WriteError):
            stream.write(b"".join(parts), timeout)

    @staticmethod
    def _receive_head(state: h11.Connection, stream: httpcore2.NetworkStream, timeout: float | None) -> h11.Response:
        while True:
            try:
                event = state.next_event()
            except h11.ProtocolError as exc:
                raise _protocol_error(exc) from exc
            if event is h11.NEED_DATA:
                data = stream.read(_READ_SIZE, timeout)
                if not data and state.their_state is h11.SEND_RESPONSE:
                    raise httpcore2.RemoteProtocolError("Server disconnected without sending a response.")
                state.receive_data(data)
            elif isinstance(event, h11.Response):
                return event
            elif not isinstance(event, h11.InformationalResponse):  # a 1xx is skipped; nothing else comes first
                raise httpcore2.RemoteProtocolError(f"unexpected {type(event).__name__} before the response")

    def _body(
        self,
        request: httpcore2.Request,
        head: h11.Response,
        state: h11.Connection,
        stream: httpcore2.NetworkStream,
        timeout: float | None,
    ) -> _Body:
        has_body = request.method != b"HEAD" and head.status_code not in (204, 304)
        fields = dict(head.headers)  # h11 lower-cases the names
        if has_body and b"transfer-encoding" in fields:  # h11 accepts no other coding than chunked
            keep_alive = head.http_version == b"1.1" and b"close" not in fields.get(b"connection", b"").lower()
            return _ChunkedBody(self, stream, timeout, state.trailing_data[0], keep_alive)
        return _H11Body(self, stream, timeout, state)

    def exchange_over(self, *, reusable: bool) -> None:
        """The response was closed: keep the connection for the next exchange, or close it."""
        if reusable and self._state is _State.ACTIVE:
            with self._lock:
                self._state = _State.IDLE
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
        # An idle connection whose socket is readable is one the server closed (or sent garbage on).
        stream = self._stream
        return self._state is _State.IDLE and stream is not None and bool(stream.get_extra_info("is_readable"))

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

    def create_connection(self, origin: httpcore2.Origin) -> httpcore2.ConnectionInterface:
        return Http11Connection(origin, self._zt_backend, None, self._zt_keepalive_expiry)
