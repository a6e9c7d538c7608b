"""No container outlives its owner: a real owner process, the emulator image, and every way it can end.

Each test runs tests/integration/owner_process.py, which starts a TGIServer and waits; the test ends it with a
signal and polls Docker (bounded in time) until no container of that owner is left, and no reaper either.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker.errors
import psutil
import pytest

from tests.integration.conftest import containers_of, poll
from zephyr_tgi import TGIServer
from zephyr_tgi._launcher.args import LABEL_PACKAGE, PACKAGE_LABEL_VALUE
from zephyr_tgi._launcher.ownership import Owner, owner_labels

if TYPE_CHECKING:
    from docker import DockerClient

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]

OWNER_SCRIPT = Path(__file__).with_name("owner_process.py")
ROOT = Path(__file__).resolve().parents[2]
GONE_WITHIN = 30.0  # seconds from the signal until nothing is left (it takes well under one)
START_WITHIN = 90.0


@pytest.fixture
def start_owner(emulator_image: str, tmp_path: Path) -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    """Starts owner processes; kills any the test left running (their containers are then the reaper's)."""
    started: list[subprocess.Popen[str]] = []

    def start(mode: str) -> subprocess.Popen[str]:
        owner = subprocess.Popen(
            [sys.executable, str(OWNER_SCRIPT), emulator_image, str(tmp_path / "hf"), mode],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        started.append(owner)
        return owner

    yield start
    for owner in started:
        if owner.poll() is None:
            owner.kill()
            owner.wait(timeout=30)
        if owner.stdout is not None:  # the pipe is ours to close, not the garbage collector's
            owner.stdout.close()


def reapers_of(pid: int) -> list[psutil.Process]:
    try:
        return [p for p in psutil.Process(pid).children() if "zephyr_tgi._launcher.reaper" in " ".join(p.cmdline())]
    except psutil.NoSuchProcess:
        return []


def assert_nothing_left(client: DockerClient, owner: subprocess.Popen[str], reapers: list[psutil.Process]) -> None:
    owner.wait(timeout=GONE_WITHIN)
    poll(lambda: not containers_of(client, owner.pid), GONE_WITHIN, f"the containers of owner {owner.pid} removed")
    poll(lambda: not any(_alive(reaper) for reaper in reapers), GONE_WITHIN, "the reaper exits")


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize(
    "signum",
    [signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGKILL],
    ids=["SIGTERM", "SIGHUP", "SIGINT", "SIGKILL"],
)
def test_a_signal_to_a_ready_owner_leaves_nothing(
    docker_client: DockerClient, start_owner: Callable[[str], subprocess.Popen[str]], signum: signal.Signals
) -> None:
    owner = start_owner("ready")
    assert owner.stdout is not None
    line = owner.stdout.readline()  # the owner's startup_timeout (and this test's timeout) bound the wait
    assert line.startswith("ready "), f"the owner did not get ready: {line!r}"
    container_id = line.split()[1]
    assert docker_client.containers.get(container_id).status == "running"
    reapers = reapers_of(owner.pid)
    assert len(reapers) == 1
    owner.send_signal(signum)
    assert_nothing_left(docker_client, owner, reapers)


def test_sigkill_during_the_readiness_wait_leaves_nothing(
    docker_client: DockerClient, start_owner: Callable[[str], subprocess.Popen[str]]
) -> None:
    owner = start_owner("waiting")  # the emulator refuses connections for minutes: the owner keeps waiting

    def running() -> bool:
        return any(c.status == "running" for c in containers_of(docker_client, owner.pid))

    poll(running, START_WITHIN, "the owner's container running")
    reapers = reapers_of(owner.pid)
    assert len(reapers) == 1
    assert owner.poll() is None  # still in the readiness wait
    owner.kill()
    assert_nothing_left(docker_client, owner, reapers)


def test_the_next_start_removes_an_orphan_the_reaper_never_saw(
    docker_client: DockerClient, emulator_image: str, tmp_path: Path
) -> None:
    # An orphan as a crash before the reaper started (or a host reboot) would leave: labelled, no reaper.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    gone = Owner(socket.gethostname(), child.pid, psutil.Process(child.pid).create_time())
    child.wait(timeout=30)
    labels = {LABEL_PACKAGE: PACKAGE_LABEL_VALUE} | owner_labels(gone, keep=False)
    orphan = docker_client.containers.run(emulator_image, labels=labels, detach=True)
    live_labels = {LABEL_PACKAGE: PACKAGE_LABEL_VALUE} | owner_labels(Owner.current(), keep=False)
    live = docker_client.containers.run(emulator_image, labels=live_labels, detach=True)
    try:
        options: dict[str, Any] = {"image": emulator_image, "gpus": None, "cache_dir": tmp_path, "progress": False}
        with TGIServer(**options, startup_timeout=60):
            pass
        with pytest.raises(docker.errors.NotFound):
            orphan.reload()
        live.reload()
        assert live.status == "running"  # its owner (this process) is alive
    finally:
        for container in (orphan, live):
            with contextlib.suppress(docker.errors.NotFound):  # the orphan is gone when the test passed
                container.remove(force=True, v=True)
