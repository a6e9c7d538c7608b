"""RetryPolicy: which failures are retried, how long to wait, and the tenacity arguments both clients share."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import tenacity
from pydantic import BaseModel, ConfigDict, Field

from ._errors import (
    APIConnectionError,
    APIError,
    IncompleteGenerationError,
    OverloadedError,
    ServerUnavailableError,
)

__all__ = ["RetryPolicy", "compute_wait", "first_retry_wait", "is_retryable", "log_retry", "tenacity_kwargs"]

logger = logging.getLogger("zephyr_tgi")


class RetryPolicy(BaseModel):
    """When and how to retry a request.

    Retried: connection failures and timeouts, 429 overloaded, 502/503/504 (model loading, proxies) and
    incomplete generations. Never retried: 401, 422 and 424. A stream is retried only until its first
    token has arrived, never after. Waits grow exponentially (`initial_delay * 2**n`, capped at `max_delay`),
    shortened by up to `jitter` so many clients do not retry in step; a server's `Retry-After` is used
    exactly when it is at most `max_retry_after`, and a longer one ends the retries at once.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(default=4, ge=1, description="attempts in total, the first included")
    initial_delay: float = Field(default=0.5, ge=0.0)
    max_delay: float = Field(default=8.0, ge=0.0)
    jitter: float = Field(default=0.25, ge=0.0, le=1.0)
    max_retry_after: float = Field(default=120.0, ge=0.0)
    retry_connection_errors: bool = True
    retry_overloaded: bool = True
    retry_unavailable: bool = True
    retry_incomplete: bool = True

    @classmethod
    def never(cls) -> RetryPolicy:
        """A policy that makes exactly one attempt."""
        return cls(max_attempts=1)


def is_retryable(policy: RetryPolicy, exc: BaseException) -> bool:
    """Whether `exc` is worth another attempt under `policy` (a too-long Retry-After says no)."""
    if not isinstance(exc, APIError):
        return False
    if isinstance(exc, APIConnectionError):
        allowed = policy.retry_connection_errors
    elif isinstance(exc, OverloadedError):
        allowed = policy.retry_overloaded
    elif isinstance(exc, ServerUnavailableError):
        allowed = policy.retry_unavailable
    elif isinstance(exc, IncompleteGenerationError):
        allowed = policy.retry_incomplete
    else:
        return False
    retry_after = exc.retry_after
    return allowed and (retry_after is None or retry_after <= policy.max_retry_after)


def compute_wait(policy: RetryPolicy, attempt: int, exc: BaseException | None, rng: random.Random) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based)."""
    if isinstance(exc, APIError):
        retry_after = exc.retry_after
        if retry_after is not None and retry_after <= policy.max_retry_after:
            return retry_after
    backoff = min(policy.initial_delay * 2.0 ** (attempt - 1), policy.max_delay)
    return backoff * (1.0 - policy.jitter * rng.random())


def _capped(wait: float, deadline_at: float | None) -> float:
    return wait if deadline_at is None else max(0.0, min(wait, deadline_at - time.monotonic()))


def first_retry_wait(
    policy: RetryPolicy, exc: BaseException, deadline_at: float | None, rng: random.Random
) -> float | None:
    """After a failed first attempt: seconds to wait before the second, or None when there is no second.

    The clients make their first attempt outside tenacity (most calls succeed at once and tenacity's
    bookkeeping is a measurable share of a short request's CPU time); tenacity runs the attempts after it.
    """
    if policy.max_attempts < 2 or not is_retryable(policy, exc):
        return None
    if deadline_at is not None and time.monotonic() >= deadline_at:
        return None
    return _capped(compute_wait(policy, 1, exc, rng), deadline_at)


def log_retry(description: str, attempt: int, policy: RetryPolicy, exc: BaseException | None, wait: float) -> None:
    """Log one retry: what failed, which attempt, how long until the next."""
    logger.warning(
        "retrying %s in %.2f s (attempt %d of %d failed: %s: %s)",
        description,
        wait,
        attempt,
        policy.max_attempts,
        type(exc).__name__,
        exc,
    )


class _Wait(tenacity.wait.wait_base):
    def __init__(self, policy: RetryPolicy, deadline_at: float | None, attempts_done: int) -> None:
        self._policy = policy
        self._deadline_at = deadline_at
        self._attempts_done = attempts_done
        self._rng = random.Random()

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        attempt = retry_state.attempt_number + self._attempts_done
        return _capped(compute_wait(self._policy, attempt, exc, self._rng), self._deadline_at)


def tenacity_kwargs(
    policy: RetryPolicy, *, description: str, deadline_at: float | None = None, attempts_done: int = 0
) -> dict[str, Any]:
    """Arguments for `tenacity.Retrying` / `AsyncRetrying`, identical for the sync and async clients.

    `deadline_at` (a `time.monotonic()` value) stops retrying once the overall deadline has passed;
    `attempts_done` counts attempts already made before tenacity took over.
    """
    stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(max(1, policy.max_attempts - attempts_done))
    if deadline_at is not None:
        stop = stop | _StopAtDeadline(deadline_at)

    def before_sleep(retry_state: tenacity.RetryCallState) -> None:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
        log_retry(description, retry_state.attempt_number + attempts_done, policy, exc, wait)

    return {
        "stop": stop,
        "wait": _Wait(policy, deadline_at, attempts_done),
        "retry": tenacity.retry_if_exception(lambda exc: is_retryable(policy, exc)),
        "before_sleep": before_sleep,
        "reraise": True,
    }


class _StopAtDeadline(tenacity.stop.stop_base):
    def __init__(self, deadline_at: float) -> None:
        self._deadline_at = deadline_at

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return time.monotonic() >= self._deadline_at
