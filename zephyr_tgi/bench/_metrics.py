"""What a load test measured, as the field defines it: TTFT, ITL, TPOT, latency, throughput, goodput."""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SLO", "Distribution", "RequestRecord", "StepResult", "summarize"]


@dataclass(slots=True)
class RequestRecord:
    """One request's timeline in seconds since the run started (perf_counter), filled in as it streams.

    Args:
        started: When the request was sent.
        input_tokens: The prompt's length in tokens, as the server counts it.
        token_times: When each token arrived.
        ended: When the answer's last byte arrived (None while it streams, or when cancelled).
        error: The exception class name of a failed request.
    """

    started: float
    input_tokens: int
    token_times: list[float] = field(default_factory=list)
    ended: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Finished without an error and produced at least one token."""
        return self.error is None and self.ended is not None and bool(self.token_times)

    @property
    def output_tokens(self) -> int:
        return len(self.token_times)

    @property
    def ttft(self) -> float:
        """Time to first token: request sent to first token received."""
        return self.token_times[0] - self.started

    @property
    def latency(self) -> float:
        """End-to-end latency: request sent to the last byte of the answer."""
        assert self.ended is not None
        return self.ended - self.started

    @property
    def itls(self) -> list[float]:
        """Inter-token latencies: the gaps between consecutive tokens."""
        times = self.token_times
        return [b - a for a, b in itertools.pairwise(times)]

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first (None for one-token answers), as vLLM defines it."""
        if len(self.token_times) < 2:
            return None
        return (self.token_times[-1] - self.token_times[0]) / (len(self.token_times) - 1)


class Distribution(BaseModel):
    """Summary statistics of one metric (seconds, or tokens/s for throughput per user).

    Attributes:
        count: How many values.
        mean: Their mean.
        median: Their median.
        p90: Their 90th percentile.
        p95: Their 95th percentile.
        p99: Their 99th percentile.
        min: The smallest.
        max: The largest.
    """

    model_config = ConfigDict(frozen=True)

    count: int
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Distribution | None:
        """Statistics of `values` (None when there are none); percentiles interpolate linearly (numpy's default).

        Args:
            values: The measurements, in any order.
        """
        if not values:
            return None
        ordered = sorted(values)
        return cls(
            count=len(ordered),
            mean=statistics.fmean(ordered),
            median=_percentile(ordered, 50),
            p90=_percentile(ordered, 90),
            p95=_percentile(ordered, 95),
            p99=_percentile(ordered, 99),
            min=ordered[0],
            max=ordered[-1],
        )


