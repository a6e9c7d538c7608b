"""RetryPolicy: which failures are retried, how long to wait, and the tenacity arguments both clients share."""

from __future__ import annotations

import logging
import random
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

__all__ = ["RetryPolicy", "compute_wait", "is_retryable", "tenacity_kwargs"]

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


class _Wait(tenacity.wait.wait_base):
    def __init__(self, policy: RetryPolicy, deadline_at: float | None) -> None:
        self._policy = policy
        self._deadline_at = deadline_at
        self._rng = random.Random()

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        wait = compute_wait(self._policy, retry_state.attempt_number, exc, self._rng)
        if self._deadline_at is not None:
            import time

            wait = max(0.0, min(wait, self._deadline_at - time.monotonic()))
        return wait


def _log_retry(description: str, policy: RetryPolicy) -> Any:
    def before_sleep(retry_state: tenacity.RetryCallState) -> None:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
        logger.warning(
            "retrying %s in %.2f s (attempt %d of %d failed: %s: %s)",
            description,
            wait,
            retry_state.attempt_number,
            policy.max_attempts,
            type(exc).__name__,
            exc,
        )

    return before_sleep


def tenacity_kwargs(policy: RetryPolicy, *, description: str, deadline_at: float | None = None) -> dict[str, Any]:
    """Arguments for `tenacity.Retrying` / `AsyncRetrying`, identical for the sync and async clients.

    `deadline_at` (a `time.monotonic()` value) stops retrying once the overall deadline has passed.
    """
    stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(policy.max_attempts)
    if deadline_at is not None:
        stop = stop | _StopAtDeadline(deadline_at)
    return {
        "stop": stop,
        "wait": _Wait(policy, deadline_at),
        "retry": tenacity.retry_if_exception(lambda exc: is_retryable(policy, exc)),
        "before_sleep": _log_retry(description, policy),
        "reraise": True,
    }


class _StopAtDeadline(tenacity.stop.stop_base):
    def __init__(self, deadline_at: float) -> None:
        self._deadline_at = deadline_at

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        import time

        return time.monotonic() >= self._deadline_at
