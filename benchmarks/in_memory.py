"""The client's own CPU per streamed token with no socket: what is left when the network is taken away.

    python -m benchmarks.in_memory              # 64 events per packet (the parsing case)
    python -m benchmarks.in_memory --events 1   # one event per packet

Both sides read the same canned TGI stream (`benchmarks.servers.token_events`) from memory, split into packets of
`--events` events: zephyr_tgi through `ZephyrClient.generate_stream` with its transport answering from memory
(the whole call runs: options, limits, the flow, the driver, SSE decoding, typed chunks and the result), the
floor through httpx2's `iter_lines()` and `json.loads` over an in-memory response. They alternate stream by
stream. Warm caches and no system calls: this isolates the Python work, which the socket benchmarks of
`make bench` cannot (there each wake-up after a packet starts with cold caches). A measuring tool, not a test:
it swaps the client's transport through the client's own private `_open` hook.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx2

from benchmarks.servers import INFO, token_events
from zephyr_tgi import ZephyrClient
from zephyr_tgi._client.transport import WireRequest, WireResponse

TOKENS = 256


class _MemoryBody:
    def __init__(self, packets: list[bytes]) -> None:
        self._packets = iter(packets)

    def read(self, until: float | None) -> bytes:
        return next(self._packets, b"")

    def close(self) -> None:
        pass


class _MemoryTransport:
    """Answers `/info` and streams `packets` for any other request, from memory."""

    def __init__(self, packets: list[bytes]) -> None:
        self._packets = packets
        self._info = json.dumps(INFO).encode()

    def send(self, request: WireRequest, until: float | None, *, stream: bool = False) -> WireResponse:
        if request.url.endswith("/info"):
            return WireResponse(200, {}, self._info)
        return WireResponse(200, {}, b"", _MemoryBody(self._packets))

    def close(self) -> None:
        pass


def _client(packets: list[bytes]) -> ZephyrClient:
    class InMemoryClient(ZephyrClient):
        def _open(self) -> None:
            self._transport = _MemoryTransport(packets)  # type: ignore[assignment]
            self._owns_transport = True

    return InMemoryClient("http://127.0.0.1:9")


class _Packets(httpx2.SyncByteStream):
    def __init__(self, packets: list[bytes]) -> None:
        self._packets = packets

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._packets)


def measure(events_per_packet: int, rounds: int) -> dict[str, Any]:
    """Median CPU µs per token of each side over `rounds` alternating streams, and their ratio."""
    events = token_events(TOKENS)
    packets = [b"".join(events[at : at + events_per_packet]) for at in range(0, TOKENS, events_per_packet)]
    client = _client(packets)

    def ours() -> int:
        return sum(1 for _ in client.generate_stream("Hi", max_new_tokens=TOKENS))

    def floor() -> int:
        count = 0
        for line in httpx2.Response(200, stream=_Packets(packets)).iter_lines():
            if line.startswith("data:"):
                json.loads(line[5:])
                count += 1
        return count

    runs: dict[str, list[float]] = {"zephyr_tgi": [], "httpx2 floor": []}
    for name, side in (("zephyr_tgi", ours), ("httpx2 floor", floor)):
        assert side() == TOKENS, name  # and warm up
    for _ in range(rounds):
        for name, side in (("zephyr_tgi", ours), ("httpx2 floor", floor)):
            start = time.process_time()
            side()
            runs[name].append((time.process_time() - start) / TOKENS * 1e6)
    medians = {name: statistics.median(values) for name, values in runs.items()}
    return {**medians, "ratio": medians["zephyr_tgi"] / medians["httpx2 floor"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=64, help="events per packet")
    parser.add_argument("--rounds", type=int, default=2000, help="streams per side")
    args = parser.parse_args(argv)
    result = measure(max(1, args.events), max(1, args.rounds))
    print(
        f"{args.events} events per packet, {TOKENS} tokens, median of {args.rounds} alternating streams: "
        f"zephyr_tgi {result['zephyr_tgi']:.2f} µs CPU / token, httpx2 floor {result['httpx2 floor']:.2f} "
        f"({result['ratio']:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
