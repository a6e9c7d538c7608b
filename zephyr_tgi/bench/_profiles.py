"""Load profiles (how requests are sent) and the bounds of each load level."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["Bounds", "Concurrent", "Constant", "Poisson", "Profile", "Sweep"]


class _Profile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Concurrent(_Profile):
    """`users` simulated users in a closed loop: each sends its next request when the last one ends."""

    kind: Literal["concurrent"] = "concurrent"
    users: int = Field(ge=1, le=4096)


class Constant(_Profile):
    """Requests started at a fixed rate (requests/s), whatever the server's pace (an open loop)."""

    kind: Literal["constant"] = "constant"
    rate: float = Field(gt=0, le=10_000)


class Poisson(_Profile):
    """Requests arriving as a Poisson process of mean `rate` requests/s (exponential gaps, seeded)."""

    kind: Literal["poisson"] = "poisson"
    rate: float = Field(gt=0, le=10_000)
    seed: int = 0


class Sweep(_Profile):
    """Concurrent users from `start_users`, multiplied by `factor` each step, up to `max_users`.

    It stops early once the server is saturated: latency climbs while throughput stops growing. That is a
    step whose median TTFT grew more than `latency_growth` times over the previous step's while its output
    tokens/s followed less than `min_throughput_gain` of the load's growth (doubling the users and gaining
    under 25% more tokens/s, by default).
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
