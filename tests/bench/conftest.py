"""Fixtures for the bench tests: emulators with a performance model, and clients that never retry."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from zephyr_tgi import AsyncZephyrClient, RetryPolicy
from zephyr_tgi.testing import PerformanceModel, TGIEmulator

# 100 ms to the first token and 20 ms per token after it, whatever the batch: the latencies the tests expect.
FIXED = PerformanceModel(
    prefill_base=0.100, prefill_per_token=0.0, decode_step_base=0.020, decode_step_per_sequence=0.0
)


@pytest.fixture
def fixed_emulator() -> Iterator[TGIEmulator]:
    with TGIEmulator(performance=FIXED) as emulator:
        yield emulator


@pytest.fixture
async def fixed_client(fixed_emulator: TGIEmulator) -> AsyncIterator[AsyncZephyrClient]:
    async with AsyncZephyrClient(fixed_emulator.url, retry=RetryPolicy.never(), budget="off") as client:
        yield client
