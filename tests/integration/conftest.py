"""Shared fixtures of the Docker integration tests: a docker client, the emulator image, a leak check.

Without a reachable Docker daemon (or without the emulator image) the tests that need them skip with the
reason, unless ZEPHYR_TGI_REQUIRE_DOCKER=1: then they fail, so CI cannot silently skip them.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from tests.conftest import docker_unavailable
from zephyr_tgi._launcher.args import LABEL_CREATOR, LABEL_PACKAGE, PACKAGE_LABEL_VALUE, current_creator
from zephyr_tgi._launcher.ownership import LABEL_OWNER_HOST, LABEL_OWNER_PID

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

EMULATOR_IMAGE = os.environ.get("ZEPHYR_TGI_EMULATOR_IMAGE", "zephyr-tgi-emulator:latest")
# Containers TGIServer created in this process: other sessions may share the daemon (and run this check).
OUR_CONTAINERS: dict[str, str | list[str] | bool] = {
    "label": [f"{LABEL_PACKAGE}={PACKAGE_LABEL_VALUE}", f"{LABEL_CREATOR}={current_creator()}"]
}


def poll(condition: Callable[[], bool], within: float, what: str) -> None:
    """Check `condition` every 0.1 s until it holds; fail with `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within:.0f} s: {what}")
        time.sleep(0.1)


def containers_of(client: DockerClient, pid: int) -> list[Container]:
    """The containers whose owner labels name process `pid` of this host."""
    labels = [f"{LABEL_OWNER_PID}={pid}", f"{LABEL_OWNER_HOST}={socket.gethostname()}"]
    found: list[Container] = client.containers.list(all=True, filters={"label": labels}, ignore_removed=True)
    return found


def _connect() -> tuple[DockerClient | None, str]:
    """A pinged docker client, or None and the reason there is none."""
    try:
        import docker
        import docker.errors
        import requests.exceptions
    except ImportError as exc:
        return None, f"the docker SDK is not installed ({exc}): pip install 'zephyr-tgi[docker]'"
    try:
        client = docker.from_env(timeout=60)
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        return None, f"Docker daemon not reachable: {exc}"
    try:
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        client.close()
        return None, f"Docker daemon not reachable: {exc}"
    return client, ""


@pytest.fixture(scope="session")
def docker_client() -> Iterator[DockerClient]:
    """A docker client for the session (skips or fails when Docker is unreachable)."""
    client, reason = _connect()
    if client is None:
        docker_unavailable(reason)
    yield client
    client.close()


@pytest.fixture(scope="session")
def emulator_image(docker_client: DockerClient) -> str:
    """The emulator image name, once it is known to be on the Docker host."""
    import docker.errors

    try:
        docker_client.images.get(EMULATOR_IMAGE)
    except docker.errors.ImageNotFound:
        docker_unavailable(f"image {EMULATOR_IMAGE} not built: run docker/emulator/build.sh")
    return EMULATOR_IMAGE


@pytest.fixture(scope="session", autouse=True)
def no_leaked_containers() -> Iterator[None]:
    """After the session, no container that TGIServer created in this process may be left."""
    client, _ = _connect()
    if client is None:  # the tests themselves report why Docker is missing
        yield
        return
    before = {c.id for c in client.containers.list(all=True, filters=OUR_CONTAINERS, ignore_removed=True)}
    yield
    found = client.containers.list(all=True, filters=OUR_CONTAINERS, ignore_removed=True)
    leaked = [c for c in found if c.id not in before]
    for container in leaked:  # remove them anyway, so one failing run does not poison the next
        container.remove(force=True, v=True)
    client.close()
    assert not leaked, f"zephyr_tgi containers left behind: {[c.name for c in leaked]}"
