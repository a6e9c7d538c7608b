"""The one transport: a per-client httpcore2 connection pool whose every socket wait ends by the call's deadline.

httpx2 applies its read timeout to each socket read, so a server that sends a keep-alive byte now and then
(TGI's SSE comments, a trickled body) would never time out. The pool here runs over a network backend that
clamps every connect, read and write to the instant held in `_IO_DEADLINE`, which the caller sets around each
exchange and each stream read: no byte the server sends can move a deadline. Requests go to the pool directly
(httpx2's client layers cost more per call than the whole flow of a call, and add nothing here); the pools'
connections are `http11`'s. Exceptions of httpx2 and httpcore2 become ours here, at this one boundary, and bodies
are read up to a cap.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpcore2
import httpx2

from .._errors import APIConnectionError, APITimeoutError, ConfigurationError, MalformedResponseError
from .http11 import BODY_READER, AsyncHttp11Pool, Http11Pool

__all__ = [
    "ANSWER_BODY_LIMIT",
    "ERROR_BODY_LIMIT",
    "AsyncStreamBody",
    "AsyncTransport",
    "StreamBody",
    "SyncTransport",
    "WireRequest",
    "WireResponse",
]

# Error pages are previewed and parsed, never needed whole: 64 KiB keeps any real TGI error and bounds a
# 50 MB proxy page. Answers (details and logprobs of thousands of tokens included) stay far below 64 MiB.
ERROR_BODY_LIMIT = 64 * 1024
ANSWER_BODY_LIMIT = 64 * 1024 * 1024

# The monotonic instant by which the current socket operation must be over (None: only httpx2's timeouts).
_IO_DEADLINE: ContextVar[float | None] = ContextVar("zephyr_tgi_io_deadline", default=None)


def _clamp(timeout: float | None, expired: type[httpcore2.TimeoutException]) -> float | None:
    until = _IO_DEADLINE.get()
    if until is None:
        return timeout
    left = until - time.monotonic()
    if left <= 0:
        raise expired("the call's time ran out")
    return left if timeout is None or timeout > left else timeout


class _Stream(httpcore2.NetworkStream):
    __slots__ = ("_inner",)

    def __init__(self, inner: httpcore2.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _clamp(timeout, httpcore2.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _clamp(timeout, httpcore2.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, _clamp(timeout, httpcore2.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


# Where the kernel can time a blocking receive itself (SO_RCVTIMEO answers EAGAIN when it expires).
_KERNEL_TIMED_RECV = sys.platform.startswith("linux") or sys.platform == "darwin"
# A kernel receive timeout may end this much after the instant it stands for before it is set again: setting
# it costs a system call, and a stream's waits all start from nearly the same read timeout.
_RECV_TIMEOUT_SLACK = 0.005
_MAX_RECV_TIMEOUT = 86400.0


class _SocketStream(_Stream):
    """A plain TCP connection whose reads are timed by the kernel on a blocking socket.

    httpcore2's socket stream sets a Python socket timeout on every read, and a socket with a timeout polls
    before each receive: two extra system calls and an exception-mapping context per packet, which a stream
    of one token per packet pays on every token. Here a read is one `recv`, bounded by SO_RCVTIMEO, which is
    set again only when the time left has moved by more than `_RECV_TIMEOUT_SLACK` (an expiry that comes too
    early is checked against the clock and waited out again, never reported). Writes are `send`s bounded by
    SO_SNDTIMEO the same way, except that it is never shorter than the time left (a send that timed out may
    have sent part of its bytes, so it cannot be tried again), and each send of a long write is bounded by
    what is left of the same limit: a server that reads slowly cannot stretch a write past it. TLS and
    everything else go through httpcore2's stream, which shares the socket.
    """

    __slots__ = ("_applied", "_blocking", "_sent_applied", "_sock")

    def __init__(self, inner: httpcore2.NetworkStream, sock: socket.socket) -> None:
        super().__init__(inner)
        self._sock = sock
        self._blocking = False  # whether the socket is in blocking mode (httpcore2 leaves it timed)
        self._applied = 0.0  # the SO_RCVTIMEO in force, in seconds (0: none)
        self._sent_applied = 0.0  # the SO_SNDTIMEO in force, in seconds (0: none)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        sock = self._sock
        while True:
            left = _clamp(timeout, httpcore2.ReadTimeout)
            if not self._blocking:
                sock.settimeout(None)
                self._blocking = True
            wanted = _kernel_timeout(left)
            applied = self._applied
            if applied != wanted and (not wanted or not applied or abs(applied - wanted) > _RECV_TIMEOUT_SLACK):
                self._applied = _set_timeout(sock, socket.SO_RCVTIMEO, wanted)
            try:
                return sock.recv(max_bytes)
            except BlockingIOError:  # SO_RCVTIMEO expired: the time limit passed, or the timeout applied ran short
                if left is not None and left <= self._applied:
                    raise httpcore2.ReadTimeout("timed out") from None
                self._blocking = False  # or the socket was left non-blocking: set it blocking again
            except OSError as exc:
                raise httpcore2.ReadError(str(exc) or type(exc).__name__) from exc

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        sock = self._sock
        view = memoryview(buffer)
        end = None if timeout is None else time.monotonic() + timeout
        while view:
            left = _clamp(None if end is None else end - time.monotonic(), httpcore2.WriteTimeout)
            if left is not None and left <= 0:
                raise httpcore2.WriteTimeout("timed out")
            if not self._blocking:
                sock.settimeout(None)
                self._blocking = True
            wanted = _kernel_timeout(left)
            applied = self._sent_applied
            if applied != wanted and (not wanted or not applied or not 0 < applied - wanted <= _RECV_TIMEOUT_SLACK):
                self._sent_applied = _set_timeout(sock, socket.SO_SNDTIMEO, wanted)
            try:
                view = view[sock.send(view) :]
            except BlockingIOError:  # SO_SNDTIMEO expired: never shorter than the time left, so that time is up
                raise httpcore2.WriteTimeout("timed out") from None
            except OSError as exc:
                raise httpcore2.WriteError(str(exc) or type(exc).__name__) from exc


def _kernel_timeout(left: float | None) -> float:
    """A time limit as a kernel socket timeout (0: none); at least 1 ms, since 0 would mean none."""
    return 0.0 if left is None else min(max(left, 0.001), _MAX_RECV_TIMEOUT)


def _set_timeout(sock: socket.socket, option: int, seconds: float) -> float:
    whole = int(seconds)
    sock.setsockopt(socket.SOL_SOCKET, option, struct.pack("ll", whole, int((seconds - whole) * 1e6)))
    return seconds


class _Backend(httpcore2.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore2.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        timeout = _clamp(timeout, httpcore2.ConnectTimeout)
        inner = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        sock = inner.get_extra_info("socket")
        if _KERNEL_TIMED_RECV and isinstance(sock, socket.socket):  # TLS comes later, through start_tls
            return _SocketStream(inner, sock)
        return _Stream(inner)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.NetworkStream:
        timeout = _clamp(timeout, httpcore2.ConnectTimeout)
        return _Stream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _AsyncStream(httpcore2.AsyncNetworkStream):
    __slots__ = ("_inner",)

    def __init__(self, inner: httpcore2.AsyncNetworkStream) -> None:
        self._inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, _clamp(timeout, httpcore2.ReadTimeout))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, _clamp(timeout, httpcore2.WriteTimeout))

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> Any:
        timeout = _clamp(timeout, httpcore2.ConnectTimeout)
        return _AsyncStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _AsyncBackend(httpcore2.AsyncNetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        timeout = _clamp(timeout, httpcore2.ConnectTimeout)
        return _AsyncStream(await self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.AsyncNetworkStream:
        timeout = _clamp(timeout, httpcore2.ConnectTimeout)
        return _AsyncStream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


_POOL_LIMITS = {"max_connections": 1024, "max_keepalive_connections": 128, "keepalive_expiry": 30.0}
# What httpx2 would add to every request, by lower-cased name (the requests' own headers win).
_DEFAULT_HEADERS = {
    "accept": (b"Accept", b"*/*"),
    "accept-encoding": (b"Accept-Encoding", b"gzip, deflate"),
    "connection": (b"Connection", b"keep-alive"),
}


@functools.lru_cache(maxsize=512)
def _target(url: str) -> tuple[httpcore2.URL, bytes, bytes | None]:
    """A request URL as httpcore2's URL, its Host header, and the Basic credentials of its userinfo, if any
    (httpx2's parsing, once per URL: a client's URLs are its base URLs and a handful of routes)."""
    parsed = httpx2.URL(url)
    core = httpcore2.URL(scheme=parsed.raw_scheme, host=parsed.raw_host, port=parsed.port, target=parsed.raw_path)
    host = parsed.netloc.rpartition(b"@")[2]
    basic = None
    if parsed.username or parsed.password:
        basic = b"Basic " + base64.b64encode(f"{parsed.username}:{parsed.password}".encode())
    return core, host, basic


def _core_request(request: WireRequest) -> httpcore2.Request:
    """The request httpcore2's pool sends: the defaults httpx2 would add, the request's own headers, the
    URL's userinfo as Basic credentials (unless the request carries its own), and the body's length."""
    url, host, basic = _target(request.url)
    given = request.headers
    names = {name.lower() for name in given}
    headers = [(b"Host", host)]
    headers.extend(pair for name, pair in _DEFAULT_HEADERS.items() if name not in names)
    headers.extend((name.encode(), value.encode()) for name, value in given.items())
    if basic is not None and "authorization" not in names:
        headers.append((b"Authorization", basic))
    content = request.content
    if content is not None:
        headers.append((b"Content-Length", b"%d" % len(content)))
    timeout = request.timeout.as_dict()
    return httpcore2.Request(request.method, url, headers=headers, content=content, extensions={"timeout": timeout})


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Response headers by lower-cased name (a repeated header's values joined, as httpx2 joins them)."""
    headers: dict[str, str] = {}
    for name, value in raw:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


