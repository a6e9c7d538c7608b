"""Timeouts: connect, read (for streams, the longest gap between tokens), write, and an overall deadline."""

from __future__ import annotations

import httpx2
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DEFAULT_TIMEOUT", "Timeout", "TimeoutInput", "as_timeout"]


class Timeout(BaseModel):
    """How long to wait, in seconds (`None` waits forever).

    `read` bounds each wait for data: for a stream that is the gap between two tokens, not the whole
    answer. `deadline` bounds a whole call, retries and waits between them included.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    connect: float | None = Field(default=10.0, gt=0)
    read: float | None = Field(default=300.0, gt=0)
    write: float | None = Field(default=60.0, gt=0)
    deadline: float | None = Field(default=None, gt=0)

    def for_httpx(self, remaining: float | None = None) -> httpx2.Timeout:
        """The per-attempt httpx2 timeout, shortened to what is left of the deadline."""

        def cap(value: float | None) -> float | None:
            if remaining is None:
                return value
            return remaining if value is None else min(value, remaining)

        return httpx2.Timeout(
            connect=cap(self.connect), read=cap(self.read), write=cap(self.write), pool=cap(self.connect)
        )


TimeoutInput = Timeout | float | None
DEFAULT_TIMEOUT = Timeout()


def as_timeout(value: TimeoutInput) -> Timeout:
    """A `Timeout` from a `Timeout`, a number of seconds (the read timeout) or None (no read limit)."""
    if isinstance(value, Timeout):
        return value
    if value is None:
        return Timeout(read=None)
    return Timeout(read=float(value), connect=min(10.0, float(value)))
