"""The transport's plain TCP reads and writes: `recv` and `send` on a blocking socket, timed by the kernel
(SO_RCVTIMEO, SO_SNDTIMEO).

Over real sockets on 127.0.0.1: the connection is made by the transport's own network backend, the peer is a
socket accepted from a listener. The time bounds are the contract's (a wait ends by its limit, plus slack),
not speed targets.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpcore2
import pytest

from zephyr_tgi._client import transport

pytestmark = pytest.mark.skipif(not transport._KERNEL_TIMED_RECV, reason=f"no kernel-timed receive on {sys.platform}")


@contextmanager
def connected() -> Iterator[tuple[httpcore2.NetworkStream, socket.socket]]:
    """The transport's stream to a local listener, and the listener's end of the connection."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        stream = transport._Backend().connect_tcp("127.0.0.1", port, timeout=5)
        peer, _ = listener.accept()
        try:
            yield stream, peer
        finally:
            peer.close()
            stream.close()


def send_later(peer: socket.socket, data: bytes, after: float) -> threading.Thread:
    def send() -> None:
        time.sleep(after)
        peer.sendall(data)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_a_plain_tcp_connection_is_read_by_the_kernel_timed_stream() -> None:
    with connected() as (stream, peer):
        assert isinstance(stream, transport._SocketStream)
        peer.sendall(b"hello")
        assert stream.read(65536, timeout=2) == b"hello"
        peer.shutdown(socket.SHUT_WR)
        assert stream.read(65536, timeout=2) == b""  # the end of the connection


def test_a_read_with_nothing_to_read_times_out_at_its_timeout() -> None:
    with connected() as (stream, _peer):
        start = time.monotonic()
        with pytest.raises(httpcore2.ReadTimeout):
            stream.read(65536, timeout=0.3)
        assert 0.29 <= time.monotonic() - start < 0.8


@pytest.mark.parametrize("slack", [transport._RECV_TIMEOUT_SLACK, 10.0], ids=["set-anew", "waited-out-again"])
def test_a_shorter_timeout_applied_before_does_not_end_a_longer_wait(
    slack: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With a slack larger than the difference, the short kernel timeout stays in force and expires again and
    # again before the data comes: each early expiry must be checked against the clock, not reported.
    monkeypatch.setattr(transport, "_RECV_TIMEOUT_SLACK", slack)
    with connected() as (stream, peer):
        with pytest.raises(httpcore2.ReadTimeout):
            stream.read(65536, timeout=0.05)
        # The kernel's timeout is still the short one when this wait starts: it is set anew, or waited out again.
        send_later(peer, b"late", after=0.4)
        assert stream.read(65536, timeout=3) == b"late"


def test_the_call_deadline_bounds_a_read_without_a_timeout() -> None:
    with connected() as (stream, _peer):
        token = transport._IO_DEADLINE.set(time.monotonic() + 0.3)
        start = time.monotonic()
        try:
            with pytest.raises(httpcore2.ReadTimeout):
                stream.read(65536, timeout=None)
        finally:
            transport._IO_DEADLINE.reset(token)
        assert 0.29 <= time.monotonic() - start < 0.8


def test_data_that_keeps_coming_does_not_move_the_deadline() -> None:
    with connected() as (stream, peer):
        stop = threading.Event()

        def trickle() -> None:
            while not stop.wait(0.05):
                peer.sendall(b":")

        threading.Thread(target=trickle, daemon=True).start()
        token = transport._IO_DEADLINE.set(time.monotonic() + 0.5)
        start = time.monotonic()
        try:
            with pytest.raises(httpcore2.ReadTimeout):
                read_until_it_fails(stream)
        finally:
            transport._IO_DEADLINE.reset(token)
            stop.set()
        assert 0.49 <= time.monotonic() - start < 1.0


def read_until_it_fails(stream: httpcore2.NetworkStream) -> None:
    while True:
        assert stream.read(65536, timeout=10) != b""


def test_a_read_after_a_write_waits_for_data_instead_of_failing() -> None:
    with connected() as (stream, peer):
        stream.write(b"GET / HTTP/1.1\r\n\r\n", timeout=2)
        assert peer.recv(100).startswith(b"GET /")
        send_later(peer, b"answer", after=0.2)
        assert stream.read(65536, timeout=3) == b"answer"


def test_a_reset_connection_is_a_read_error() -> None:
    with connected() as (stream, peer):
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        peer.close()  # linger 0: the peer resets the connection
        time.sleep(0.05)
        with pytest.raises(httpcore2.ReadError):
            stream.read(65536, timeout=2)


def test_the_pool_still_sees_a_connection_the_server_closed() -> None:
    with connected() as (stream, peer):
        assert not stream.get_extra_info("is_readable")
        peer.close()
        time.sleep(0.05)
        assert stream.get_extra_info("is_readable")  # readable at EOF: the pool drops it instead of reusing it


# Far more than the kernel's send and receive buffers on loopback hold: a write of this to a peer that does not
# read must block.
MORE_THAN_THE_BUFFERS = b"x" * (64 * 1024 * 1024)


def test_a_write_to_a_peer_that_does_not_read_times_out_at_its_timeout() -> None:
    with connected() as (stream, _peer):
        start = time.monotonic()
        with pytest.raises(httpcore2.WriteTimeout):
            stream.write(MORE_THAN_THE_BUFFERS, timeout=0.3)
        assert 0.29 <= time.monotonic() - start < 0.8


def test_the_call_deadline_bounds_a_write_without_a_timeout() -> None:
    with connected() as (stream, _peer):
        token = transport._IO_DEADLINE.set(time.monotonic() + 0.3)
        start = time.monotonic()
        try:
            with pytest.raises(httpcore2.WriteTimeout):
                stream.write(MORE_THAN_THE_BUFFERS, timeout=None)
        finally:
            transport._IO_DEADLINE.reset(token)
        assert 0.29 <= time.monotonic() - start < 0.8


def test_a_peer_that_reads_slowly_cannot_stretch_a_write_past_its_timeout() -> None:
    with connected() as (stream, peer):
        stop = threading.Event()

        def read_slowly() -> None:  # every send makes progress, and each would get a fresh timeout
            while not stop.wait(0.02):
                peer.recv(64 * 1024)

        threading.Thread(target=read_slowly, daemon=True).start()
        start = time.monotonic()
        try:
            with pytest.raises(httpcore2.WriteTimeout):
                stream.write(MORE_THAN_THE_BUFFERS, timeout=0.5)
        finally:
            stop.set()
        assert 0.49 <= time.monotonic() - start < 1.0


def test_a_short_send_timeout_applied_before_does_not_end_a_longer_write_early() -> None:
    with connected() as (stream, peer):
        with pytest.raises(httpcore2.WriteTimeout):
            stream.write(MORE_THAN_THE_BUFFERS, timeout=0.05)
        received = bytearray()

        def drain() -> None:
            time.sleep(0.4)  # after the short timeout would have expired
            while chunk := peer.recv(1024 * 1024):
                received.extend(chunk)
                if received.endswith(b"END"):
                    return

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        stream.write(b"x" * (4 * 1024 * 1024) + b"END", timeout=5)
        reader.join(5)
        assert received.endswith(b"END")


def test_a_reset_connection_is_a_write_error() -> None:
    with connected() as (stream, peer):
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        peer.close()
        time.sleep(0.05)
        with pytest.raises(httpcore2.WriteError):
            write_until_it_fails(stream)


def write_until_it_fails(stream: httpcore2.NetworkStream) -> None:
    for _ in range(100):  # the first send after a reset may still be accepted by the kernel
        stream.write(b"x" * 65536, timeout=2)
