"""HTTP/1.1 over asyncio streams with h11: keep-alive, Content-Length bodies, chunked streams, resets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import h11

__all__ = ["ClientGone", "HTTPConnection", "HTTPRequest"]

_READ_SIZE = 65536
_NOT_PARSED = object()
_date_cache: tuple[int, bytes] = (0, b"")


def _http_date() -> bytes:
    """The Date header value, recomputed at most once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode("ascii"))
    return _date_cache[1]


class ClientGone(Exception):
    """The client closed or reset the connection while we were writing."""


@dataclass(slots=True)
class HTTPRequest:
    """A fully read request."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    _json: Any = field(default=_NOT_PARSED, repr=False)

    def json_or_none(self) -> Any:
        """The body parsed as JSON, or None when it is not JSON (cached)."""
        if self._json is _NOT_PARSED:
            try:
                self._json = json.loads(self.body) if self.body else None
            except ValueError:
                self._json = None
        return self._json


@dataclass(slots=True)
class TooLarge:
    """The request body exceeded the payload limit."""


class HTTPConnection:
    """One client connection: h11's state machine bound to an asyncio stream pair."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        max_body: int,
        every_response: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._max_body = max_body
        # Headers an outer layer (TGI's CORS layer) adds to every response, errors and streams included.
        self._every_response = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in every_response]
        self._head = False
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        self.closed = False

    @property
    def client_gone(self) -> bool:
        """Whether the transport is closing (client hung up or we aborted)."""
        return self.closed or self._writer.transport.is_closing()

    async def receive(self) -> HTTPRequest | TooLarge | None:
        """The next request, TooLarge (answer 413 and close), or None when the connection is done."""
        method = path = query = ""
        headers: dict[str, str] = {}
        body = bytearray()
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                await self._reject_malformed(exc)
                return None
            if event is h11.NEED_DATA:
                if self._h11.they_are_waiting_for_100_continue:
                    self._writer.write(self._h11.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
                try:
                    data = await self._reader.read(_READ_SIZE)
                except (ConnectionError, OSError):
                    data = b""
                try:
                    self._h11.receive_data(data)
                except h11.RemoteProtocolError as exc:
                    await self._reject_malformed(exc)
                    return None
                continue
            if isinstance(event, h11.Request):
                method = event.method.decode("ascii", "replace")
                self._head = method == "HEAD"
                target = event.target.decode("utf-8", "replace")
                path, _, query = target.partition("?")
                for name, value in event.headers:
                    key = name.decode("latin-1").lower()
                    text = value.decode("latin-1")
                    headers[key] = f"{headers[key]}, {text}" if key in headers else text
                length = headers.get("content-length", "")
                if length.isdigit() and int(length) > self._max_body:
                    return TooLarge()
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self._max_body:
                    return TooLarge()
            elif isinstance(event, h11.EndOfMessage):
                return HTTPRequest(method, path, query, headers, bytes(body))
            else:
                # ConnectionClosed or PAUSED after a protocol switch: nothing more to serve.
                return None

    async def _reject_malformed(self, exc: h11.RemoteProtocolError) -> None:
        """Answer 400 to a malformed request when the protocol still allows it, then close."""
        if self._h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            with contextlib.suppress(ClientGone, h11.LocalProtocolError):
                await self.respond(exc.error_status_hint, b"", [])
        self.close()

    def _headers(self, extra: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
        headers = [(b"date", _http_date()), *self._every_response]
        headers.extend((name.encode("latin-1"), value.encode("latin-1")) for name, value in extra)
        return headers

    def _write(self, data: bytes | None) -> None:
        if self.client_gone:
            raise ClientGone()
        if data:
            self._writer.write(data)

    async def _drain(self) -> None:
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise ClientGone() from exc

    async def respond(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        """A complete response with Content-Length."""
        if status in (204, 304):
            # These statuses cannot carry a body; h11 would refuse one.
            body = b""
        response = h11.Response(
            status_code=status,
            headers=[*self._headers(headers), (b"content-length", str(len(body)).encode("ascii"))],
        )
        out = self._h11.send(response) or b""
        # A HEAD answer keeps the GET answer's Content-Length and drops its body.
        if body and not self._head:
            out += self._h11.send(h11.Data(data=body)) or b""
        out += self._h11.send(h11.EndOfMessage()) or b""
        self._write(out)
        await self._drain()
        self._next_cycle()

    async def start_stream(self, status: int, headers: list[tuple[str, str]]) -> None:
        """Send the head of a chunked response."""
        response = h11.Response(
            status_code=status, headers=[*self._headers(headers), (b"transfer-encoding", b"chunked")]
        )
        self._write(self._h11.send(response))
        await self._drain()

    async def send_chunk(self, data: bytes) -> None:
        """One chunk of a streamed body."""
        # Framed by hand: h11's chunked writer keeps no per-chunk state, and this is the per-token hot path.
        self._write(b"%x\r\n%b\r\n" % (len(data), data))
        await self._drain()

    async def end_stream(self) -> None:
        """The terminating zero-length chunk, then keep-alive bookkeeping."""
        self._write(self._h11.send(h11.EndOfMessage()))
        await self._drain()
        self._next_cycle()

    async def flush(self, timeout: float = 1.0) -> None:
        """Wait until asyncio has handed everything written so far to the kernel."""
        transport = self._writer.transport
        deadline = time.monotonic() + timeout
        # asyncio has no "write buffer empty" event; poll briefly (only before a deliberate reset).
        while transport.get_write_buffer_size() and not transport.is_closing():
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.001)

    def _next_cycle(self) -> None:
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
        else:
            self.close()

    def abort(self) -> None:
        """Reset the connection (RST): SO_LINGER 0, then drop without flushing."""
        if self.closed:
            return
        self.closed = True
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._writer.transport.abort()

    def close(self) -> None:
        """Close gracefully (FIN after pending data)."""
        if self.closed:
            return
        self.closed = True
        self._writer.close()
