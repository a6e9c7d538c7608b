"""HTTP/1.1 for a client, sans-I/O (RFC 9112): a request's bytes, a response head, and a chunked body.

The sync connection (`http11.py`) speaks HTTP/1.1 with these instead of h11, whose event and state machinery
costs about 45 µs of Python per exchange and 5 µs per packet of a chunked body: more than everything else a
streamed call does. What a client must get right is kept, strictly: a request is written only from valid
names and values (no CR, LF or NUL can split it); a response head is at most 100 KiB, its status line and
every field are checked, folded lines and a length that is not a number (or two lengths that differ) are
errors; a body is framed as RFC 9112 §6.3 says (none for HEAD, 1xx, 204 and 304; chunked; a length; or to the
connection's end); anything a connection cannot be trusted after ends it. Every error is
`httpcore2.RemoteProtocolError` (the server's fault) or `httpcore2.LocalProtocolError` (ours), which the
transport maps like any other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import httpcore2

__all__ = ["MAX_HEAD_BYTES", "BodyFraming", "ChunkedReader", "HeadReader", "ResponseHead", "encode_request"]

# A response head, a chunk's size line (with extensions) or the trailers larger than this end the exchange
# (httpcore2's bound for h11).
MAX_HEAD_BYTES = 100 * 1024

# Lines end with CRLF; a bare LF is accepted too, as RFC 9112 §2.2 allows and h11 does.
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(rb"\r?\n")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_BAD_VALUE = re.compile(rb"[\x00\r\n]|^[ \t]|[ \t]$")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: ([^\x00\r\n]*))?")
_FIELD = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\x00\r\n]*?)[ \t]*")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_DIGITS = re.compile(rb"[0-9]{1,19}")
_UNFINISHED = "peer closed connection without sending complete message body"


def encode_request(method: bytes, target: bytes, headers: Iterable[tuple[bytes, bytes]], body: bytes) -> bytes:
    """The request's bytes: its line, its fields, a blank line, its body (framed by the caller's
    Content-Length).

    Raises:
        httpcore2.LocalProtocolError: a method, target, name or value that would not be one HTTP message.
    """
    if not _TOKEN.fullmatch(method) or not _TARGET.fullmatch(target):
        raise httpcore2.LocalProtocolError(f"not an HTTP request line: {method[:20]!r} {target[:80]!r}")
    lines = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise httpcore2.LocalProtocolError(f"not a valid header field: {name[:40]!r}")
        lines += (name, b": ", value, b"\r\n")
    lines += (b"\r\n", body)
    return b"".join(lines)


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """A parsed response head and the body framing it implies for its request."""

    http_version: bytes  # b"1.1" or b"1.0"
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]  # as received (names in their own case)
    length: int | None  # the body's length, when framed by one (0: no body)
    chunked: bool
    keep_alive: bool  # whether the connection may carry another exchange after this body


class HeadReader:
    """Gathers bytes until a whole response head (informational 1xx heads skipped) and parses it."""

    __slots__ = ("_buffer", "_head_request")

    def __init__(self, *, head_request: bool = False) -> None:
        self._buffer = b""
        self._head_request = head_request

    def feed(self, data: bytes) -> tuple[ResponseHead, bytes] | None:
        """The head and the bytes after it, once the head is whole; None until then.

        Raises:
            httpcore2.RemoteProtocolError: a head that is not HTTP/1.x, or larger than `MAX_HEAD_BYTES`.
        """
        buffer = self._buffer + data if self._buffer else data
        while True:
            end = _HEAD_END.search(buffer)
            if end is None:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise httpcore2.RemoteProtocolError("the response head is larger than 100 KiB")
                self._buffer = buffer
                return None
            if end.start() > MAX_HEAD_BYTES:
                raise httpcore2.RemoteProtocolError("the response head is larger than 100 KiB")
            head = self._parse(buffer[: end.start()])
            buffer = buffer[end.end() :]
            if head is not None:
                self._buffer = b""
                return head, buffer

    def _parse(self, block: bytes) -> ResponseHead | None:
        lines = _LINE_END.split(block)
        status_line = _STATUS_LINE.fullmatch(lines[0])
        if status_line is None:
            raise httpcore2.RemoteProtocolError(f"illegal status line: {lines[0][:80]!r}")
        minor, code, reason = status_line.groups()
        status = int(code)
        if 100 <= status < 200 and status != 101:
            return None  # an informational answer (100 Continue, 103 Early Hints): the real one follows
        headers: list[tuple[bytes, bytes]] = []
        lengths: set[bytes] = set()
        codings: list[bytes] = []
        connection: list[bytes] = []
        for line in lines[1:]:
            field = _FIELD.fullmatch(line)
            if field is None:
                raise httpcore2.RemoteProtocolError(f"illegal header line: {line[:80]!r}")
            name, value = field.groups()
            headers.append((name, value))
            key = name.lower()
            if key == b"content-length":
                lengths.update(part.strip() for part in value.split(b","))
            elif key == b"transfer-encoding":
                codings.extend(part.strip().lower() for part in value.split(b","))
            elif key == b"connection":
                connection.extend(part.strip().lower() for part in value.split(b","))
        version = b"1." + minor
        keep_alive = version == b"1.1" and b"close" not in connection
        length, chunked = self._framing(status, lengths, codings)
        if length is None and not chunked:
            keep_alive = False  # the body ends with the connection
        return ResponseHead(version, status, reason or b"", headers, length, chunked, keep_alive)

    def _framing(self, status: int, lengths: set[bytes], codings: list[bytes]) -> tuple[int | None, bool]:
        if self._head_request or status in (101, 204, 304):
            return 0, False
        if codings:
            if codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
                raise httpcore2.RemoteProtocolError(f"unsupported Transfer-Encoding {b', '.join(codings)!r}")
            return None, True  # a length beside it is ignored (RFC 9112 §6.3)
        if lengths:
            if len(lengths) != 1 or not _DIGITS.fullmatch(next(iter(lengths))):
                raise httpcore2.RemoteProtocolError(f"invalid Content-Length {b', '.join(sorted(lengths))!r}")
            return int(next(iter(lengths))), False
        return None, False


class ChunkedReader:
    """HTTP/1.1 chunked transfer coding (RFC 9112 §7.1), decoded incrementally: feed bytes split anywhere.

    `feed` returns the body bytes its input completes; `done` turns True after the last chunk and its trailers
    (ignored, as TGI sends none); `extra` holds any bytes after them (a connection that sends some is not
    reused). Sizes are hexadecimal digits only, a size line ends with CRLF, and a chunk's data is followed by
    CRLF: anything else raises `httpcore2.RemoteProtocolError`.
    """

    __slots__ = ("_buffer", "_left", "_trailers", "done", "extra")

    def __init__(self) -> None:
        self._buffer = b""  # bytes received and not yet decoded
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
        elif len(rest) > MAX_HEAD_BYTES:
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


class BodyFraming:
    """Where a response's body ends, as its head framed it: `take` what the connection delivers (b"" when the
    connection ended), get the body's bytes; `done` once the body is whole, `reusable` if the connection may
    carry another exchange then (nothing came after the body, and the answer did not end the connection).

    Raises (from `take`):
        httpcore2.RemoteProtocolError: the connection ended before the body did, or a chunk is malformed.
    """

    __slots__ = ("_chunks", "_expected", "_keep_alive", "_left", "done", "reusable")

    def __init__(self, head: ResponseHead, start: bytes) -> None:
        self._keep_alive = head.keep_alive
        self._chunks = ChunkedReader() if head.chunked else None
        self._expected = self._left = head.length  # None: until the connection ends (or chunked)
        self.done = head.length == 0
        self.reusable = self.done and head.keep_alive and not start

    def take(self, data: bytes) -> bytes:
        """The body's bytes in `data` (b"": the connection ended)."""
        chunks = self._chunks
        if chunks is not None:
            if not data:
                raise httpcore2.RemoteProtocolError(f"{_UNFINISHED} (incomplete chunked read)")
            body = chunks.feed(data)
            if chunks.done:
                self.done = True
                self.reusable = self._keep_alive and not chunks.extra
            return body
        left = self._left
        if left is None:
            self.done = not data
            return data
        if not data:
            received = (self._expected or 0) - left
            raise httpcore2.RemoteProtocolError(f"{_UNFINISHED}: received {received} bytes, expected {self._expected}")
        if len(data) < left:
            self._left = left - len(data)
            return data
        self._left = 0
        self.done = True
        self.reusable = self._keep_alive and len(data) == left
        return data[:left]
