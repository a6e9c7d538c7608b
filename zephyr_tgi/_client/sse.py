"""Server-sent events: the data of each event, from the raw bytes of a response, in linear time.

Lines are split on `\\n` (a trailing `\\r` is dropped) at the byte level, as the SSE specification says, and
not with `str.splitlines()`: that would also split on U+0085, U+2028 and friends, which TGI writes raw inside
JSON strings, and so cut a token's event in two. TGI (axum) writes `data: {json}`; `data:{json}` is accepted
too. Comment lines (`:` keep-alives) and other fields are ignored. A line is gathered from the chunks it spans
in one join when it ends, never re-joined per chunk, and a line longer than `max_line` ends the stream with
`MalformedResponseError` instead of growing without bound.
"""

from __future__ import annotations

import re

from .._errors import MalformedResponseError

__all__ = ["DONE", "MAX_LINE_BYTES", "SSEDecoder"]

DONE = "[DONE]"
_SIMPLE_EVENTS = re.compile(rb"(?:data: [^\n]*\n\n)+")
_SIMPLE_DATA = re.compile(rb"data: ([^\n]*)\n\n")
# A TGI event holds one token (with top tokens, at most a few KiB); the final one the whole text and details.
MAX_LINE_BYTES = 16 * 1024 * 1024


class SSEDecoder:
    """Incremental decoder: feed byte chunks split anywhere, get the data of each complete event."""

    __slots__ = ("_max_line", "_partial", "_partial_size", "_parts")

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._partial: list[bytes] = []  # pieces of the line not yet ended
        self._partial_size = 0
        self._parts: list[bytes] = []  # data lines of the event not yet ended
        self._max_line = max_line

    def feed(self, chunk: bytes) -> list[bytes]:
        """Consume a chunk; return the data of the events it completed (UTF-8 bytes)."""
        # `13 in chunk` (b"\r"): an int is found by memchr, several times faster than the bytes search.
        if self._partial or self._parts or 13 in chunk:
            return self._feed_lines(chunk)
        # Whole `data: ` events and nothing else, the commonest chunk of all (TGI writes each token's event in
        # its own packet, and a busy connection delivers several at once): a few bytes methods in C. Split on
        # the separators, the pieces are the events' data exactly when the chunk holds no other newline.
        if chunk.startswith(b"data: ") and chunk.endswith(b"\n\n") and len(chunk) <= self._max_line:
            events = chunk[6:-2].split(b"\n\ndata: ")
            if chunk.count(b"\n") == 2 * len(events):
                return events
        # Between events, with `\n` framing (TGI's): whole events are the blocks between blank lines. When all
        # of them are single `data: ` lines (TGI's token events), one regular-expression pass takes them all;
        # what follows the last blank line is an event still arriving, left to the line reader.
        end = chunk.rfind(b"\n\n") + 2
        if end > 1 and end <= self._max_line and _SIMPLE_EVENTS.fullmatch(chunk, 0, end):
            events = _SIMPLE_DATA.findall(chunk, 0, end)
            if end < len(chunk):
                events.extend(self._feed_lines(chunk[end:]))
            return events
        blocks = chunk.split(b"\n\n")
        rest = blocks.pop()
        events = []
        for block in blocks:
            if len(block) > self._max_line:
                raise self._too_long()
            if block.startswith(b"data: ") and b"\n" not in block:
                events.append(block[6:])
            elif block:
                data = _block_data(block)
                if data is not None:
                    events.append(data)
        if rest:
            events.extend(self._feed_lines(rest))
        return events

    def _feed_lines(self, chunk: bytes) -> list[bytes]:
        """The general reader: line by line, any framing, any state."""
        if b"\n" not in chunk:
            self._keep(chunk)
            return []
        lines = chunk.split(b"\n")
        last = lines.pop()
        if self._partial:
            self._partial.append(lines[0])
            lines[0] = b"".join(self._partial)
            self._partial.clear()
            self._partial_size = 0
        events: list[bytes] = []
        parts = self._parts
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if parts:
                    events.append(parts[0] if len(parts) == 1 else b"\n".join(parts))
                    parts.clear()
            elif line.startswith(b"data:"):
                if len(line) > self._max_line:
                    raise self._too_long()
                parts.append(line[6:] if line[5:6] == b" " else line[5:])
        if last:
            self._keep(last)
        return events

    def _keep(self, piece: bytes) -> None:
        self._partial.append(piece)
        self._partial_size += len(piece)
        if self._partial_size > self._max_line:
            raise self._too_long()

    def _too_long(self) -> MalformedResponseError:
        return MalformedResponseError(
            f"the server sent a stream line longer than {self._max_line // (1024 * 1024)} MiB; the stream was ended"
        )


def _block_data(block: bytes) -> bytes | None:
    """The data of one whole event (its lines without the blank line that ended it), or None if it has none."""
    parts = [line[6:] if line[5:6] == b" " else line[5:] for line in block.split(b"\n") if line.startswith(b"data:")]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else b"\n".join(parts)
