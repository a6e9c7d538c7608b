"""Batch generation helpers: default concurrency and the progress display (items and tokens per second)."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any

from .._types import GenerationResult
from .params import Limits

__all__ = ["BatchProgress", "check_concurrency", "default_concurrency"]

_MAX_DEFAULT_CONCURRENCY = 32


def default_concurrency(limits: Limits) -> int:
    """Half the server's `max_concurrent_requests` (at most 32): room for other clients, no 429 storms."""
    return max(1, min(_MAX_DEFAULT_CONCURRENCY, limits.max_concurrent_requests // 2))


class BatchProgress:
    """A tqdm bar of items done with generated tokens per second; silent unless asked and on a terminal."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self._bar: Any = None
        self._tokens = 0
        self._started = time.monotonic()
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm  # tqdm comes with huggingface_hub

            self._bar = tqdm(total=total, unit="req", desc="batch_chat", dynamic_ncols=True)

    def __enter__(self) -> BatchProgress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.close()

    def done(self, outcome: GenerationResult | BaseException) -> None:
        """Count one finished item."""
        if isinstance(outcome, GenerationResult) and outcome.generated_tokens:
            self._tokens += outcome.generated_tokens
        if self._bar is not None:
            elapsed = max(time.monotonic() - self._started, 1e-9)
            self._bar.set_postfix(tok_s=f"{self._tokens / elapsed:.0f}", refresh=False)
            self._bar.update(1)

    @property
    def tokens(self) -> int:
        """Tokens generated so far."""
        return self._tokens


def check_concurrency(concurrency: int | None) -> int | None:
    """Validate a batch's concurrency argument."""
    if concurrency is not None and (
        not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1
    ):
        from .._errors import ConfigurationError

        raise ConfigurationError(f"concurrency must be a positive integer, got {concurrency!r}")
    return concurrency