def _encoded(headers: Mapping[str, str]) -> bool:
    return headers.get("content-encoding", "identity").strip().lower() not in ("", "identity")


class _BodyStream(httpx2.SyncByteStream):
    """A pool response's body for httpx2's decoders (a compressed body: TGI sends none, a proxy might)."""

    def __init__(self, response: httpcore2.Response) -> None:
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._response.stream)  # type: ignore[arg-type]

    def close(self) -> None:
        self._response.close()


class _AsyncBodyStream(httpx2.AsyncByteStream):
    """The async twin of `_BodyStream`."""

    def __init__(self, response: httpcore2.Response) -> None:
        self._response = response

    def __aiter__(self) -> AsyncIterator[bytes]:
        return aiter(self._response.stream)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        await self._response.aclose()


def _decoded(response: httpcore2.Response, headers: Mapping[str, str]) -> Iterator[bytes]:
    """The body's bytes, through httpx2's decoders when it is compressed."""
    if _encoded(headers):
        return httpx2.Response(response.status, headers=response.headers, stream=_BodyStream(response)).iter_bytes()
    return iter(response.stream)  # type: ignore[arg-type]


def _adecoded(response: httpcore2.Response, headers: Mapping[str, str]) -> AsyncIterator[bytes]:
    """The async twin of `_decoded`."""
    if _encoded(headers):
        wrapped = httpx2.Response(response.status, headers=response.headers, stream=_AsyncBodyStream(response))
        return wrapped.aiter_bytes()
    return aiter(response.stream)  # type: ignore[arg-type]


