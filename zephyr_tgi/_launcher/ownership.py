"""Who owns a container: the owner labels, whether that owner still runs, and the orphans of this host.

A container `TGIServer` starts carries labels naming its owner process: host name, pid, and the process's
start time (so that a pid the kernel reused for another process is not mistaken for the owner), and when it
was created. A container is an *orphan* when its owner ran on this host and is gone, unless it was started
with `keep=True` (`zephyr-tgi serve --detach`): those outlive their owner on purpose.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from .args import CONTAINER_PORT, LABEL_PACKAGE, LABEL_VARIANT, PACKAGE_LABEL_VALUE, published_address
from .owner_labels import (
    LABEL_CREATED,
    LABEL_KEEP,
    LABEL_OWNER_HOST,
    LABEL_OWNER_PID,
    LABEL_OWNER_PIDNS,
    LABEL_OWNER_STARTED,
)

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

__all__ = [
    "LABEL_CREATED",
    "LABEL_KEEP",
    "LABEL_OWNER_HOST",
    "LABEL_OWNER_PID",
    "LABEL_OWNER_PIDNS",
    "LABEL_OWNER_STARTED",
    "ContainerRecord",
    "Owner",
    "OwnerState",
    "describe_containers",
    "find_containers",
    "owner_labels",
]


# psutil derives a start time from boot time and clock ticks: the same process reads back the same value,
# but the label keeps two decimals, so compare with a margin far below any realistic pid reuse.
_START_TIME_MARGIN = 0.05


class OwnerState(StrEnum):
    """What is known about a container's owner process."""

    ALIVE = "alive"  # the owner process still runs on this host
    GONE = "gone"  # it ran on this host and has exited (or its pid now belongs to another process)
    ELSEWHERE = "elsewhere"  # it runs on another host: nothing can be known from here
    UNKNOWN = "unknown"  # no owner labels (started by compose, or by an older zephyr-tgi)


@dataclass(frozen=True, slots=True)
class Owner:
    """A process that owns containers: where it runs (host, pid namespace), its pid, and when it started."""

    host: str
    pid: int
    started: float
    pid_namespace: str | None = None  # None where the platform has none to read (or an older label)

    @classmethod
    def current(cls) -> Owner:
        """This process."""
        import psutil  # the docker extra's: only a process that starts containers needs it

        process = psutil.Process()
        return cls(
            host=socket.gethostname(), pid=process.pid, started=process.create_time(), pid_namespace=_pid_namespace()
        )

    @classmethod
    def from_labels(cls, container_labels: Mapping[str, str]) -> Owner | None:
        """The owner named by a container's labels; None when they are missing or malformed."""
        try:
            return cls(
                host=container_labels[LABEL_OWNER_HOST],
                pid=int(container_labels[LABEL_OWNER_PID]),
                started=float(container_labels[LABEL_OWNER_STARTED]),
                pid_namespace=container_labels.get(LABEL_OWNER_PIDNS) or None,
            )
        except (KeyError, ValueError):
            return None

    def state(self, *, here: str | None = None) -> OwnerState:
        """Whether this owner still runs (only knowable on its own host)."""
        import psutil

        if self.host != (here if here is not None else socket.gethostname()):
            return OwnerState.ELSEWHERE
        ours = _pid_namespace()
        if self.pid_namespace and ours and self.pid_namespace != ours:
            return OwnerState.ELSEWHERE  # same host name, another pid namespace: its pids are not ours to judge
        try:
            started = psutil.Process(self.pid).create_time()
        except psutil.NoSuchProcess:
            return OwnerState.GONE
        except psutil.AccessDenied:  # it exists; another user's process
            return OwnerState.ALIVE
        return OwnerState.ALIVE if abs(started - self.started) < _START_TIME_MARGIN else OwnerState.GONE

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}"


def owner_labels(owner: Owner, *, keep: bool, now: datetime | None = None) -> dict[str, str]:
    """The labels that say who owns a new container, since when, and whether it is meant to outlive them."""
    created = (now or datetime.now(UTC)).astimezone(UTC)
    return {
        LABEL_OWNER_HOST: owner.host,
        LABEL_OWNER_PID: str(owner.pid),
        LABEL_OWNER_PIDNS: owner.pid_namespace or "",
        LABEL_OWNER_STARTED: f"{owner.started:.2f}",
        LABEL_CREATED: created.isoformat(timespec="seconds"),
        LABEL_KEEP: "true" if keep else "false",
    }


@dataclass(frozen=True, slots=True)
class ContainerRecord:
    """One of this library's containers, as `zephyr-tgi ps` shows it."""

    id: str
    name: str
    status: str  # docker's: created, running, exited, ...
    variant: str
    port: int | None
    created: datetime | None
    owner: Owner | None
    owner_state: OwnerState
    keep: bool

    @property
    def is_orphan(self) -> bool:
        """Its owner on this host is gone and it was not meant to outlive it."""
        return self.owner_state is OwnerState.GONE and not self.keep

    def age(self, now: datetime | None = None) -> float | None:
        """Seconds since it was created, when the label says."""
        if self.created is None:
            return None
        return ((now or datetime.now(UTC)) - self.created).total_seconds()

    def as_json(self, now: datetime | None = None) -> dict[str, Any]:
        """A JSON-ready dict (for `zephyr-tgi ps --json`)."""
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "variant": self.variant,
            "port": self.port,
            "created": self.created.isoformat() if self.created else None,
            "age_seconds": self.age(now),
            "owner": str(self.owner) if self.owner else None,
            "owner_state": str(self.owner_state),
            "keep": self.keep,
            "orphan": self.is_orphan,
        }


def find_containers(client: DockerClient) -> list[Container]:
    """Every container of this library on the daemon, running or not."""
    filters: dict[str, str | list[str] | bool] = {"label": [f"{LABEL_PACKAGE}={PACKAGE_LABEL_VALUE}"]}
    # ignore_removed: another process may remove one between docker's listing and its inspection of it.
    found: list[Container] = client.containers.list(all=True, filters=filters, ignore_removed=True)
    return found


def describe_containers(containers: list[Container], *, here: str | None = None) -> list[ContainerRecord]:
    """A record per container: owner and its state, status, variant, port, creation time."""
    return [_record(container, here=here) for container in containers]


def _record(container: Container, *, here: str | None) -> ContainerRecord:
    container_labels: Mapping[str, str] = container.labels or {}
    owner = Owner.from_labels(container_labels)
    address = published_address(container.attrs, CONTAINER_PORT)
    return ContainerRecord(
        id=str(container.id),
        name=str(container.name),
        status=str(container.status),
        variant=container_labels.get(LABEL_VARIANT, "?"),
        port=address[1] if address else None,
        created=_parse_time(container_labels.get(LABEL_CREATED)),
        owner=owner,
        owner_state=owner.state(here=here) if owner is not None else OwnerState.UNKNOWN,
        keep=container_labels.get(LABEL_KEEP) == "true",
    )


def _pid_namespace() -> str | None:
    """This process's pid namespace, like "pid:[4026531836]" (Linux); None elsewhere."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
