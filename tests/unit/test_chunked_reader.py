"""HTTP/1.1 chunked bodies as the sync connection frames them: any split of the bytes gives the same body, and
anything that is not the chunked coding is a protocol error (never a wrong body)."""

from __future__ import annotations

import httpcore2
import pytest

from zephyr_tgi._client.http11_codec import ChunkedReader

BODY = b"data: one\n\ndata: two\n\n" + bytes(range(256)) + b"\r\n\r\n"


def chunked(body: bytes, sizes: list[int], *, end: bytes = b"0\r\n\r\n") -> bytes:
    out, at = b"", 0
    for size in sizes:
        piece = body[at : at + size]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
        at += size
    assert at == len(body)
    return out + end


def decode(wire: bytes, pieces: list[bytes]) -> tuple[bytes, ChunkedReader]:
    reader = ChunkedReader()
    got = b"".join(reader.feed(piece) for piece in pieces)
    assert b"".join(pieces) == wire
    return got, reader


def test_a_body_split_at_every_offset_decodes_to_the_same_bytes() -> None:
    wire = chunked(BODY, [5, 1, 100, len(BODY) - 106])
    for cut in range(len(wire) + 1):
        got, reader = decode(wire, [wire[:cut], wire[cut:]])
        assert got == BODY, cut
        assert reader.done
        assert reader.extra == b""


def test_a_body_fed_one_byte_at_a_time_decodes() -> None:
    wire = chunked(BODY, [7] * (len(BODY) // 7) + [len(BODY) % 7])
    got, reader = decode(wire, [wire[at : at + 1] for at in range(len(wire))])
    assert got == BODY
    assert reader.done


def test_one_whole_chunk_per_packet_is_its_data() -> None:
    reader = ChunkedReader()
    assert reader.feed(b"B\r\nhello world\r\n") == b"hello world"
    assert reader.feed(b"3\r\nabc\r\n0\r\n\r\n") == b"abc"
    assert reader.done


def test_extensions_trailers_and_upper_case_sizes_are_read() -> None:
    wire = b"A;name=value\r\n0123456789\r\n1f ; x\r\n" + b"y" * 31 + b"\r\n0\r\nExpires: never\r\nX: y\r\n\r\n"
    got, reader = decode(wire, [wire])
    assert got == b"0123456789" + b"y" * 31
    assert reader.done


def test_bytes_after_the_end_are_kept_apart() -> None:
    reader = ChunkedReader()
    assert reader.feed(b"2\r\nhi\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n") == b"hi"
    assert reader.done
    assert reader.extra == b"HTTP/1.1 200 OK\r\n"


def test_an_unfinished_body_is_not_done() -> None:
    reader = ChunkedReader()
    assert reader.feed(b"5\r\nhel") == b"hel"
    assert reader.feed(b"lo\r\n0\r\n") == b"lo"
    assert not reader.done


@pytest.mark.parametrize(
    "wire",
    [
        b"zz\r\nhi\r\n",
        b"0x2\r\nhi\r\n",
        b"+2\r\nhi\r\n",
        b" 2\r\nhi\r\n",
        b"\r\nhi\r\n",
        b"2\r\nhiXX0\r\n\r\n",
        b"11111111111111111\r\n",
    ],
    ids=["not-hex", "0x-prefix", "sign", "leading-space", "empty-size", "no-crlf-after-data", "size-too-long"],
)
def test_what_is_not_the_chunked_coding_is_a_protocol_error(wire: bytes) -> None:
    with pytest.raises(httpcore2.RemoteProtocolError):
        ChunkedReader().feed(wire)


def test_a_size_line_that_never_ends_is_bounded() -> None:
    reader = ChunkedReader()
    for _ in range(99):
        assert reader.feed(b"1" * 1024) == b""
    with pytest.raises(httpcore2.RemoteProtocolError, match="too long"):
        reader.feed(b"1" * 2048)
