"""Timeouts: connect, read (for streams, the longest gap between tokens), write, and an overall deadline.

The contract (docs/errors.md): every public call, its implicit requests (`/info`, `/tokenize`) and its retries
included, ends within its deadline plus half a second. A field left unset takes the route's default, which
bounds each route by what it can legitimately take; a field set to `None` means no limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import httpx2
from pydantic import ConfigDict, Field

from ._models import OptionsModel

__all__ = ["DEFAULT_TIMEOUT", "CallTimes", "RouteKind", "Timeout", "TimeoutInput", "as_timeout", "call_times"]

RouteKind = Literal["admin", "generate", "stream"]

# Route defaults, used for each field the caller did not set.
ADMIN_READ = 5.0  # /health, /info, /tokenize, /metrics answer in milliseconds on a healthy server
ADMIN_DEADLINE = 10.0  # room for one retry after a refused connection or a 503
STREAM_GAP = 60.0  # the longest silence between two tokens of a stream (the first included)
GENERATE_BASE = 60.0  # a non-streaming generation: queueing and prefill...
GENERATE_PER_TOKEN = 0.25  # ...then each token it may generate (4 tokens/s: a very slow GPU under load)
GENERATE_DEFAULT_TOKENS = 1024  # what TGI >= 3.1.1 generates at most when max_new_tokens is unset


class Timeout(OptionsModel):
    """How long to wait, in seconds (`None`: no limit; unset: the route's default).

    `read` bounds each wait for data: for a stream that is the gap between two tokens (keep-alive comments do
    not count as data), for other calls the wait for the whole answer. `deadline` bounds a whole call, retries
    and the waits between them included; for calls that are not streams it defaults to the read timeout.

    Attributes:
        connect: Seconds to open a connection.
        read: Seconds of each wait for data (a stream's gap between tokens); unset, the route's default.
        write: Seconds to send the request.
        deadline: Seconds for the whole call, retries included; unset, the read timeout for calls that are not streams.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    connect: float | None = Field(default=5.0, gt=0)
    read: float | None = Field(default=None, gt=0)
    write: float | None = Field(default=30.0, gt=0)
    deadline: float | None = Field(default=None, gt=0)


TimeoutInput = Timeout | float | None
DEFAULT_TIMEOUT = Timeout()


def as_timeout(value: TimeoutInput) -> Timeout:
    """A `Timeout` from a `Timeout`, a number of seconds (the read timeout) or None (no read limit or deadline)."""
    if isinstance(value, Timeout):
        return value
    if value is None:
        return Timeout(read=None, deadline=None)
    return Timeout(read=float(value), connect=min(5.0, float(value)))


@dataclass(frozen=True, slots=True)
class CallTimes:
    """One public call's time plan: its deadline (a `time.monotonic()` value) and each attempt's timeouts."""

    deadline_at: float | None
    read: float | None  # per wait; for a stream, the longest gap between two tokens
    httpx: httpx2.Timeout

    def until(self, start: float | None = None) -> float | None:
        """When a wait that starts at `start` (now by default) must be over: read timeout or deadline."""
        if self.read is None:
            return self.deadline_at
        end = (time.monotonic() if start is None else start) + self.read
        return end if self.deadline_at is None or end < self.deadline_at else self.deadline_at


def call_times(timeout: Timeout, kind: RouteKind, *, max_new_tokens: int | None = None) -> CallTimes:
    """The time plan of one call on a route of `kind`."""
    explicit = timeout.model_fields_set
    if "read" in explicit:
        read = timeout.read
    elif kind == "admin":
        read = ADMIN_READ
    elif kind == "stream":
        read = STREAM_GAP
    else:
        read = GENERATE_BASE + GENERATE_PER_TOKEN * (max_new_tokens or GENERATE_DEFAULT_TOKENS)
    if "deadline" in explicit:
        deadline = timeout.deadline
    elif kind == "admin" and "read" not in explicit:
        deadline = ADMIN_DEADLINE
    else:
        deadline = None if kind == "stream" else read
    deadline_at = None if deadline is None else time.monotonic() + deadline
    # The socket-level timeouts; the transport also clamps every wait to the deadline.
    httpx = httpx2.Timeout(connect=timeout.connect, read=read, write=timeout.write, pool=timeout.connect)
    return CallTimes(deadline_at=deadline_at, read=read, httpx=httpx)
