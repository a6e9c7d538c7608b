"""Owner labels, the owner's liveness, and the reaper's release handshake (the reaper's removal of a container
after its owner dies runs against real Docker in tests/integration/test_owner_signals.py)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
import pytest

from zephyr_tgi._errors import ConfigurationError
from zephyr_tgi._launcher.containers import select
from zephyr_tgi._launcher.ownership import (
    LABEL_CREATED,
    LABEL_KEEP,
    LABEL_OWNER_HOST,
    LABEL_OWNER_PID,
    LABEL_OWNER_STARTED,
    Owner,
    OwnerState,
    describe_containers,
    owner_labels,
)
from zephyr_tgi._launcher.reaper import Reaper


def a_finished_process() -> Owner:
    """An owner that ran on this host and has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    started = psutil.Process(child.pid).create_time()
    child.wait(timeout=30)
    return Owner(host=socket.gethostname(), pid=child.pid, started=started)


def test_this_process_is_alive() -> None:
    assert Owner.current().state() is OwnerState.ALIVE


def test_an_exited_process_is_gone() -> None:
    assert a_finished_process().state() is OwnerState.GONE


def test_a_reused_pid_is_not_mistaken_for_the_owner() -> None:
    # Our own pid, but a start time that is not ours: another process that once had this pid.
    impostor = Owner(host=socket.gethostname(), pid=os.getpid(), started=Owner.current().started - 3600)
    assert impostor.state() is OwnerState.GONE


def test_an_owner_on_another_host_cannot_be_judged_from_here() -> None:
    assert Owner(host="some-other-host", pid=1, started=0.0).state() is OwnerState.ELSEWHERE


def test_the_labels_round_trip_and_say_since_when() -> None:
    owner = Owner.current()
    now = datetime(2026, 12, 1, 21, 0, tzinfo=UTC)
    labels = owner_labels(owner, keep=True, now=now)
    assert labels[LABEL_OWNER_HOST] == owner.host
    assert labels[LABEL_OWNER_PID] == str(os.getpid())
    assert labels[LABEL_CREATED] == "2026-12-01T21:00:00+00:00"
    assert labels[LABEL_KEEP] == "true"
    back = Owner.from_labels(labels)
    assert back is not None
    assert back.pid == owner.pid
    assert back.state() is OwnerState.ALIVE


@pytest.mark.parametrize("broken", [{}, {LABEL_OWNER_HOST: "h", LABEL_OWNER_PID: "x", LABEL_OWNER_STARTED: "1"}])
def test_missing_or_malformed_owner_labels_mean_no_owner(broken: dict[str, str]) -> None:
    assert Owner.from_labels(broken) is None


class Listed:
    """A container as `containers.list` returns it: labels, status, attrs."""

    def __init__(self, name: str, labels: dict[str, str], status: str = "running", port: int | None = 32768) -> None:
        self.id = f"id-{name}"
        self.name = name
        self.labels = labels
        self.status = status
        bindings = [{"HostIp": "127.0.0.1", "HostPort": str(port)}] if port else None
        self.attrs: dict[str, Any] = {"NetworkSettings": {"Ports": {"80/tcp": bindings}}}


def test_only_a_gone_owner_on_this_host_makes_an_orphan_and_kept_ones_are_not() -> None:
    gone = a_finished_process()
    now = datetime.now(UTC)
    containers: list[Any] = [
        Listed("orphan", owner_labels(gone, keep=False, now=now - timedelta(minutes=5))),
        Listed("kept", owner_labels(gone, keep=True)),
        Listed("live", owner_labels(Owner.current(), keep=False)),
        Listed("remote", owner_labels(Owner("elsewhere", 1, 0.0), keep=False)),
        Listed("compose", {}, port=None),
    ]
    records = {record.name: record for record in describe_containers(containers)}
    assert [name for name, record in records.items() if record.is_orphan] == ["orphan"]
    assert records["kept"].owner_state is OwnerState.GONE
    assert records["live"].owner_state is OwnerState.ALIVE
    assert records["remote"].owner_state is OwnerState.ELSEWHERE
    assert records["compose"].owner_state is OwnerState.UNKNOWN
    assert records["orphan"].port == 32768
    assert records["compose"].port is None
    age = records["orphan"].age(now)
    assert age is not None
    assert 299 <= age <= 301
    assert records["orphan"].as_json(now)["orphan"] is True


def test_a_released_reaper_exits_at_once_without_touching_docker() -> None:
    reaper = Reaper.spawn("no-such-container", Owner.current(), docker_host="tcp://127.0.0.1:9")
    process = psutil.Process(reaper.pid)
    assert process.is_running()
    assert os.getsid(reaper.pid) != os.getsid(0)  # its own session: the terminal's Ctrl-C does not reach it
    reaper.release()
    assert not psutil.pid_exists(reaper.pid)  # exited, and collected: no zombie left in the owner


def records_for_down() -> dict[str, Any]:
    gone = a_finished_process()
    containers: list[Any] = [
        Listed("orphan", owner_labels(gone, keep=False)),
        Listed("kept", owner_labels(gone, keep=True)),
        Listed("live", owner_labels(Owner.current(), keep=False)),
    ]
    return {record.name: record for record in describe_containers(containers)}


def test_down_selects_the_orphans_all_or_one_by_name_or_id_prefix() -> None:
    records = records_for_down()
    listed = list(records.values())
    assert [r.name for r in select(listed, name=None, orphans=True, everything=False)] == ["orphan"]
    assert [r.name for r in select(listed, name=None, orphans=False, everything=True)] == ["orphan", "kept", "live"]
    assert [r.name for r in select(listed, name="kept", orphans=False, everything=False)] == ["kept"]
    assert [r.name for r in select(listed, name="id-li", orphans=False, everything=False)] == ["live"]


@pytest.mark.parametrize(
    ("choice", "match"),
    [
        ({"name": None, "orphans": False, "everything": False}, "say which"),
        ({"name": "kept", "orphans": True, "everything": False}, "say which"),
        ({"name": "someone-elses", "orphans": False, "everything": False}, "no zephyr-tgi container named"),
        ({"name": "id-", "orphans": False, "everything": False}, "no zephyr-tgi container named"),  # too short
        ({"name": "id-x", "orphans": False, "everything": False}, "no zephyr-tgi container named"),
    ],
)
def test_down_refuses_an_unclear_choice(choice: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        select(list(records_for_down().values()), **choice)


def test_an_owner_in_another_pid_namespace_of_the_same_host_is_not_judged() -> None:
    here = Owner.current()
    assert here.pid_namespace is not None  # Linux, where Docker hosts run
    other = Owner(here.host, a_finished_process().pid, 0.0, pid_namespace="pid:[1]")
    assert other.state() is OwnerState.ELSEWHERE
    back = Owner.from_labels(owner_labels(here, keep=False))
    assert back is not None
    assert back.pid_namespace == here.pid_namespace


def test_a_reaper_that_never_starts_watching_is_an_error_not_silence(monkeypatch: pytest.MonkeyPatch) -> None:
    false = shutil.which("false")
    assert false is not None
    monkeypatch.setattr(sys, "executable", false)  # "python" that exits at once, without a word
    with pytest.raises(OSError, match="did not start watching"):
        Reaper.spawn("no-such-container", Owner.current(), docker_host=None)
