"""Fixtures for client tests over real loopback HTTP against the in-process TGI emulator.

Every client test runs twice, with `ZephyrClient` and with `AsyncZephyrClient`, from one body: the
`twin` fixture gives an adapter whose methods are awaited either way (the sync client runs in a thread).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import pytest

from zephyr_tgi import AsyncZephyrClient, RetryPolicy, ZephyrClient
from zephyr_tgi.testing import TGIEmulator

FAST_RETRY = RetryPolicy(max_attempts=4, initial_delay=0.01, max_delay=0.05)


class Twin:
    """One test body, either client: `await twin.call("chat", ...)`, `await twin.stream("chat_stream", ...)`."""

    def __init__(self, kind: str, url: str | list[str], **kwargs: Any) -> None:
        self.kind = kind
        kwargs.setdefault("retry", FAST_RETRY)
        self.client: ZephyrClient | AsyncZephyrClient = (
            ZephyrClient(url, **kwargs) if kind == "sync" else AsyncZephyrClient(url, **kwargs)
        )

    async def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self.client, name)
        if self.kind == "sync":
            return await asyncio.to_thread(method, *args, **kwargs)
        return await method(*args, **kwargs)

    async def stream(self, name: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Collect a whole stream (chat_stream, generate_stream, or chat_completion with stream=True)."""
        method = getattr(self.client, name)
        if self.kind == "sync":
            return await asyncio.to_thread(lambda: list(method(*args, **kwargs)))
        iterator = method(*args, **kwargs)
        if asyncio.iscoroutine(iterator):
            iterator = await iterator
        return [item async for item in iterator]

    async def stream_until_error(self, name: str, *args: Any, **kwargs: Any) -> tuple[list[Any], BaseException]:
        """Collect a stream's items until it raises; return the items and the error."""
        items: list[Any] = []
        method = getattr(self.client, name)
        if self.kind == "sync":

            def run() -> BaseException:
                try:
                    for item in method(*args, **kwargs):
                        items.append(item)
                except Exception as exc:  # the test inspects whatever was raised
                    return exc
                raise AssertionError("the stream ended without an error")

            return items, await asyncio.to_thread(run)
        try:
            async for item in method(*args, **kwargs):
                items.append(item)
        except Exception as exc:  # the test inspects whatever was raised
            return items, exc
        raise AssertionError("the stream ended without an error")

    async def close(self) -> None:
        if isinstance(self.client, AsyncZephyrClient):
            await self.client.close()
        else:
            self.client.close()


@pytest.fixture(scope="module")
def tgi() -> Iterator[TGIEmulator]:
    """One emulator per test module, for the emulator's own tests (they reset it through `http`)."""
    with TGIEmulator() as emulator:
        yield emulator


@pytest.fixture
def http(tgi: TGIEmulator) -> Iterator[httpx2.Client]:
    """A plain httpx2 client for `tgi`, after resetting its faults and counters."""
    tgi.reset()
    with httpx2.Client(base_url=tgi.url, timeout=10, trust_env=False) as client:
        yield client


@pytest.fixture
def emulator() -> Iterator[TGIEmulator]:
    """A fresh emulator on an ephemeral loopback port."""
    with TGIEmulator() as server:
        yield server


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    """Which client a test runs with."""
    return str(request.param)


@pytest.fixture
async def twin(kind: str, emulator: TGIEmulator) -> AsyncIterator[Twin]:
    """The client of `kind`, connected to `emulator`."""
    client = Twin(kind, emulator.url)
    yield client
    await client.close()


def generation_requests(emulator: TGIEmulator) -> list[Any]:
    """The generation requests the emulator received (info, health and admin calls left out)."""
    return [
        r for r in emulator.stats.requests if r.path in ("/", "/generate", "/generate_stream", "/v1/chat/completions")
    ]
