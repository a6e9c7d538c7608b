"""Load profiles (how requests are sent) and the bounds of each load level."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["Bounds", "Concurrent", "Constant", "Poisson", "Profile", "Sweep"]


class _Profile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Concurrent(_Profile):
    """`users` simulated users in a closed loop: each sends its next request when the last one ends.

    Attributes:
        kind: Always "concurrent" (the profile's tag in saved results).
        users: Simulated users, each with one request in flight.
    """

    kind: Literal["concurrent"] = "concurrent"
    users: int = Field(ge=1, le=4096)


class Constant(_Profile):
    """Requests started at a fixed rate (requests/s), whatever the server's pace (an open loop).

    Attributes:
        kind: Always "constant" (the profile's tag in saved results).
        rate: Requests started per second.
    """

    kind: Literal["constant"] = "constant"
    rate: float = Field(gt=0, le=10_000)


class Poisson(_Profile):
    """Requests arriving as a Poisson process of mean `rate` requests/s (exponential gaps, seeded).

    Attributes:
        kind: Always "poisson" (the profile's tag in saved results).
        rate: Mean requests started per second.
        seed: Seed of the arrival times, so that two runs send on the same schedule.
    """

    kind: Literal["poisson"] = "poisson"
    rate: float = Field(gt=0, le=10_000)
    seed: int = 0


class Sweep(_Profile):
    """Concurrent users from `start_users`, multiplied by `factor` each step, up to `max_users`.

    It stops early once the server is saturated: latency climbs while throughput stops growing. That is a
    step whose median TTFT grew more than `latency_growth` times over the previous step's while its output
    tokens/s followed less than `min_throughput_gain` of the load's growth (doubling the users and gaining
    under 25% more tokens/s, by default).

    Attributes:
        kind: Always "sweep" (the profile's tag in saved results).
        start_users: Concurrent users of the first step.
        max_users: Concurrent users of the last step at most.
        factor: How much the users grow from one step to the next.
        min_throughput_gain: The share of the load's growth that throughput must follow for the sweep to go on.
        latency_growth: How much median TTFT may grow from one step to the next before the server counts as
            saturated (when throughput stalled too).
    """

    kind: Literal["sweep"] = "sweep"
    start_users: int = Field(default=1, ge=1)
    max_users: int = Field(default=256, ge=1, le=4096)
    factor: float = Field(default=2.0, gt=1.0)
    min_throughput_gain: float = Field(default=0.25, ge=0)
    latency_growth: float = Field(default=1.5, ge=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> Sweep:
        if self.max_users < self.start_users:
            raise ValueError(f"max_users ({self.max_users}) must be >= start_users ({self.start_users})")
        return self

    def levels(self) -> list[int]:
        """The user counts the sweep visits when nothing stops it early."""
        levels: list[int] = []
        users = float(self.start_users)
        while round(users) <= self.max_users:
            level = round(users)
            if not levels or level > levels[-1]:
                levels.append(level)
            users *= self.factor
        if levels[-1] != self.max_users:
            levels.append(self.max_users)
        return levels


Profile = Annotated[Concurrent | Constant | Poisson | Sweep, Field(discriminator="kind")]


class Bounds(BaseModel):
    """When one load level ends: after `max_requests` requests or `max_seconds`, whichever comes first.

    No request starts after either bound; requests still running get `drain_seconds` to finish before they
    are cancelled (and left out). `max_in_flight` caps open-loop profiles, which would otherwise pile up
    requests without limit against a saturated server.

    Attributes:
        max_requests: Requests per level at most (None: bounded by time only).
        max_seconds: Seconds per level at most (None: bounded by requests only).
        drain_seconds: Seconds the requests under way get to finish after a bound.
        max_in_flight: Requests in flight at most in open-loop profiles.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_requests: int | None = Field(default=200, ge=1)
    max_seconds: float | None = Field(default=60.0, gt=0)
    drain_seconds: float = Field(default=60.0, ge=0)
    max_in_flight: int = Field(default=1024, ge=1)

    @model_validator(mode="after")
    def _bounded(self) -> Bounds:
        if self.max_requests is None and self.max_seconds is None:
            raise ValueError("a load level needs max_requests or max_seconds (or both)")
        return self
