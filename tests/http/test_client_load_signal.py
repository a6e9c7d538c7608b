"""The engine's load signal in the replica choice, over real HTTP: emulators whose performance model queues the
requests of ANOTHER client (raw httpx requests), so this client's own in-flight counts are equal; and a replica
whose `/metrics` is broken behind a small proxy. Every test runs with the sync and the async client (`kind`)."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.http.conftest import Twin, generation_requests
from zephyr_tgi import Timeout
from zephyr_tgi.testing import TGIEmulator
from zephyr_tgi.testing._performance import PerformanceModel

# One filler request reserves 3,000+ tokens of a 4,096-token batch: one runs, the others wait in the queue.
BATCH = PerformanceModel(max_batch_total_tokens=4096, decode_step_base=0.01)
FILLER = {"inputs": "Tell me a story", "parameters": {"max_new_tokens": 3000}}
FILLERS = 5


def _ours(server: TGIEmulator, path: str) -> int:
    """Requests to `path` sent by a zephyr-tgi client (the fillers and pollers here are plain httpx)."""
    return sum(
        1 for r in server.stats.requests if r.path == path and r.headers.get("user-agent", "").startswith("zephyr")
    )


def _queue(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=5).text
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith("tgi_queue_size "))


@pytest.fixture
def busy_and_idle() -> Iterator[tuple[TGIEmulator, TGIEmulator]]:
    """Two emulators with a batch model; the first has `FILLERS` requests of another client, most queued."""
    busy = TGIEmulator(engine="tgi", performance=BATCH).start()
    idle = TGIEmulator(engine="tgi", performance=BATCH).start()
    fillers = [
        threading.Thread(target=lambda: httpx.post(busy.url + "/generate", json=FILLER, timeout=30))
        for _ in range(FILLERS)
    ]
    for thread in fillers:
        thread.start()
    give_up = time.monotonic() + 10
    while _queue(busy.url) < FILLERS - 2 and time.monotonic() < give_up:
        time.sleep(0.01)
    assert _queue(busy.url) >= FILLERS - 2
    yield busy, idle
    for thread in fillers:
        thread.join(timeout=30)
    busy.stop()
    idle.stop()


async def test_new_calls_go_to_the_replica_without_a_queue(kind: str, busy_and_idle: tuple[TGIEmulator, ...]) -> None:
    busy, idle = busy_and_idle
    # The busy one first: in-flight counts alone (equal, 0) would send the first call there.
    twin = Twin(kind, [busy.url, idle.url], engine="tgi")
    for index in range(4):
        await twin.call("chat", f"Hi {index}", max_new_tokens=4)
    endpoints = twin.client.endpoints
    await twin.close()
    assert len(generation_requests(busy)) == FILLERS  # none of ours
    assert len(generation_requests(idle)) == 4
    # The first call read the busy one's signal (never read: the oldest), the second the idle one's; then
    # both readings are fresh for 5 s: one /metrics per replica.
    assert (_ours(busy, "/metrics"), _ours(idle, "/metrics")) == (1, 1)
    assert endpoints[0].engine_waiting is not None
    assert endpoints[0].engine_waiting >= FILLERS - 2
    assert endpoints[0].engine_waiting_age is not None
    assert 0 <= endpoints[0].engine_waiting_age < 5
    assert endpoints[1].engine_waiting == 0


async def test_without_the_signal_calls_take_turns(kind: str, busy_and_idle: tuple[TGIEmulator, ...]) -> None:
    busy, idle = busy_and_idle
    twin = Twin(kind, [busy.url, idle.url], engine="tgi", load_signal=False)
    for index in range(2):
        await twin.call("chat", f"Hi {index}", max_new_tokens=4)
    endpoints = twin.client.endpoints
    await twin.close()
    assert len(generation_requests(busy)) == FILLERS + 1  # the first call waited in its queue
    assert len(generation_requests(idle)) == 1
    assert _ours(busy, "/metrics") + _ours(idle, "/metrics") == 0
    assert endpoints[0].engine_waiting is None


async def test_health_reads_each_signal_once_per_interval(kind: str, busy_and_idle: tuple[TGIEmulator, ...]) -> None:
    busy, idle = busy_and_idle
    twin = Twin(kind, [busy.url, idle.url], engine="tgi", load_signal=0.5)
    assert await twin.call("health")
    assert await twin.call("health")  # within the interval: no second read
    assert (_ours(busy, "/metrics"), _ours(idle, "/metrics")) == (1, 1)
    waiting = [e.engine_waiting for e in twin.client.endpoints]
    await asyncio.sleep(0.6)
    assert await twin.call("health")
    await twin.close()
    assert (_ours(busy, "/metrics"), _ours(idle, "/metrics")) == (2, 2)
    assert waiting[0] is not None
    assert waiting[0] >= FILLERS - 2
    assert waiting[1] == 0


async def test_one_url_never_reads_the_signal(kind: str, busy_and_idle: tuple[TGIEmulator, ...]) -> None:
    busy, _ = busy_and_idle
    twin = Twin(kind, busy.url, engine="tgi")
    await twin.call("health")
    await twin.call("generate", "Hi", max_new_tokens=2)
    await twin.close()
    assert _ours(busy, "/metrics") == 0


# --- a replica whose /metrics is broken --------------------------------------------------------------------


class _BrokenMetrics(http.server.ThreadingHTTPServer):
    """A proxy to an emulator that forwards every request but `/metrics`, which it answers with `mode`."""

    daemon_threads = True

    def __init__(self, upstream: str, mode: str) -> None:
        self.upstream = upstream
        self.mode = mode
        self.metrics_asked = 0
        self.stopping = threading.Event()
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=5)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _BrokenMetrics

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the test's output is pytest's

    def do_GET(self) -> None:
        if self.path == "/metrics":
            self.server.metrics_asked += 1
            self._broken()
        else:
            self._forward()

    def do_POST(self) -> None:
        self._forward()

    def _broken(self) -> None:
        mode = self.server.mode
        if mode == "slow":
            self.server.stopping.wait(3.0)
            self._answer(200, b"tgi_queue_size 0\n")
        elif mode == "garbage":
            self._answer(200, b"\x00\xff{not prometheus at all\ntgi_queue_size many\n")
        else:
            self._answer(int(mode), b"no metrics here")

    def _forward(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        response = httpx.request(self.command, self.server.upstream + self.path, content=body, headers=headers)
        self._answer(response.status_code, response.content, response.headers.get("content-type"))

    def _answer(self, status: int, body: bytes, content_type: str | None = "text/plain") -> None:
        self.send_response(status)
        if content_type is not None:
            self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(params=["404", "500", "garbage", "slow"])
def broken_and_fine(request: pytest.FixtureRequest) -> Iterator[tuple[_BrokenMetrics, TGIEmulator, TGIEmulator]]:
    """A proxy whose `/metrics` is broken in one way, the emulator behind it, and a fine emulator."""
    behind = TGIEmulator(engine="tgi").start()
    fine = TGIEmulator(engine="tgi").start()
    proxy = _BrokenMetrics(behind.url, str(request.param))
    yield proxy, behind, fine
    proxy.stop()
    behind.stop()
    fine.stop()


async def test_a_replica_with_broken_metrics_is_still_used(
    kind: str, broken_and_fine: tuple[_BrokenMetrics, TGIEmulator, TGIEmulator]
) -> None:
    proxy, behind, fine = broken_and_fine
    # A deadline much shorter than the slow /metrics: the read takes at most a quarter of it, the call the rest.
    twin = Twin(kind, [proxy.url, fine.url], engine="tgi", timeout=Timeout(read=2.0, deadline=1.0))
    elapsed = []
    for index in range(4):
        started = time.monotonic()
        await twin.call("generate", f"Hi {index}", max_new_tokens=2)
        elapsed.append(time.monotonic() - started)
    endpoints = twin.client.endpoints
    await twin.close()
    # By in-flight count (each 0 between calls) and requests sent: they take turns.
    assert (len(generation_requests(behind)), len(generation_requests(fine))) == (2, 2)
    assert proxy.metrics_asked == 1  # once per interval, though it failed
    assert endpoints[0].engine_waiting is None
    assert endpoints[0].healthy
    assert endpoints[0].failures == 0  # a failed read is no failure of the replica
    assert endpoints[1].engine_waiting == 0
    # The call that read the slow /metrics paid at most min(0.25 s, a quarter of its 1 s deadline) for it.
    assert max(elapsed) < 0.25 + 0.5
