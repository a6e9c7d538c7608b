"""`zephyr-tgi serve`, `ps` and `down` against real Docker and the emulator image.

`serve` runs as a real process and is ended with each signal; `ps` must show owners and orphans, `down` must
remove exactly what it is asked to and nothing of another owner. `down --all` is not run here: other test
sessions share this daemon, and --all would stop their servers (its selection is tested in
tests/unit/test_launch_ownership.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import docker.errors
import psutil
import pytest

from tests.integration.conftest import containers_of, poll
from zephyr_tgi._launcher.args import LABEL_PACKAGE, LABEL_VARIANT, PACKAGE_LABEL_VALUE
from zephyr_tgi._launcher.ownership import Owner, owner_labels

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
WITHIN = 60.0


def zephyr_tgi(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zephyr_tgi._cli.main", *args],
        capture_output=True,
        text=True,
        timeout=WITHIN,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.fixture
def serve_env(tmp_path: Path) -> dict[str, str]:
    return {"HF_HOME": str(tmp_path / "hf"), "HF_TOKEN": "", "ZEPHYR_TGI_VARIANT": "", "ZEPHYR_TGI_GPUS": "none"}


@pytest.fixture
def labelled(docker_client: DockerClient, emulator_image: str) -> Iterator[Callable[[Owner, bool], Container]]:
    """Runs emulator containers labelled as zephyr-tgi's with a given owner; removes what is left."""
    made: list[Container] = []

    def run(owner: Owner, keep: bool) -> Container:
        labels = {LABEL_PACKAGE: PACKAGE_LABEL_VALUE, LABEL_VARIANT: "main"} | owner_labels(owner, keep=keep)
        container = docker_client.containers.run(emulator_image, labels=labels, detach=True)
        made.append(container)
        return container

    yield run
    for container in made:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)


def a_gone_owner() -> Owner:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    started = psutil.Process(child.pid).create_time()
    child.wait(timeout=30)
    return Owner(socket.gethostname(), child.pid, started)


def exists(container: Container) -> bool:
    try:
        container.reload()
    except docker.errors.NotFound:
        return False
    return True


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=["SIGTERM", "SIGHUP", "SIGKILL"]
)
def test_serve_ended_by_a_signal_leaves_no_container(
    docker_client: DockerClient, emulator_image: str, serve_env: dict[str, str], signum: signal.Signals
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "zephyr_tgi._cli.main", "serve", "--image", emulator_image, "--gpus", "none"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env={**os.environ, **serve_env},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # bounded by serve's startup timeout and this test's timeout
        assert line.startswith("export ZEPHYR_TGI_URL=http://127.0.0.1:"), line
        assert [c.status for c in containers_of(docker_client, process.pid)] == ["running"]
        process.send_signal(signum)
        process.wait(timeout=WITHIN)
        poll(
            lambda: not containers_of(docker_client, process.pid), WITHIN, f"serve's container gone after {signum.name}"
        )
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        if process.stdout is not None:  # the pipe is ours to close, not the garbage collector's
            process.stdout.close()


def test_detached_serve_is_kept_listed_and_removed_by_name(
    docker_client: DockerClient, emulator_image: str, serve_env: dict[str, str]
) -> None:
    started = zephyr_tgi("serve", "--image", emulator_image, "--gpus", "none", "--detach", "--json", env=serve_env)
    assert started.returncode == 0, started.stderr
    container_id = json.loads(started.stdout)["container_id"]
    try:
        container = docker_client.containers.get(container_id)
        assert container.status == "running"  # its owner has exited: kept on purpose
        listed = zephyr_tgi("ps", "--json")
        assert listed.returncode == 0, listed.stderr
        ours = [row for row in json.loads(listed.stdout) if row["id"] == container_id]
        assert len(ours) == 1
        assert ours[0]["keep"] is True
        assert ours[0]["owner_state"] == "gone"
        assert ours[0]["orphan"] is False
        assert isinstance(ours[0]["port"], int)
        assert zephyr_tgi("down", "--orphans").returncode == 0
        assert exists(container)  # kept: not an orphan
        removed = zephyr_tgi("down", str(container.name))
        assert removed.returncode == 0, removed.stderr
        assert f"removed {container.name}" in removed.stdout
        assert not exists(container)
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.containers.get(container_id).remove(force=True, v=True)


def test_ps_shows_owners_and_down_orphans_removes_only_orphans(
    labelled: Callable[[Owner, bool], Container],
) -> None:
    orphan = labelled(a_gone_owner(), False)
    live = labelled(Owner.current(), False)
    listed = zephyr_tgi("ps")
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert "gone: orphan" in lines[str(orphan.name)]
    assert f"{socket.gethostname()}:{os.getpid()} (alive)" in lines[str(live.name)]
    assert listed.stdout.splitlines()[0].split() == ["name", "id", "status", "owner", "variant", "port", "age"]

    removed = zephyr_tgi("down", "--orphans")

    assert removed.returncode == 0, removed.stderr
    assert f"removed {orphan.name}" in removed.stdout
    assert not exists(orphan)
    assert exists(live)


def test_down_refuses_a_name_that_is_not_ours_and_needs_a_choice(
    docker_client: DockerClient, emulator_image: str, labelled: Callable[[Owner, bool], Container]
) -> None:
    stranger = docker_client.containers.run(emulator_image, detach=True)  # not labelled by zephyr-tgi
    try:
        refused = zephyr_tgi("down", str(stranger.name))
        assert refused.returncode == 2
        assert "no zephyr-tgi container named" in refused.stderr
        assert exists(stranger)
        assert zephyr_tgi("down").returncode == 2
    finally:
        stranger.remove(force=True, v=True)