# --- what the core asks for and gets back -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WireRequest:
    """One HTTP request as the core builds it: nothing here is specific to sync or async."""

    method: str
    url: str
    content: bytes | None
    headers: Mapping[str, str]
    timeout: httpx2.Timeout
    description: str  # "POST /generate": for messages and logs
    shown_url: str | None = None  # with several replicas: the one this goes to (else the transport's URL)

    def with_headers(self, extra: Mapping[str, str]) -> WireRequest:
        """The same request with `extra` headers added, every other field kept (the one place that copies a
        request: written out, as `dataclasses.replace` costs twice as much on every call)."""
        headers = {**self.headers, **extra}
        return WireRequest(self.method, self.url, self.content, headers, self.timeout, self.description, self.shown_url)


@dataclass(frozen=True, slots=True)
class WireResponse:
    """A response whose body was read (up to a cap), or whose body is left to a stream reader."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    stream: Any = None  # a StreamBody / AsyncStreamBody for an open stream


# What httpx2 and its core raise for a failed exchange (the pool here is httpcore2's, whose exceptions reach us
# as themselves: httpx2 maps them only in its own transport).
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    httpx2.HTTPError,
    httpcore2.TimeoutException,
    httpcore2.NetworkError,
    httpcore2.ProtocolError,
    httpcore2.ProxyError,
    httpcore2.UnsupportedProtocol,
)


def _translate(exc: Exception, request: WireRequest, display_url: str) -> APIConnectionError:
    """The transport's exception as ours; the URL shown is the redacted one."""
    where = f"{request.description} to {request.shown_url or display_url}"
    if isinstance(exc, (httpx2.TimeoutException, httpcore2.TimeoutException)):
        return APITimeoutError(f"{where} timed out ({type(exc).__name__})")
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, (httpx2.ConnectError, httpcore2.ConnectError)):
        return APIConnectionError(
            f"{where}: cannot connect ({detail}). Is the server running and is this its URL?", connect_failed=True
        )
    return APIConnectionError(f"{where} failed: {detail}")


