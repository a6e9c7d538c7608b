"""RetryPolicy: what is retried, how long to wait, Retry-After."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

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
from zephyr_tgi._client.core import Endpoint, make_config
from zephyr_tgi._client.flows import Context, Flow, Sleep, retrying
from zephyr_tgi._errors import from_response
from zephyr_tgi._retry import compute_wait, is_retryable
from zephyr_tgi._timeout import Timeout, call_times


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


def _drive(flow: Flow[Any]) -> tuple[Any, list[float]]:
    """Run a retry plan with no I/O: its only effects are the waits, recorded and not slept."""
    sleeps: list[float] = []
    try:
        effect = next(flow)
        while True:
            assert isinstance(effect, Sleep)
            sleeps.append(effect.seconds)
            effect = flow.send(None)
    except StopIteration as stop:
        return stop.value, sleeps


def _attempts(*outcomes: BaseException | str) -> tuple[Callable[[Context], Flow[str]], list[int]]:
    calls: list[int] = []
    pending = iter(outcomes)

    def attempt(ctx: Context) -> Flow[str]:
        calls.append(1)
        outcome = next(pending)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome
        yield  # a flow, like every attempt

    return attempt, calls


def _context(policy: RetryPolicy) -> Context:
    return Context(make_config("http://h", retry=policy), Endpoint(), random.Random(0))


def test_the_plan_stops_after_max_attempts_and_reraises_ours() -> None:
    attempt, calls = _attempts(*[OverloadedError("busy", status_code=429)] * 5)
    plan = retrying(
        _context(RetryPolicy(max_attempts=3, initial_delay=0)), "t", call_times(Timeout(), "admin"), attempt
    )
    with pytest.raises(OverloadedError):
        _drive(plan)
    assert len(calls) == 3


def test_every_retry_is_logged_and_waits_as_the_policy_says(caplog: pytest.LogCaptureFixture) -> None:
    attempt, _ = _attempts(APIConnectionError("refused"), "ok")
    ctx = _context(RetryPolicy(initial_delay=0.5, jitter=0))
    with caplog.at_level("WARNING", logger="zephyr_tgi"):
        result, sleeps = _drive(retrying(ctx, "POST /generate", call_times(Timeout(), "generate"), attempt))
    assert result == "ok"
    assert sleeps == [0.5]
    assert "retrying POST /generate" in caplog.text
    assert "APIConnectionError" in caplog.text


def test_no_wait_is_started_that_would_end_past_the_deadline() -> None:
    attempt, calls = _attempts(*[APIConnectionError("refused")] * 50)
    ctx = _context(RetryPolicy(max_attempts=50, initial_delay=0.3, jitter=0))
    with pytest.raises(APIConnectionError):
        _drive(retrying(ctx, "t", call_times(Timeout(deadline=1.0), "admin"), attempt))
    assert len(calls) == 3  # waits of 0.3 and 0.6 fit in one second, the next 1.2 would not


def test_a_refused_connection_fails_at_once_when_the_policy_says_so() -> None:
    refused = APIConnectionError("refused", connect_failed=True)
    assert is_retryable(RetryPolicy(), refused)
    assert not is_retryable(RetryPolicy(retry_refused=False), refused)
    assert is_retryable(RetryPolicy(retry_refused=False), APIConnectionError("reset by peer"))
