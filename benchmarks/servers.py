"""Raw HTTP/1.1 servers for the benchmarks, on 127.0.0.1 with an OS-assigned port, run as their own process.

    python -m benchmarks.servers tgi --events-per-write 1 --pace 0.0005
    python -m benchmarks.servers tgi --events-per-write 64 --pace 0.0005
    python -m benchmarks.servers hostile

`tgi` answers like TGI, from canned answers and at no cost to speak of: `GET /info`, `POST /generate` (an
answer of `max_new_tokens` tokens with details) and `POST /generate_stream`, a token-event stream framed as TGI
frames it (`data: {json}\\n\\n` in chunked transfer encoding), `--events-per-write` events per write, `--pace`
seconds apart; with 1 event per write each event is its own packet (as real TGI sends tokens), with many per
write the client's cost is mostly parsing.

`hostile` serves what a misbehaving gateway or server can send: `POST /generate` answers a 50 MB HTML
502 page, `POST /generate_stream` a 200 stream whose first `data:` line is 40 MB long.

Both print `Listening on http://127.0.0.1:PORT` once bound and exit after `--lifetime` seconds at the latest.
Requests are read with a size cap and an idle timeout, so nothing here waits or grows without bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from http import HTTPStatus
from typing import Any

INFO = {
    "model_id": "TheBloke/zephyr-7B-alpha-GPTQ",
    "model_sha": "f3a15b25b381e21c6888ee01d2ac1d6e8dcffc4a",
    "model_pipeline_tag": "text-generation",
    "max_concurrent_requests": 128,
    "max_best_of": 2,
    "max_stop_sequences": 4,
    "max_input_tokens": 3696,
    "max_total_tokens": 4096,
    "validation_workers": 2,
    "max_client_batch_size": 4,
    "router": "text-generation-router",
    "version": "3.3.6",
    "sha": "db931fcf42da018a3657580c64bf2720f167f9ab",
    "docker_label": None,
}
# Words of a plausible answer, with the ids and logprobs a TGI token event carries.
_WORDS = (
    "GPTQ",
    " is",
    " a",
    " post",
    "-training",
    " quant",
    "isation",
    " method",
    " that",
    " compress",
    "es",
    " the",
    " weights",
    " of",
    " large",
    " language",
    " models",
    " to",
    " 4",
    " bits",
    ",",
    " with",
    " little",
    " loss",
    " of",
    " accuracy",
    ".",
)
ERROR_PAGE_BYTES = 50 * 1024 * 1024
LONG_LINE_BYTES = 40 * 1024 * 1024
_MAX_HEAD = 64 * 1024
_MAX_BODY = 4 * 1024 * 1024
_IDLE = 30.0


def token_events(tokens: int) -> list[bytes]:
    """The `data:` events of a `/generate_stream` answer of `tokens` tokens, as TGI writes them."""
    events: list[bytes] = []
    texts: list[str] = []
    for index in range(1, tokens + 1):
        word = _WORDS[(index - 1) % len(_WORDS)]
        texts.append(word)
        last = index == tokens
        event: dict[str, Any] = {
            "index": index,
            "token": {"id": 1000 + index % 3000, "text": word, "logprob": -0.1 - (index % 7) / 10, "special": False},
            "generated_text": "".join(texts) if last else None,
            "details": {"finish_reason": "length", "generated_tokens": tokens, "seed": None, "input_length": 42}
            if last
            else None,
        }
        events.append(b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n")
    return events


def generate_answer(tokens: int) -> bytes:
    """A `/generate` answer of `tokens` tokens with details, as TGI writes it."""
    listed = [
        {"id": 1000 + index % 3000, "text": _WORDS[(index - 1) % len(_WORDS)], "logprob": -0.1, "special": False}
        for index in range(1, tokens + 1)
    ]
    answer = {
        "generated_text": "".join(str(token["text"]) for token in listed),
        "details": {
            "finish_reason": "length",
            "generated_tokens": tokens,
            "seed": None,
            "prefill": [],
            "tokens": listed,
        },
    }
    return json.dumps(answer, separators=(",", ":")).encode()


def _tokens_asked(body: bytes) -> int:
    tokens = int(json.loads(body).get("parameters", {}).get("max_new_tokens") or 20)
    return max(1, min(tokens, 4096))


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes] | None:
    """(method, path, body) of the next request on the connection; None when the client closed it."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _IDLE)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length > _MAX_BODY:
        return None
    body = await asyncio.wait_for(reader.readexactly(length), _IDLE) if length else b""
    return method, path.split("?", 1)[0], body


