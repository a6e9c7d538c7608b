"""One load level shared by worker processes: the shares add up, and the merged records measure the same."""

from __future__ import annotations

import asyncio

import pytest

from zephyr_tgi import AsyncZephyrClient, ConfigurationError
from zephyr_tgi.bench import BenchPrompt, Bounds, Concurrent, Constant, Poisson, Progress, RequestRecord, run_load
from zephyr_tgi.bench._workers import run_step_in_processes, split_profile
from zephyr_tgi.testing import TGIEmulator

PROMPTS = [BenchPrompt(content=f"Shared load, part {i}", max_new_tokens=12) for i in range(3)]


def test_users_and_rates_are_shared_out() -> None:
    assert split_profile(Concurrent(users=7), 3) == [Concurrent(users=3), Concurrent(users=2), Concurrent(users=2)]
    assert split_profile(Constant(rate=9), 3) == [Constant(rate=3)] * 3
    poisson = split_profile(Poisson(rate=10, seed=1), 2)
    assert all(isinstance(p, Poisson) for p in poisson)
    assert [p.model_dump() for p in poisson] == [
        {"kind": "poisson", "rate": 5, "seed": 1000},
        {"kind": "poisson", "rate": 5, "seed": 1001},
    ]
    with pytest.raises(ConfigurationError, match="2 users cannot be shared by 3"):
        split_profile(Concurrent(users=2), 3)


async def test_two_processes_measure_what_one_does(fixed_emulator: TGIEmulator) -> None:
    updates: list[Progress] = []
    step = await run_step_in_processes(
        fixed_emulator.url, PROMPTS, Concurrent(users=2), processes=2, bounds=Bounds(max_requests=6),
        on_progress=updates.append,
    )  # fmt: skip

    assert step.successful == 6
    assert step.users == 2
    assert step.itl is not None
    assert step.itl.median == pytest.approx(0.020, rel=0.10)
    assert fixed_emulator.stats.connections_total >= 2  # one client per process
    assert any(u.label == "2 users in 2 processes" for u in updates)


async def test_run_load_uses_processes_for_every_step(fixed_client: AsyncZephyrClient) -> None:
    result = await run_load(fixed_client, PROMPTS, Concurrent(users=2), bounds=Bounds(max_requests=4), processes=2)

    assert result.steps[0].successful == 4


async def test_cancelling_collects_what_the_workers_measured(fixed_emulator: TGIEmulator) -> None:
    records: list[RequestRecord] = []
    seen = asyncio.Event()

    def progress(update: Progress) -> None:
        if update.requests_done >= 2:
            seen.set()

    task = asyncio.ensure_future(
        run_step_in_processes(
            fixed_emulator.url,
            PROMPTS,
            Concurrent(users=2),
            processes=2,
            bounds=Bounds(max_requests=10_000, drain_seconds=10),
            on_progress=progress,
            records=records,
        )
    )
    await asyncio.wait_for(seen.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    finished = [r for r in records if r.ok]
    assert len(finished) >= 2
    assert all(r.ended is not None for r in records)  # under way at the stop, then finished (drained)
