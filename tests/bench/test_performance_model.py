"""The emulator's performance model: its formulas, its checks, its flags, and the batch scheduler's queue."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from zephyr_tgi.testing import PerformanceModel, TGIEmulator
from zephyr_tgi.testing._cli import ArgumentValidationError, _performance_model, parse_arguments
from zephyr_tgi.testing._performance import BatchScheduler


def test_prefill_grows_with_the_prompt_and_decode_with_the_batch() -> None:
    model = PerformanceModel(prefill_base=0.01, prefill_per_token=0.001, decode_step_base=0.02,
                             decode_step_per_sequence=0.002)  # fmt: skip

    assert model.prefill_seconds(100) == pytest.approx(0.11)
    assert model.decode_step_seconds(1) == pytest.approx(0.02)
    assert model.decode_step_seconds(11) == pytest.approx(0.04)
    assert model.decode_tokens_per_second(11) == pytest.approx(11 / 0.04)


def test_the_budget_decides_how_many_requests_share_a_batch() -> None:
    model = PerformanceModel(max_batch_total_tokens=1000)

    assert model.max_batch_size(250) == 4
    assert model.max_batch_size(5000) == 1


def test_the_defaults_are_shaped_like_a_7b_4bit_model_on_a_mid_range_gpu() -> None:
    model = PerformanceModel()

    assert 40 <= model.decode_tokens_per_second(1) <= 80  # one user reads 40-80 tokens/s
    assert 0.01 <= model.prefill_seconds(256) <= 0.1
    assert model.decode_tokens_per_second(64) > 20 * model.decode_tokens_per_second(1)


@pytest.mark.parametrize("field", ["prefill_base", "prefill_per_token", "decode_step_base", "decode_step_per_sequence"])
def test_negative_times_are_refused(field: str) -> None:
    negative: dict[str, Any] = {field: -0.1}
    with pytest.raises(ValueError, match=field):
        PerformanceModel(**negative)


def test_a_budget_smaller_than_one_request_is_refused_like_tgi_does() -> None:
    with pytest.raises(ValueError, match="max_batch_total_tokens"):
        TGIEmulator(performance=PerformanceModel(max_batch_total_tokens=2048), max_total_tokens=4096)


def test_the_emulator_flags_build_the_model() -> None:
    values, _ = parse_arguments(["--max-batch-total-tokens", "8192", "--emulator-decode-step", "0.03"], {})

    assert _performance_model(values) == PerformanceModel(max_batch_total_tokens=8192, decode_step_base=0.03)


def test_the_model_is_off_without_its_flags_and_on_with_the_switch() -> None:
    assert _performance_model(parse_arguments([], {})[0]) is None
    assert _performance_model(parse_arguments(["--emulator-performance"], {})[0]) == PerformanceModel()
    env = {"ZEPHYR_TGI_EMULATOR_PREFILL_PER_TOKEN": "0.001"}
    assert _performance_model(parse_arguments([], env)[0]) == PerformanceModel(prefill_per_token=0.001)


def test_bad_model_flags_are_argument_errors() -> None:
    values, _ = parse_arguments(["--emulator-prefill-base", "-1"], {})

    with pytest.raises(ArgumentValidationError, match="prefill_base"):
        _performance_model(values)


async def test_requests_beyond_the_budget_queue_until_a_sequence_finishes() -> None:
    model = PerformanceModel(prefill_base=0.001, prefill_per_token=0, decode_step_base=0.001,
                             decode_step_per_sequence=0, max_batch_total_tokens=200)  # fmt: skip
    scheduler = BatchScheduler(model)
    seen: list[tuple[int, int]] = []

    async def request(tokens: int) -> None:
        async with scheduler.sequence(50, tokens, 50) as ticket:  # reserves 100 of the 200
            for _ in range(tokens):
                await ticket.next_token()
                seen.append((scheduler.batch_size, scheduler.queued))

    await asyncio.gather(request(20), request(20), request(5))
    await scheduler.aclose()

    assert max(batch for batch, _ in seen) == 2  # the third never ran beside the other two
    assert max(queued for _, queued in seen) == 1
    assert (scheduler.batch_size, scheduler.queued) == (0, 0)


async def test_a_request_that_leaves_early_frees_its_place() -> None:
    model = PerformanceModel(prefill_base=0.001, prefill_per_token=0, decode_step_base=0.001,
                             decode_step_per_sequence=0, max_batch_total_tokens=100)  # fmt: skip
    scheduler = BatchScheduler(model)

    async with scheduler.sequence(50, 1000, 50) as ticket:
        await ticket.next_token()
        assert scheduler.batch_size == 1
    async with scheduler.sequence(50, 3, 50) as second:
        for _ in range(3):
            await second.next_token()
    await scheduler.aclose()

    assert scheduler.batch_size == 0