class Server:
    """One kind of server; `handle` serves a connection's requests in turn (HTTP/1.1 keep-alive)."""

    def __init__(self, kind: str, events_per_write: int, pace: float) -> None:
        self.kind = kind
        self.events_per_write = events_per_write
        self.pace = pace
        self._streams: dict[int, list[bytes]] = {}
        self._answers: dict[int, bytes] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (request := await _read_request(reader)) is not None:
                method, path, body = request
                if method == "GET" and path == "/info":
                    await self._json(writer, 200, INFO)
                elif method == "POST" and path == "/generate_stream" and self.kind == "tgi":
                    await self._stream(writer, body)
                elif method == "POST" and path == "/generate" and self.kind == "tgi":
                    await self._answer(writer, body)
                elif method == "POST" and path == "/generate" and self.kind == "hostile":
                    await self._error_page(writer)
                    break
                elif method == "POST" and path == "/generate_stream" and self.kind == "hostile":
                    await self._long_line(writer)
                    break
                else:
                    await self._json(writer, 404, {"error": "not found", "error_type": "not_found"})
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _answer(self, writer: asyncio.StreamWriter, body: bytes) -> None:
        tokens = _tokens_asked(body)
        answer = self._answers.get(tokens)
        if answer is None:
            answer = self._answers[tokens] = generate_answer(tokens)
        await self._raw_json(writer, 200, answer)

    async def _json(self, writer: asyncio.StreamWriter, status: int, data: Any) -> None:
        await self._raw_json(writer, status, json.dumps(data).encode())

    async def _raw_json(self, writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
        reason = HTTPStatus(status).phrase.encode()
        writer.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (status, reason, len(body), body)
        )
        await writer.drain()

    async def _stream(self, writer: asyncio.StreamWriter, body: bytes) -> None:
        tokens = _tokens_asked(body)
        events = self._streams.get(tokens)
        if events is None:
            events = self._streams[tokens] = token_events(tokens)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        step = self.events_per_write
        for start in range(0, len(events), step):
            writer.write(_chunk(b"".join(events[start : start + step])))
            await writer.drain()
            if self.pace:
                await asyncio.sleep(self.pace)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def _error_page(self, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html\r\ncontent-length: %d\r\n\r\n" % ERROR_PAGE_BYTES
        )
        piece = (b"<p>upstream  connect error or disconnect/reset before headers</p>\n" * 16384)[: 1024 * 1024]
        sent = 0
        while sent < ERROR_PAGE_BYTES:
            part = piece[: ERROR_PAGE_BYTES - sent]
            writer.write(part)
            await writer.drain()
            sent += len(part)

    async def _long_line(self, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            + _chunk(b'data: {"index":1,"token":{"id":1,"text":"')
        )
        piece = b"a" * (1024 * 1024)
        for _ in range(LONG_LINE_BYTES // len(piece)):
            writer.write(_chunk(piece))
            await writer.drain()
        writer.write(
            _chunk(b'","logprob":0.0,"special":false},"generated_text":null,"details":null}\n\n') + b"0\r\n\r\n"
        )
        await writer.drain()


async def serve(kind: str, events_per_write: int, pace: float, lifetime: float) -> None:
    server = Server(kind, events_per_write, pace)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, limit=_MAX_HEAD)
    port = listener.sockets[0].getsockname()[1]
    print(f"Listening on http://127.0.0.1:{port}", flush=True)
    async with listener:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(listener.serve_forever(), lifetime)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=("tgi", "hostile"))
    parser.add_argument("--events-per-write", type=int, default=1)
    parser.add_argument("--pace", type=float, default=0.0005, help="seconds between writes of a stream")
    parser.add_argument("--lifetime", type=float, default=900.0, help="exit after this many seconds at the latest")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.kind, max(1, args.events_per_write), max(0.0, args.pace), args.lifetime))
    return 0


if __name__ == "__main__":
    sys.exit(main())