def _percentile(ordered: Sequence[float], q: float) -> float:
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class SLO(BaseModel):
    """A latency target: the step meets it when TTFT p99 and ITL p99 are within it and errors stay rare.

    The defaults are the chat targets GuideLLM's documentation cites (TTFT p99 <= 200 ms, ITL p99 <= 50 ms).
    For goodput a single request counts as good when its own TTFT and TPOT are within the targets.

    Attributes:
        ttft_p99: Seconds the 99th percentile of time to first token may take at most.
        itl_p99: Seconds the 99th percentile of inter-token latency may take at most.
        max_error_rate: The share of requests that may fail, from 0 to 1.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    ttft_p99: float = Field(default=0.200, gt=0, description="seconds")
    itl_p99: float = Field(default=0.050, gt=0, description="seconds")
    max_error_rate: float = Field(default=0.01, ge=0, le=1)

    def request_is_good(self, record: RequestRecord) -> bool:
        """Whether one request met the targets (the goodput criterion).

        Args:
            record: The request: good when it succeeded and its TTFT and TPOT are within the targets.
        """
        if not record.ok:
            return False
        tpot = record.tpot
        return record.ttft <= self.ttft_p99 and (tpot is None or tpot <= self.itl_p99)


class StepResult(BaseModel):
    """The measurements of one load level (a number of users, or a request rate).

    Attributes:
        label: The level's name (e.g. "8 users").
        users: Concurrent users of a closed-loop level.
        rate: Requests/s of an open-loop level.
        duration: Seconds from the first request sent to the last answer's end.
        requests: Requests finished, failed ones included.
        successful: Requests that succeeded.
        errors: Failed requests by exception class.
        input_tokens_mean: Mean prompt length of the successful requests, in tokens.
        output_tokens_mean: Mean answer length of the successful requests, in tokens.
        output_tokens_per_second: All tokens of the successful requests / `duration`.
        requests_per_second: Successful requests / `duration`.
        goodput: Requests/s that met the SLO on their own.
        ttft: Time to first token, in seconds.
        itl: Inter-token latency (all gaps of the level pooled), in seconds.
        tpot: Time per output token after the first, per request, in seconds.
        latency: End-to-end latency, in seconds.
        tokens_per_second_per_user: 1 / TPOT per request.
        meets_slo: Whether the level met the SLO.
        interrupted: Whether the level was cut short (Ctrl-C).
        processes: The worker processes that generated it.
        client_cpu_seconds: CPU seconds the generator spent on it, when measured.
    """

    model_config = ConfigDict(frozen=True)

    label: str
    users: int | None = None
    rate: float | None = None
    duration: float
    requests: int
    successful: int
    errors: dict[str, int]
    input_tokens_mean: float
    output_tokens_mean: float
    output_tokens_per_second: float
    requests_per_second: float
    goodput: float = Field(description="requests/s that met the SLO")
    # None when no request of the step produced the samples (every one failed, or one-token answers).
    ttft: Distribution | None
    itl: Distribution | None
    tpot: Distribution | None
    latency: Distribution | None
    tokens_per_second_per_user: Distribution | None
    meets_slo: bool
    interrupted: bool = False
    processes: int = 1
    client_cpu_seconds: float | None = Field(
        default=None, description="CPU time the load generator itself used during the step (all its processes)"
    )

    @property
    def error_rate(self) -> float:
        return (self.requests - self.successful) / self.requests if self.requests else 0.0

    @property
    def client_cpu_share(self) -> float | None:
        """The generator's CPU use as a share of its processes' time (near 1.0: it may be the bottleneck)."""
        if self.client_cpu_seconds is None or not self.duration:
            return None
        return self.client_cpu_seconds / (self.duration * self.processes)


def summarize(
    records: Sequence[RequestRecord],
    slo: SLO,
    *,
    label: str,
    users: int | None = None,
    rate: float | None = None,
    interrupted: bool = False,
    processes: int = 1,
    client_cpu_seconds: float | None = None,
) -> StepResult:
    """Turn the records of one load level into its metrics (unfinished records are left out).

    Args:
        records: The level's request records.
        slo: The latency target the level is judged by.
        label: The level's name in reports (e.g. "8 users").
        users: The concurrent users of a closed-loop level.
        rate: The requests/s of an open-loop level.
        interrupted: The level was cut short (Ctrl-C).
        processes: The worker processes that generated the level.
        client_cpu_seconds: CPU seconds the generator spent on the level, when measured.

    Returns:
        The level's metrics.
    """
    finished = [r for r in records if r.ended is not None]
    ok = [r for r in finished if r.ok]
    errors = Counter(r.error or "EmptyAnswer" for r in finished if not r.ok)
    if finished:
        start = min(r.started for r in finished)
        end = max(r.ended for r in finished if r.ended is not None)
        duration = max(end - start, 1e-9)
    else:
        duration = 0.0
    output = sum(r.output_tokens for r in ok)
    itls = [gap for r in ok for gap in r.itls]
    tpots = [t for r in ok if (t := r.tpot) is not None]
    good = sum(1 for r in ok if slo.request_is_good(r))
    ttft = Distribution.of([r.ttft for r in ok])
    itl = Distribution.of(itls)
    error_rate = (len(finished) - len(ok)) / len(finished) if finished else 1.0
    meets = (
        ttft is not None
        and ttft.p99 <= slo.ttft_p99
        and (itl is None or itl.p99 <= slo.itl_p99)
        and error_rate <= slo.max_error_rate
    )
    per_second = (lambda n: n / duration) if duration else (lambda n: 0.0)
    return StepResult(
        label=label,
        users=users,
        rate=rate,
        duration=duration,
        requests=len(finished),
        successful=len(ok),
        errors=dict(sorted(errors.items())),
        input_tokens_mean=statistics.fmean([r.input_tokens for r in ok]) if ok else 0.0,
        output_tokens_mean=statistics.fmean([r.output_tokens for r in ok]) if ok else 0.0,
        output_tokens_per_second=per_second(output),
        requests_per_second=per_second(len(ok)),
        goodput=per_second(good),
        ttft=ttft,
        itl=itl,
        tpot=Distribution.of(tpots),
        latency=Distribution.of([r.latency for r in ok]),
        tokens_per_second_per_user=Distribution.of([1 / t for t in tpots if t > 0]),
        meets_slo=meets,
        interrupted=interrupted,
        processes=processes,
        client_cpu_seconds=client_cpu_seconds,
    )
