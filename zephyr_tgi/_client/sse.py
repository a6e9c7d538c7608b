"""Server-sent events: the data of each event, from the raw bytes of a response.

Lines are split on `\\n` (a trailing `\\r` is dropped) at the byte level, as the SSE specification
says, and not with `str.splitlines()`: that would also split on U+0085, U+2028 and friends, which TGI
writes raw inside JSON strings, and so cut a token's event in two. TGI writes `data:{json}` with no
space after the colon (axum); `data: {json}` is accepted too. Comment lines (`:` keep-alives) and other
fields are ignored, and an event cut off by the end of the stream is dropped.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator

__all__ = ["DONE", "SSEDecoder", "aiter_sse_data", "iter_sse_data"]

DONE = "[DONE]"


class SSEDecoder:
    """Incremental decoder: feed byte chunks split anywhere, get the data of each complete event."""

    __slots__ = ("_parts", "_tail")

    def __init__(self) -> None:
        self._tail = b""
        self._parts: list[bytes] = []

    def feed(self, chunk: bytes) -> list[str]:
        """Consume a chunk; return the data of the events it completed."""
        lines = (self._tail + chunk).split(b"\n") if self._tail else chunk.split(b"\n")
        self._tail = lines.pop()
        events: list[str] = []
        parts = self._parts
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if parts:
                    events.append((parts[0] if len(parts) == 1 else b"\n".join(parts)).decode("utf-8", "replace"))
                    parts.clear()
            elif line.startswith(b"data:"):
                parts.append(line[6:] if line[5:6] == b" " else line[5:])
        return events


def iter_sse_data(chunks: Iterable[bytes]) -> Iterator[str]:
    """Yield the data of each complete event."""
    decoder = SSEDecoder()
    for chunk in chunks:
        yield from decoder.feed(chunk)


async def aiter_sse_data(chunks: AsyncIterable[bytes]) -> AsyncIterator[str]:
    """Yield the data of each complete event (async twin of `iter_sse_data`)."""
    decoder = SSEDecoder()
    async for chunk in chunks:
        for data in decoder.feed(chunk):
            yield data
