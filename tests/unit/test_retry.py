"""RetryPolicy: what is retried, how long to wait, Retry-After."""

from __future__ import annotations

import random

import pytest
import tenacity

from zephyr_tgi import (
    APIConnectionError,
    AuthenticationError,
    GenerationError,
    IncompleteGenerationError,
    InputValidationError,
    OverloadedError,
    RetryPolicy,
    ServerUnavailableError,
)
from zephyr_tgi._errors import APIError, from_response
from zephyr_tgi._retry import compute_wait, is_retryable, tenacity_kwargs


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (APIConnectionError("refused"), True),
        (OverloadedError("busy", status_code=429), True),
        (ServerUnavailableError("loading", status_code=503), True),
        (IncompleteGenerationError("cut", status_code=500), True),
        (AuthenticationError("no", status_code=401), False),
        (InputValidationError("bad", status_code=422), False),
        (GenerationError("cuda", status_code=424), False),
        (ValueError("not ours"), False),
    ],
)
def test_what_the_default_policy_retries(error: BaseException, retried: bool) -> None:
    assert is_retryable(RetryPolicy(), error) is retried


def test_each_kind_can_be_switched_off() -> None:
    policy = RetryPolicy(retry_overloaded=False, retry_connection_errors=False)
    assert not is_retryable(policy, OverloadedError("busy"))
    assert not is_retryable(policy, APIConnectionError("refused"))


def test_backoff_doubles_up_to_the_cap_and_jitter_only_shortens() -> None:
    policy = RetryPolicy(initial_delay=0.5, max_delay=4.0, jitter=0.25)
    rng = random.Random(0)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0), (9, 4.0)]:
        wait = compute_wait(policy, attempt, None, rng)
        assert 0.75 * ceiling <= wait <= ceiling


def test_retry_after_is_used_exactly_and_a_long_one_stops_retrying() -> None:
    policy = RetryPolicy(max_retry_after=10)
    short = from_response(429, b"", {"Retry-After": "2"})
    assert compute_wait(policy, 1, short, random.Random(0)) == 2.0
    long = from_response(429, b"", {"Retry-After": "300"})
    assert not is_retryable(policy, long)


def test_tenacity_stops_after_max_attempts_and_reraises_ours() -> None:
    calls = []

    def always_busy() -> None:
        calls.append(1)
        raise OverloadedError("busy", status_code=429)

    retrying = tenacity.Retrying(**tenacity_kwargs(RetryPolicy(max_attempts=3, initial_delay=0), description="t"))
    with pytest.raises(OverloadedError):
        retrying(always_busy)
    assert len(calls) == 3


def test_every_retry_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    attempts = iter([APIConnectionError("refused"), None])

    def flaky() -> str:
        error = next(attempts)
        if isinstance(error, APIError):
            raise error
        return "ok"

    retrying = tenacity.Retrying(**tenacity_kwargs(RetryPolicy(initial_delay=0), description="POST /generate"))
    with caplog.at_level("WARNING", logger="zephyr_tgi"):
        assert retrying(flaky) == "ok"
    assert "retrying POST /generate" in caplog.text
    assert "APIConnectionError" in caplog.text


def test_the_deadline_stops_retrying() -> None:
    import time

    calls = []

    def refused() -> None:
        calls.append(1)
        raise APIConnectionError("refused")

    kwargs = tenacity_kwargs(
        RetryPolicy(max_attempts=50, initial_delay=0.01), description="t", deadline_at=time.monotonic() + 0.2
    )
    with pytest.raises(APIConnectionError):
        tenacity.Retrying(**kwargs)(refused)
    assert 1 < len(calls) < 50
