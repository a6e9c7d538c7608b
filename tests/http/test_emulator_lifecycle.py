"""Starting, stopping, concurrency limits and stats of the emulator."""

from __future__ import annotations

import asyncio
import json
import time

import httpx2
import pytest

from zephyr_tgi.testing import TGIEmulator

STREAM_BODY = {"inputs": "x", "parameters": {"max_new_tokens": 10}}


def test_start_returns_once_listening_and_stop_is_idempotent() -> None:
    tgi = TGIEmulator().start()
    try:
        assert tgi.listening
        assert tgi.url == f"http://127.0.0.1:{tgi.port}"
        assert httpx2.get(f"{tgi.url}/health", trust_env=False).status_code == 200
    finally:
        tgi.stop()
        tgi.stop()
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(f"{tgi.url}/health", trust_env=False)


def test_stop_without_start_is_harmless() -> None:
    TGIEmulator().stop()


def test_start_twice_is_a_no_op() -> None:
    with TGIEmulator() as tgi:
        port = tgi.port
        assert tgi.start() is tgi
        assert tgi.port == port


def test_a_stopped_emulator_cannot_restart() -> None:
    tgi = TGIEmulator()
    with tgi:
        pass
    with pytest.raises(RuntimeError, match="cannot be restarted"):
        tgi.start()


def _read_two_events_then_stop(http: httpx2.Client, tgi: TGIEmulator) -> None:
    with http.stream("POST", "/generate_stream", json=STREAM_BODY) as response:
        for index, _line in enumerate(response.iter_lines()):
            if index == 1:
                tgi.stop()


def test_stop_closes_streams_in_progress() -> None:
    tgi = TGIEmulator(token_latency=0.3).start()  # the whole stream would take 3 s
    started = time.monotonic()
    with (
        httpx2.Client(base_url=tgi.url, trust_env=False) as http,
        pytest.raises((httpx2.ReadError, httpx2.RemoteProtocolError)),
    ):
        _read_two_events_then_stop(http, tgi)
    assert time.monotonic() - started < 2


async def test_async_context_manager_does_not_block_the_loop() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    async with TGIEmulator() as tgi, httpx2.AsyncClient(base_url=tgi.url, trust_env=False) as http:
        assert (await http.get("/health")).status_code == 200
    task.cancel()
    assert ticks > 1


async def test_more_streams_than_permits_get_the_overloaded_event() -> None:
    async with (
        TGIEmulator(max_concurrent_requests=2, token_latency=0.05) as tgi,
        httpx2.AsyncClient(base_url=tgi.url, trust_env=False, timeout=10) as http,
    ):
        bodies = await asyncio.gather(*(http.post("/generate_stream", json=STREAM_BODY) for _ in range(3)))
        stats = tgi.stats
    first_events = [json.loads(body.content.split(b"\n\n")[0][len(b"data: ") :]) for body in bodies]
    overloaded = [event for event in first_events if event.get("error_type") == "overloaded"]
    assert len(overloaded) == 1
    assert stats.max_in_flight == 2
    assert stats.in_flight == 0
    assert stats.overloaded_total == 1


async def test_more_non_streaming_requests_than_permits_get_429() -> None:
    async with (
        TGIEmulator(max_concurrent_requests=1, token_latency=0.02) as tgi,
        httpx2.AsyncClient(base_url=tgi.url, trust_env=False, timeout=10) as http,
    ):
        responses = await asyncio.gather(*(http.post("/generate", json=STREAM_BODY) for _ in range(2)))
    assert sorted(response.status_code for response in responses) == [200, 429]


def test_a_client_hanging_up_mid_stream_releases_its_permit() -> None:
    with TGIEmulator(max_concurrent_requests=1, token_latency=0.02) as tgi:
        with (
            httpx2.Client(base_url=tgi.url, trust_env=False) as http,
            http.stream("POST", "/generate_stream", json={"inputs": "x"}) as response,
        ):
            next(response.iter_lines())
        deadline = time.monotonic() + 5
        while tgi.stats.in_flight:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert httpx2.post(f"{tgi.url}/generate", json=STREAM_BODY, trust_env=False).status_code == 200


async def test_handles_150_concurrent_streams() -> None:
    limits = httpx2.Limits(max_connections=200, max_keepalive_connections=200)
    async with (
        TGIEmulator(max_concurrent_requests=200, token_latency=0.04) as tgi,
        httpx2.AsyncClient(base_url=tgi.url, trust_env=False, timeout=30, limits=limits) as http,
    ):
        started = time.monotonic()
        responses = await asyncio.gather(*(http.post("/generate_stream", json=STREAM_BODY) for _ in range(150)))
        elapsed = time.monotonic() - started
        stats = tgi.stats
    assert all(response.content.count(b"data: ") == 10 for response in responses)
    assert stats.max_in_flight > 100
    assert elapsed < 10


def test_stats_keep_the_last_1000_requests() -> None:
    with TGIEmulator() as tgi, httpx2.Client(base_url=tgi.url, trust_env=False) as http:
        for _ in range(1005):
            http.get("/health")
        stats = tgi.stats
    assert stats.requests_total == 1005
    assert len(stats.requests) == 1000
    assert stats.requests[0] == stats.requests[-1]
    assert stats.requests[0].method == "GET"
