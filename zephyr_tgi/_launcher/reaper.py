"""The reaper: a small process that removes a container as soon as the process that started it is gone.

In the spirit of testcontainers' Ryuk, but without a container of its own: `TGIServer` starts one reaper per
container it creates, in a session of its own (so Ctrl-C in a terminal, or a signal to the owner's process
group, does not reach it), and holds the write end of a pipe to the reaper's stdin. The kernel closes that
pipe when the owner exits by any path, SIGKILL included; the reaper then reads end-of-file and removes the
container. An owner that lets the container live on on purpose (`keep=True`) writes `release` first.

Run as `python -m zephyr_tgi._launcher.reaper CONTAINER_ID --owner-pid PID --owner-started T`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from .owner_labels import LABEL_OWNER_PID, LABEL_OWNER_STARTED

if TYPE_CHECKING:
    from docker import DockerClient

    from .ownership import Owner

__all__ = ["RELEASE", "Reaper", "main"]

RELEASE = b"release\n"
READY = b"watching\n"  # the reaper's first line: it runs, and this zephyr_tgi imports
_READY_WITHIN = 30.0  # seconds; the reaper imports zephyr_tgi, which takes well under one
# The daemon may be briefly unreachable when the owner dies (a restarting dockerd): keep trying this long.
_GIVE_UP_AFTER = 60.0
_RETRY_EVERY = 1.0


class Reaper:
    """The owner's handle on a running reaper process."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process

    @classmethod
    def spawn(cls, container_id: str, owner: Owner, *, docker_host: str | None) -> Reaper:
        """Start a reaper for `container_id`, owned by `owner` (this process), and wait until it watches.

        Raises:
            OSError: the reaper could not be started, or did not report that it watches.
        """
        env = dict(os.environ)
        if docker_host:
            env["DOCKER_HOST"] = docker_host
        # The reaper must import this very zephyr_tgi, even when it was found through sys.path[0] alone.
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        command = [
            sys.executable,
            "-m",
            "zephyr_tgi._launcher.reaper",
            container_id,
            "--owner-pid",
            str(owner.pid),
            "--owner-started",
            f"{owner.started:.2f}",
        ]
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # out of the owner's process group: its signals are not ours
            close_fds=True,
        )
        reaper = cls(process)
        if not reaper._reports_ready():
            reaper.release()
            raise OSError(f"the reaper (pid {process.pid}) did not start watching within {_READY_WITHIN:.0f} s")
        return reaper

    def _reports_ready(self) -> bool:
        pipe = self._process.stdout
        if pipe is None:
            return False
        readable, _, _ = select.select([pipe], [], [], _READY_WITHIN)
        ready = bool(readable) and pipe.readline() == READY
        pipe.close()
        return ready

    @property
    def pid(self) -> int:
        """The reaper's process id."""
        return self._process.pid

    def release(self) -> None:
        """Tell the reaper to exit without removing the container (it was removed, or is kept on purpose)."""
        pipe: IO[bytes] | None = self._process.stdin
        if pipe is not None and not pipe.closed:
            with contextlib.suppress(OSError):  # the reaper already exited: nothing to tell
                pipe.write(RELEASE)
                pipe.flush()
            with contextlib.suppress(OSError):
                pipe.close()
        try:
            self._process.wait(timeout=5)  # collect it, so no zombie stays behind in a long-lived owner
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=5)


def _wait_for_owner(stdin: IO[bytes]) -> bool:
    """Block until the owner releases us (True) or its end of the pipe closes (False: it is gone)."""
    while True:
        line = stdin.readline()
        if not line:
            return False
        if line == RELEASE:
            return True


def _remove(client: DockerClient, container_id: str, owner_pid: int, owner_started: float) -> None:
    import docker.errors

    try:
        container = client.containers.get(container_id)
    except docker.errors.NotFound:
        return  # the owner removed it already
    labels = container.labels or {}
    same_owner = (
        labels.get(LABEL_OWNER_PID) == str(owner_pid) and labels.get(LABEL_OWNER_STARTED) == f"{owner_started:.2f}"
    )
    if not same_owner:  # never remove a container someone else owns
        return
    with contextlib.suppress(docker.errors.NotFound):
        container.remove(force=True, v=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Wait for the owner to go, then remove the container; exit 0 when done (or released)."""
    parser = argparse.ArgumentParser(prog="python -m zephyr_tgi._launcher.reaper")
    parser.add_argument("container_id")
    parser.add_argument("--owner-pid", type=int, required=True)
    parser.add_argument("--owner-started", type=float, required=True)
    args = parser.parse_args(argv)
    sys.stdout.buffer.write(READY)  # before the docker SDK is imported: the owner waits for this line
    sys.stdout.buffer.flush()
    if _wait_for_owner(sys.stdin.buffer):
        return 0
    import docker
    import docker.errors
    import requests.exceptions

    deadline = time.monotonic() + _GIVE_UP_AFTER
    while True:
        try:
            client = docker.from_env()
            try:
                _remove(client, args.container_id, args.owner_pid, args.owner_started)
            finally:
                client.close()
            return 0
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            if time.monotonic() > deadline:
                return 1  # the next TGIServer start or `zephyr-tgi down --orphans` removes it
            time.sleep(_RETRY_EVERY)


if __name__ == "__main__":
    sys.exit(main())
