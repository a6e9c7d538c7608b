"""Hostile HTTP servers on 127.0.0.1, for the client's time, memory and parsing contracts.

Each connection gets the request read, then a behaviour writes whatever it likes: keep-alive comments forever,
a body trickled byte by byte, an enormous error page, a line that never ends. Every behaviour loop is bounded
in count and stops when the server closes.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["Conn", "hostile_server", "loopback_server", "read_request", "sse_headers"]


class Conn:
    """One accepted connection, its request read."""

    def __init__(self, sock: socket.socket, request: bytes, stop: threading.Event) -> None:
        self.sock = sock
        self.request = request
        self.stop = stop

    @property
    def path(self) -> str:
        return self.request.split(b" ", 2)[1].decode()

    def send(self, data: bytes) -> bool:
        """Write `data`; False once the client has gone."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def every(self, seconds: float, data: bytes, *, times: int = 10_000) -> None:
        """Write `data` every `seconds` until the client goes, the server stops, or `times` writes."""
        for _ in range(times):
            if self.stop.wait(seconds) or not self.send(data):
                return


def sse_headers() -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n"


def read_request(sock: socket.socket) -> bytes:
    """One request, head and body (by its Content-Length), read from `sock`; b\"\" if the client went first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


@contextmanager
def loopback_server(handle: Callable[[socket.socket, threading.Event], None]) -> Iterator[int]:
    """A server on an OS-assigned loopback port calling `handle(sock, stop)` for each connection, each in a
    thread of its own; yields the port. `stop` is set when the server stops; every thread is joined."""
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    threads: list[threading.Thread] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=handle, args=(sock, stop), daemon=True)
            thread.start()
            threads.append(thread)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        acceptor.join(5)
        listener.close()
        for thread in threads:
            thread.join(5)


@contextmanager
def hostile_server(behaviour: Callable[[Conn], None]) -> Iterator[str]:
    """A server on an OS-assigned loopback port running `behaviour` for each connection; yields its URL."""

    def serve(sock: socket.socket, stop: threading.Event) -> None:
        with sock:
            try:
                request = read_request(sock)
            except OSError:
                return
            if request:
                behaviour(Conn(sock, request, stop))

    with loopback_server(serve) as port:
        yield f"http://127.0.0.1:{port}"