def _limit_for(status: int) -> int:
    return ERROR_BODY_LIMIT if status >= 400 else ANSWER_BODY_LIMIT


def _too_large(request: WireRequest) -> MalformedResponseError:
    return MalformedResponseError(
        f"the answer to {request.description} is larger than {ANSWER_BODY_LIMIT // (1024 * 1024)} MiB"
    )


class StreamBody:
    """The body of an open streamed response, read chunk by chunk under a deadline."""

    __slots__ = ("_display_url", "_read", "_request", "_response")

    def __init__(
        self, response: httpcore2.Response, headers: Mapping[str, str], request: WireRequest, display_url: str
    ) -> None:
        self._response = response
        reader = response.extensions.get(BODY_READER)
        if reader is not None and not _encoded(headers):
            self._read: Callable[[], bytes] = reader.read  # the connection's own reader: no generator per packet
        else:
            chunks = _decoded(response, headers)
            self._read = functools.partial(next, chunks, b"")
        self._request = request
        self._display_url = display_url

    def read(self, until: float | None) -> bytes:
        """The next bytes (b"" at the end of the body), by `until`."""
        token = _IO_DEADLINE.set(until)
        try:
            return self._read()
        except TRANSPORT_ERRORS as exc:
            raise _translate(exc, self._request, self._display_url) from exc
        finally:
            _IO_DEADLINE.reset(token)

    def close(self) -> None:
        """Give the connection back (or drop it when the body was not read to its end)."""
        with contextlib.suppress(*TRANSPORT_ERRORS):
            self._response.close()


