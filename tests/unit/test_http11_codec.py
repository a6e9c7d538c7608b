"""The sync connection's HTTP/1.1 codec: requests are written only when they are one valid message; response
heads are parsed from bytes split anywhere, framed as RFC 9112 §6.3 says, and refused when they are not HTTP."""

from __future__ import annotations

import httpcore2
import pytest

from zephyr_tgi._client.http11_codec import MAX_HEAD_BYTES, BodyFraming, HeadReader, ResponseHead, encode_request

HEADERS = [(b"Host", b"127.0.0.1:8080"), (b"Content-Length", b"2"), (b"x-empty", b"")]


def test_a_request_is_its_line_fields_blank_line_and_body() -> None:
    assert encode_request(b"POST", b"/generate?x=1", HEADERS, b"{}") == (
        b"POST /generate?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: 2\r\nx-empty: \r\n\r\n{}"
    )


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        (b"PO ST", b"/", []),
        (b"POST", b"/a b", []),
        (b"POST", b"/\r\nX: y", []),
        (b"POST", b"", []),
        (b"POST", b"/", [(b"bad name", b"v")]),
        (b"POST", b"/", [(b"", b"v")]),
        (b"POST", b"/", [(b"x", b"one\r\nInjected: yes")]),
        (b"POST", b"/", [(b"x", b"nul\x00")]),
        (b"POST", b"/", [(b"x", b" leading space")]),
    ],
)
def test_what_would_not_be_one_message_is_refused(
    method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    with pytest.raises(httpcore2.LocalProtocolError):
        encode_request(method, target, headers, b"")


def parse(wire: bytes, *, head_request: bool = False) -> tuple[ResponseHead, bytes]:
    parsed = HeadReader(head_request=head_request).feed(wire)
    assert parsed is not None
    return parsed


def test_a_head_split_at_every_offset_parses_the_same() -> None:
    wire = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    whole = parse(wire)
    for cut in range(len(wire)):
        reader = HeadReader()
        first = reader.feed(wire[:cut])
        got = first if first is not None else reader.feed(wire[cut:])
        assert got is not None, cut
        head, rest = got
        assert head == whole[0]
        assert (rest if first is None else rest + wire[cut:]) == b"5\r\nhello\r\n"


def test_fields_keep_their_case_and_values_lose_surrounding_whitespace() -> None:
    head, rest = parse(b"HTTP/1.1 201 Created\r\nX-Request-Id:  abc \r\nEmpty:\r\nContent-Length: 0\r\n\r\n")
    assert head.status == 201
    assert head.reason == b"Created"
    assert head.headers == [(b"X-Request-Id", b"abc"), (b"Empty", b""), (b"Content-Length", b"0")]
    assert head.length == 0
    assert head.keep_alive
    assert rest == b""


def test_lines_ended_by_a_bare_lf_are_read_as_h11_reads_them() -> None:
    head, rest = parse(b"HTTP/1.1 200 OK\nContent-Length: 2\r\nX: y\n\nhi")
    assert head.headers == [(b"Content-Length", b"2"), (b"X", b"y")]
    assert head.length == 2
    assert rest == b"hi"


def test_informational_heads_are_skipped() -> None:
    head, rest = parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\nHTTP/1.1 204 No\r\n\r\n")
    assert head.status == 204
    assert head.length == 0
    assert rest == b""


@pytest.mark.parametrize(
    ("wire", "length", "chunked", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", 12, False, True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 12, 12\r\nContent-Length: 12\r\n\r\n", 12, False, True),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", None, True, True),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n", None, True, True),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: Close\r\n\r\n", None, True, False),
        (b"HTTP/1.1 200 OK\r\n\r\n", None, False, False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n", 3, False, False),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", 0, False, True),
        (b"HTTP/1.1 204 No Content\r\n\r\n", 0, False, True),
        (b"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n", 1, False, True),
    ],
    ids=[
        "length",
        "repeated-length",
        "chunked",
        "codings-then-chunked",
        "close",
        "to-the-end",
        "http-1.0",
        "304",
        "204",
        "no-reason",
    ],
)
def test_the_body_is_framed_as_rfc_9112_says(wire: bytes, length: int | None, chunked: bool, keep_alive: bool) -> None:
    head, _ = parse(wire)
    assert (head.length, head.chunked, head.keep_alive) == (length, chunked, keep_alive)


def test_the_answer_to_a_head_request_has_no_body() -> None:
    head, _ = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n", head_request=True)
    assert head.length == 0


@pytest.mark.parametrize(
    "wire",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
    ],
    ids=[
        "http-2",
        "not-http",
        "status-digits",
        "no-colon",
        "name-space",
        "obs-fold",
        "two-lengths",
        "negative-length",
        "hex-length",
        "not-chunked",
        "chunked-twice",
    ],
)
def test_what_is_not_an_http_1_head_is_a_protocol_error(wire: bytes) -> None:
    with pytest.raises(httpcore2.RemoteProtocolError):
        HeadReader().feed(wire)


def test_a_head_that_never_ends_is_bounded() -> None:
    reader = HeadReader()
    assert reader.feed(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * (MAX_HEAD_BYTES // 6 - 10)) is None
    with pytest.raises(httpcore2.RemoteProtocolError, match="larger than 100 KiB"):
        reader.feed(b"X: y\r\n" * 100)


def framing(wire: bytes) -> tuple[BodyFraming, bytes]:
    head, start = parse(wire)
    return BodyFraming(head, start), start


def test_a_length_body_ends_at_its_length_and_bytes_after_it_forbid_reuse() -> None:
    body, start = framing(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel")
    assert body.take(start) == b"hel"
    assert not body.done
    assert body.take(b"lo") == b"lo"
    assert body.done
    assert body.reusable
    extra, start = framing(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
    assert extra.take(b"hiHTTP/1.1") == b"hi"
    assert extra.done
    assert not extra.reusable


def test_an_empty_body_followed_by_bytes_forbids_reuse() -> None:
    clean, _ = framing(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert clean.done
    assert clean.reusable
    dirty, start = framing(b"HTTP/1.1 204 No Content\r\n\r\nstray")
    assert start == b"stray"
    assert dirty.done
    assert not dirty.reusable


def test_a_body_until_the_close_ends_with_the_connection_and_is_never_reused() -> None:
    body, _ = framing(b"HTTP/1.0 200 OK\r\n\r\n")
    assert body.take(b"abc") == b"abc"
    assert not body.done
    assert body.take(b"") == b""
    assert body.done
    assert not body.reusable


@pytest.mark.parametrize(
    "wire",
    [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"],
    ids=["length", "chunked"],
)
def test_a_body_cut_short_by_the_connection_is_a_protocol_error(wire: bytes) -> None:
    body, _ = framing(wire)
    body.take(b"ab" if b"Length" in wire else b"2\r\nab\r\n")
    with pytest.raises(httpcore2.RemoteProtocolError, match="complete message body"):
        body.take(b"")
