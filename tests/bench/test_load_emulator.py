"""The load generator over real HTTP against emulators whose latencies and capacity are known."""

from __future__ import annotations

import asyncio
import itertools
import statistics

import pytest

from zephyr_tgi import AsyncZephyrClient, RetryPolicy
from zephyr_tgi.bench import (
    SLO,
    BenchPrompt,
    Bounds,
    Concurrent,
    Constant,
    LoadResult,
    Poisson,
    Progress,
    RequestRecord,
    Sweep,
    open_clients,
    run_load,
    run_step,
    synthetic_prompts,
)
from zephyr_tgi.bench._runner import poisson_gaps
from zephyr_tgi.testing import PerformanceModel, TGIEmulator

PROMPTS = [BenchPrompt(content=f"Tell me about rivers, part {i}", max_new_tokens=16) for i in range(4)]


async def test_measured_ttft_and_itl_match_the_configured_latencies(fixed_client: AsyncZephyrClient) -> None:
    step = await run_step(fixed_client, PROMPTS, Concurrent(users=1), bounds=Bounds(max_requests=8))

    assert step.successful == 8
    assert step.ttft is not None
    assert step.itl is not None
    assert step.tpot is not None
    # Configured: 100 ms of prefill to the first token, 20 ms per token after it.
    assert step.ttft.median == pytest.approx(0.100, rel=0.10)
    assert step.ttft.mean == pytest.approx(0.100, rel=0.10)
    assert step.itl.median == pytest.approx(0.020, rel=0.10)
    assert step.tpot.mean == pytest.approx(0.020, rel=0.10)


async def test_concurrent_users_share_the_batch_without_slowing_a_flat_decode(fixed_client: AsyncZephyrClient) -> None:
    step = await run_step(fixed_client, PROMPTS, Concurrent(users=4), bounds=Bounds(max_requests=12))

    assert step.successful == 12
    assert step.itl is not None
    assert step.itl.median == pytest.approx(0.020, rel=0.10)
    assert step.output_tokens_per_second > 2.5 * 16 / (0.1 + 15 * 0.02)  # well above what one user gets


async def test_the_sweep_finds_the_saturation_point_the_model_implies() -> None:
    # Each request reserves 48 prompt + 24 new tokens = 72 of a 288-token budget: 4 fit in a batch. Long
    # answers keep the client's turnaround between requests small next to the time a request takes.
    model = PerformanceModel(
        prefill_base=0.02,
        prefill_per_token=0.0,
        decode_step_base=0.015,
        decode_step_per_sequence=0.0,
        max_batch_total_tokens=288,
    )
    async with (
        TGIEmulator(performance=model, max_input_tokens=128, max_total_tokens=256) as emulator,
        AsyncZephyrClient(emulator.url, retry=RetryPolicy.never(), budget="off") as client,
    ):
        prompts = await synthetic_prompts(client, input_tokens=48, output_tokens=24, count=8)
        assert model.max_batch_size(48 + 24) == 4
        result = await run_load(client, prompts, Sweep(max_users=64), bounds=Bounds(max_requests=16))

    assert result.saturation_users == 4
    assert [step.users for step in result.steps] == [1, 2, 4, 8]  # stopped early, long before 64
    assert result.steps[-1].ttft is not None
    assert result.steps[-2].ttft is not None
    assert result.steps[-1].ttft.median > 2 * result.steps[-2].ttft.median  # the queue shows in TTFT


async def test_an_open_loop_keeps_sending_while_answers_are_slow(fixed_client: AsyncZephyrClient) -> None:
    records: list[RequestRecord] = []
    step = await run_step(fixed_client, PROMPTS, Constant(rate=40), bounds=Bounds(max_requests=10), records=records)

    assert step.requests == 10
    assert step.rate == 40
    starts = sorted(r.started for r in records)
    first_end = min(r.ended for r in records if r.ended is not None)
    assert sum(1 for s in starts if s < first_end) >= 5  # sent without waiting for answers (~0.4 s each)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert statistics.median(gaps) == pytest.approx(1 / 40, abs=0.01)


