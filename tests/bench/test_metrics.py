"""Metrics as the field defines them, computed from request timelines (no network)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from zephyr_tgi.bench import SLO, Bounds, Distribution, RequestRecord, Sweep, summarize
from zephyr_tgi.bench._runner import saturated


def record(started: float, first: float, gap: float, tokens: int, *, error: str | None = None) -> RequestRecord:
    times = [started + first + gap * i for i in range(tokens)]
    return RequestRecord(started=started, input_tokens=10, token_times=times, ended=times[-1] if times else started,
                         error=error)  # fmt: skip


def test_one_request_gives_ttft_itl_tpot_and_latency() -> None:
    one = record(1.0, 0.1, 0.02, 11)

    assert one.ttft == pytest.approx(0.1)
    assert one.itls == pytest.approx([0.02] * 10)
    assert one.tpot == pytest.approx(0.02)
    assert one.latency == pytest.approx(0.3)


def test_percentiles_match_numpys_linear_interpolation() -> None:
    values = [0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 1.5]
    summary = Distribution.of(values)

    assert summary is not None
    for name, q in (("median", 50), ("p90", 90), ("p95", 95), ("p99", 99)):
        assert getattr(summary, name) == pytest.approx(float(np.percentile(values, q)))
    assert (summary.min, summary.max, summary.count) == (0.1, 1.5, 7)
    assert Distribution.of([]) is None


def test_a_step_summarises_throughput_goodput_and_errors_by_class() -> None:
    records = [
        record(0.0, 0.1, 0.02, 11),
        record(0.0, 0.5, 0.02, 11),
        record(0.0, 0.1, 0.02, 0, error="OverloadedError"),
    ]
    step = summarize(records, SLO(ttft_p99=0.2, itl_p99=0.05), label="2 users", users=2)

    assert step.requests == 3
    assert step.successful == 2
    assert step.errors == {"OverloadedError": 1}
    assert step.duration == pytest.approx(0.7)
    assert step.output_tokens_per_second == pytest.approx(22 / 0.7)
    assert step.goodput == pytest.approx(1 / 0.7)  # the slow first token misses the TTFT target
    assert step.tokens_per_second_per_user is not None
    assert step.tokens_per_second_per_user.median == pytest.approx(50)
    assert not step.meets_slo


def test_a_step_meets_the_slo_when_its_p99s_are_within_it() -> None:
    records = [record(float(i), 0.1, 0.02, 20) for i in range(20)]

    assert summarize(records, SLO(), label="1 user").meets_slo
    assert not summarize(records, SLO(itl_p99=0.015), label="1 user").meets_slo
    assert not summarize(records, SLO(ttft_p99=0.05), label="1 user").meets_slo


def test_too_many_errors_fail_the_slo() -> None:
    records = [record(float(i), 0.1, 0.02, 5) for i in range(9)] + [record(0, 0, 0, 0, error="APITimeoutError")]

    assert not summarize(records, SLO(max_error_rate=0.05), label="x").meets_slo
    assert summarize(records, SLO(max_error_rate=0.2), label="x").meets_slo


def test_the_sweep_visits_multiples_up_to_its_ceiling() -> None:
    assert Sweep(max_users=20).levels() == [1, 2, 4, 8, 16, 20]
    assert Sweep(start_users=3, max_users=3).levels() == [3]
    with pytest.raises(ValidationError):
        Sweep(start_users=8, max_users=4)


def test_saturation_is_latency_climbing_while_throughput_stalls() -> None:
    sweep = Sweep()
    before = summarize([record(0.0, 0.1, 0.02, 50) for _ in range(4)], SLO(), label="4", users=4)
    same_rate_slower_start = summarize([record(0.0, 0.4, 0.02, 50) for _ in range(4)], SLO(), label="8", users=8)
    more = summarize([record(0.0, 0.1, 0.02, 50) for _ in range(8)], SLO(), label="8", users=8)

    assert saturated(before, same_rate_slower_start, sweep)
    assert not saturated(before, more, sweep)


def test_a_level_must_be_bounded() -> None:
    with pytest.raises(ValidationError, match="max_requests or max_seconds"):
        Bounds(max_requests=None, max_seconds=None)


def test_the_generators_own_cpu_is_stated_as_a_share_of_its_time() -> None:
    records = [record(0.0, 0.1, 0.02, 46)]  # a one-second step
    step = summarize(records, SLO(), label="1 user", processes=2, client_cpu_seconds=1.5)

    assert step.duration == pytest.approx(1.0)
    assert step.client_cpu_share == pytest.approx(0.75)
    assert summarize(records, SLO(), label="1 user").client_cpu_share is None
