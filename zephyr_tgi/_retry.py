"""RetryPolicy: which failures are retried, and how long to wait before the next attempt.

The retry loop itself is part of the sans-I/O core (`_client/flows.py`), so the sync and async clients share
it; this module holds the decisions: pure functions of the policy, the failure and the time left.
"""

from __future__ import annotations

import logging
import random
import time

from pydantic import ConfigDict, Field

from ._errors import (
    APIConnectionError,
    APIError,
    IncompleteGenerationError,
    OverloadedError,
    ServerUnavailableError,
)
from ._models import OptionsModel

__all__ = ["RetryPolicy", "compute_wait", "is_retryable", "log_retry", "next_wait"]

logger = logging.getLogger("zephyr_tgi")


class RetryPolicy(OptionsModel):
    """When and how to retry a request.

    Retried: connection failures and timeouts, 429 overloaded, 502/503/504 (model loading, proxies) and
    incomplete generations. Never retried: 401, 422 and 424. A stream is retried only until its first
    token has arrived, never after. A refused connection (nothing listens: a server starting or restarting)
    is retried unless `retry_refused` is False, which makes a wrong URL fail at once. Waits grow
    exponentially (`initial_delay * 2**n`, capped at
    `max_delay`), shortened by up to `jitter` so many clients do not retry in step; a server's `Retry-After`
    is used exactly when it is at most `max_retry_after`, and a longer one ends the retries at once. All
    attempts of one call share its deadline: a wait that would end past it is not started.

    Attributes:
        max_attempts: Attempts in total, the first included.
        initial_delay: Seconds before the first retry; each further wait doubles.
        max_delay: Seconds one wait lasts at most.
        jitter: Fraction of each wait that is randomly cut off, from 0 to 1.
        max_retry_after: The longest `Retry-After` honoured, in seconds; a longer one ends the retries.
        retry_connection_errors: Retry connection failures and timeouts.
        retry_refused: Retry refused connections (nothing listening yet).
        retry_overloaded: Retry 429 overloaded answers.
        retry_unavailable: Retry 502, 503 and 504.
        retry_incomplete: Retry incomplete generations (500), before a stream's first token.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(default=4, ge=1, description="attempts in total, the first included")
    initial_delay: float = Field(default=0.5, ge=0.0)
    max_delay: float = Field(default=8.0, ge=0.0)
    jitter: float = Field(default=0.25, ge=0.0, le=1.0)
    max_retry_after: float = Field(default=120.0, ge=0.0)
    retry_connection_errors: bool = True
    retry_refused: bool = True
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
        allowed = policy.retry_connection_errors and (policy.retry_refused or not exc.connect_failed)
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


def next_wait(
    policy: RetryPolicy,
    exc: BaseException,
    attempt: int,
    deadline_at: float | None,
    rng: random.Random,
) -> float | None:
    """After failed attempt number `attempt`: seconds to wait before the next, or None when there is none."""
    if attempt >= policy.max_attempts or not is_retryable(policy, exc):
        return None
    wait = compute_wait(policy, attempt, exc, rng)
    if deadline_at is not None and time.monotonic() + wait >= deadline_at:
        return None  # the next attempt could not even start before the deadline
    return wait


def log_retry(description: str, attempt: int, policy: RetryPolicy, exc: BaseException, wait: float) -> None:
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