def test_poisson_arrivals_are_seeded() -> None:
    # The schedule itself: when requests actually start also depends on how busy the machine is, so the
    # realized gaps are measured by benchmarks, not asserted here.
    def schedule(seed: int) -> list[float]:
        gap = poisson_gaps(Poisson(rate=20, seed=seed))
        return [gap() for _ in range(20)]

    assert schedule(7) == schedule(7)
    assert schedule(7) != schedule(8)
    assert len({round(g, 4) for g in schedule(7)}) > 1  # not a constant rate
    assert 0.02 < sum(schedule(7)) / 20 < 0.2  # about 1/rate on average


async def test_a_poisson_level_sends_its_requests(fixed_client: AsyncZephyrClient) -> None:
    records: list[RequestRecord] = []
    await run_step(fixed_client, PROMPTS, Poisson(rate=20, seed=7), bounds=Bounds(max_requests=6), records=records)
    assert len(records) == 6
    starts = [r.started for r in records]
    assert starts == sorted(starts)


async def test_a_level_ends_at_its_duration(fixed_client: AsyncZephyrClient) -> None:
    step = await run_step(fixed_client, PROMPTS, Concurrent(users=2), bounds=Bounds(max_requests=None, max_seconds=1.0))

    assert 2 <= step.requests <= 8  # about 0.4 s a request, two users, one second
    assert step.duration < 2.0


async def test_errors_are_counted_by_class_and_fail_the_slo(
    fixed_emulator: TGIEmulator, fixed_client: AsyncZephyrClient
) -> None:
    fixed_emulator.set_faults(overload_next=3)
    step = await run_step(fixed_client, PROMPTS, Concurrent(users=1), bounds=Bounds(max_requests=6), slo=SLO())

    assert step.errors == {"OverloadedError": 3}
    assert step.successful == 3
    assert not step.meets_slo


async def test_progress_reports_live_tokens_per_second(fixed_client: AsyncZephyrClient) -> None:
    updates: list[Progress] = []
    await run_step(
        fixed_client, PROMPTS, Concurrent(users=2), bounds=Bounds(max_requests=6), on_progress=updates.append
    )

    assert updates
    assert updates[0].label == "2 users"
    assert max(u.tokens_per_second for u in updates) > 20


async def test_cancelling_keeps_what_was_measured(fixed_client: AsyncZephyrClient) -> None:
    saved: list[LoadResult] = []
    done = asyncio.Event()

    def progress(update: Progress) -> None:
        if update.requests_done >= 2:
            done.set()

    task = asyncio.ensure_future(
        run_load(
            fixed_client,
            PROMPTS,
            Concurrent(users=2),
            bounds=Bounds(max_requests=1000),
            on_progress=progress,
            on_step=saved.append,
        )
    )
    await asyncio.wait_for(done.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert saved
    assert saved[-1].interrupted
    step = saved[-1].steps[-1]
    assert step.interrupted
    assert step.successful >= 2


async def test_each_step_states_what_the_generator_itself_spent(fixed_client: AsyncZephyrClient) -> None:
    step = await run_step(fixed_client, PROMPTS, Concurrent(users=1), bounds=Bounds(max_requests=2))

    assert step.client_cpu_seconds is not None
    assert step.client_cpu_seconds > 0
    assert step.client_cpu_share is not None
    assert step.client_cpu_share < 1.0  # mostly waiting for a 20 ms-per-token server


async def test_more_users_than_one_client_pools_all_reach_the_server() -> None:
    # One client's pool holds 100 connections; open_clients spreads 128 users so none queue inside it.
    model = PerformanceModel(prefill_base=0.01, prefill_per_token=0, decode_step_base=0.05)
    async with TGIEmulator(performance=model) as emulator, open_clients(emulator.url, 128) as clients:
        step = await run_step(clients, PROMPTS[:1], Concurrent(users=128), bounds=Bounds(max_requests=128))

    assert len(clients) == 2
    assert step.successful == 128
    assert emulator.stats.max_in_flight == 128
