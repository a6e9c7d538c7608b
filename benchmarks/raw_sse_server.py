"""A cheap TGI-shaped SSE server for measuring the load generator itself (not a TGI emulator).

It answers GET /info with the emulator's document and POST /generate_stream with `--tokens` stream events,
each written on its own (TCP_NODELAY: one event per packet). With `--tick`, a single clock writes the next
event of every open stream once per tick, the way a batched GPU step releases one token per sequence; with
`--tick 0` it writes as fast as the client reads. It parses just enough HTTP/1.1 for keep-alive POSTs.

    python -m benchmarks.raw_sse_server --port 0 --tokens 256 --tick 0.005
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys

_EVENT = (
    b'data:{"index":%d,"token":{"id":%d,"text":" tok","logprob":-0.5,"special":false},'
    b'"generated_text":null,"details":null}\n\n'
)
_LAST = (
    b'data:{"index":%d,"token":{"id":2,"text":"</s>","logprob":-0.1,"special":true},"generated_text":%b,'
    b'"details":{"finish_reason":"eos_token","generated_tokens":%d,"seed":null,"input_length":%d}}\n\n'
)
_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


class Streams:
    """Open streams waiting for their next event, released together once per tick."""

    def __init__(self, tick: float) -> None:
        self.tick = tick
        self.waiting: list[asyncio.Future[None]] = []

    async def next(self) -> None:
        if self.tick <= 0:
            return
        future = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        await future

    async def clock(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            deadline = max(deadline + self.tick, loop.time())
            await asyncio.sleep(deadline - loop.time())
            waiting, self.waiting = self.waiting, []
            for future in waiting:
                if not future.done():
                    future.set_result(None)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, info: bytes, tokens: int,
                 streams: Streams) -> None:  # fmt: skip
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            headers = dict(line.split(": ", 1) for line in header_lines if ": " in line)
            length = int({k.lower(): v for k, v in headers.items()}.get("content-length", "0"))
            if length:
                await reader.readexactly(length)
            if request_line.startswith("GET /info"):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
                             % (len(info), info))  # fmt: skip
                await writer.drain()
                continue
            writer.write(_HEAD)
            for index in range(1, tokens):
                await streams.next()
                writer.write(_chunk(_EVENT % (index, 1000 + index)))
                await writer.drain()
            await streams.next()
            text = json.dumps(" tok" * (tokens - 1)).encode()
            writer.write(_chunk(_LAST % (tokens, text, tokens, 20)) + b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int, tokens: int, tick: float) -> None:
    from zephyr_tgi.testing import TGIEmulator

    info = json.dumps(TGIEmulator().info()).encode()
    streams = Streams(tick)
    server = await asyncio.start_server(lambda r, w: handle(r, w, info, tokens, streams), "127.0.0.1", port,
                                        backlog=1024)  # fmt: skip
    bound = server.sockets[0].getsockname()[1]
    print(f"Listening on http://127.0.0.1:{bound}", flush=True)
    clock = asyncio.ensure_future(streams.clock()) if tick > 0 else None
    async with server:
        await server.serve_forever()
    if clock is not None:
        clock.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--tick", type=float, default=0.0, help="seconds between batched events (0: unpaced)")
    args = parser.parse_args()
    try:
        asyncio.run(main(args.port, args.tokens, args.tick))
    except KeyboardInterrupt:
        sys.exit(0)