class AsyncStreamBody:
    """The body of an open streamed response, read chunk by chunk under a deadline (async)."""

    __slots__ = ("_display_url", "_read", "_request", "_response")

    def __init__(
        self, response: httpcore2.Response, headers: Mapping[str, str], request: WireRequest, display_url: str
    ) -> None:
        self._response = response
        reader = response.extensions.get(BODY_READER)
        if reader is not None and not _encoded(headers):
            self._read: Callable[[], Awaitable[bytes]] = reader.read  # the connection's own reader
        else:
            chunks = _adecoded(response, headers)
            self._read = functools.partial(anext, chunks, b"")
        self._request = request
        self._display_url = display_url

    async def read(self, until: float | None) -> bytes:
        """The next bytes (b"" at the end of the body), by `until`."""
        token = _IO_DEADLINE.set(until)
        try:
            return await self._read()
        except TRANSPORT_ERRORS as exc:
            raise _translate(exc, self._request, self._display_url) from exc
        finally:
            _IO_DEADLINE.reset(token)

    async def close(self) -> None:
        """Give the connection back (or drop it when the body was not read to its end)."""
        with contextlib.suppress(*TRANSPORT_ERRORS):
            await self._response.aclose()


def _closed(request: WireRequest) -> ConfigurationError:
    return ConfigurationError(f"{request.description}: the client is closed (make a new one, or use a `with` block)")


def _read_capped(chunks: Iterator[bytes], limit: int) -> tuple[bytes, bool]:
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(parts)[:limit], True
    return b"".join(parts), False


class SyncTransport:
    """The sync client's connection pool (httpcore2's, over `http11`'s connections), owned and closed by the client."""

    def __init__(self, display_url: str) -> None:
        self.display_url = display_url
        self._pool = Http11Pool(_Backend(), **_POOL_LIMITS)
        self.is_closed = False

    def send(self, request: WireRequest, until: float | None, *, stream: bool = False) -> WireResponse:
        """One exchange by `until`; the body is read (capped) unless `stream` and the status is a success."""
        if self.is_closed:
            raise _closed(request)
        token = _IO_DEADLINE.set(until)
        try:
            response = self._pool.handle_request(_core_request(request))
            status, headers = response.status, _headers(response.headers)
            if stream and status < 400:
                return WireResponse(status, headers, b"", StreamBody(response, headers, request, self.display_url))
            try:
                body, truncated = _read_capped(_decoded(response, headers), _limit_for(status))
            finally:
                response.close()
        except TRANSPORT_ERRORS as exc:
            raise _translate(exc, request, self.display_url) from exc
        finally:
            _IO_DEADLINE.reset(token)
        if truncated and status < 400:
            raise _too_large(request)
        return WireResponse(status, headers, body)

    def close(self) -> None:
        """Close the pool: no request goes out after this."""
        self.is_closed = True
        self._pool.close()


class AsyncTransport:
    """The async client's connection pool (httpcore2's, over `http11`'s connections), owned and closed by the client."""

    def __init__(self, display_url: str) -> None:
        self.display_url = display_url
        self._pool = AsyncHttp11Pool(_AsyncBackend(), **_POOL_LIMITS)
        self.is_closed = False

    async def send(self, request: WireRequest, until: float | None, *, stream: bool = False) -> WireResponse:
        """One exchange by `until`; the body is read (capped) unless `stream` and the status is a success."""
        if self.is_closed:
            raise _closed(request)
        token = _IO_DEADLINE.set(until)
        try:
            response = await self._pool.handle_async_request(_core_request(request))
            status, headers = response.status, _headers(response.headers)
            if stream and status < 400:
                body_reader = AsyncStreamBody(response, headers, request, self.display_url)
                return WireResponse(status, headers, b"", body_reader)
            try:
                body, truncated = await _aread_capped(_adecoded(response, headers), _limit_for(status))
            finally:
                await response.aclose()
        except TRANSPORT_ERRORS as exc:
            raise _translate(exc, request, self.display_url) from exc
        finally:
            _IO_DEADLINE.reset(token)
        if truncated and status < 400:
            raise _too_large(request)
        return WireResponse(status, headers, body)

    async def close(self) -> None:
        """Close the pool: no request goes out after this."""
        self.is_closed = True
        await self._pool.aclose()


async def _aread_capped(chunks: AsyncIterator[bytes], limit: int) -> tuple[bytes, bool]:
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(parts)[:limit], True
    return b"".join(parts), False
