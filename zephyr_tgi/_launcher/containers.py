"""This library's containers on a Docker daemon: list them with their owners, pick some, remove them.

What `zephyr-tgi ps` and `zephyr-tgi down` do; only containers labelled by zephyr_tgi are ever considered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._errors import ConfigurationError
from .ownership import ContainerRecord, describe_containers, find_containers
from .server import _docker_errors, _import_docker

if TYPE_CHECKING:
    from docker import DockerClient

__all__ = ["connect", "list_records", "remove", "select"]


def connect() -> DockerClient:
    """A docker client from the environment (DOCKER_HOST, ...), pinged.

    Raises:
        DockerUnavailableError: no docker SDK, or the daemon cannot be reached.
    """
    docker = _import_docker()
    with _docker_errors("connect to the Docker daemon"):
        client: DockerClient = docker.from_env()
        client.ping()
    return client


def list_records(client: DockerClient) -> list[ContainerRecord]:
    """Every zephyr_tgi container on the daemon, oldest first."""
    with _docker_errors("list containers"):
        records = describe_containers(find_containers(client))
    return sorted(records, key=lambda r: (r.created is None, r.created.timestamp() if r.created else 0.0, r.name))


def select(
    records: Sequence[ContainerRecord], *, name: str | None, orphans: bool, everything: bool
) -> list[ContainerRecord]:
    """The records `zephyr-tgi down` removes: one by name (or id prefix), the orphans, or all of them.

    Raises:
        ConfigurationError: not exactly one way of choosing, or NAME matches none (or several) of ours.
    """
    if sum((name is not None, orphans, everything)) != 1:
        raise ConfigurationError("say which containers: a NAME (or id), --orphans or --all")
    if everything:
        return list(records)
    if orphans or name is None:
        return [record for record in records if record.is_orphan]
    exact = [record for record in records if name in (record.name, record.id)]
    matches = exact or [record for record in records if len(name) >= 4 and record.id.startswith(name)]
    if not matches:
        raise ConfigurationError(
            f"no zephyr-tgi container named {name!r} (`zephyr-tgi ps` lists them; other containers are not ours "
            "to remove)"
        )
    if len(matches) > 1:
        raise ConfigurationError(f"{name!r} matches {len(matches)} containers: give more of the id")
    return matches


def remove(client: DockerClient, records: Sequence[ContainerRecord]) -> list[ContainerRecord]:
    """Stop and remove the containers of `records` (with their anonymous volumes); the ones removed."""
    removed: list[ContainerRecord] = []
    for record in records:
        with _docker_errors(f"remove the container {record.name}", missing_ok=True):
            client.containers.get(record.id).remove(force=True, v=True)
            removed.append(record)
    return removed
