"""`zephyr-tgi ps` and `down` without Docker: the choice `down` needs, and how `ps` words ages and owners.

Listing and removing real containers is tested against Docker in tests/integration/test_cli_containers.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from zephyr_tgi._cli.containers import format_age, owner_column
from zephyr_tgi._launcher.ownership import ContainerRecord, Owner, OwnerState

from .conftest import Cli


@pytest.mark.parametrize("args", [(), ("--orphans", "--all"), ("name", "--orphans")])
def test_down_needs_exactly_one_choice_before_it_touches_docker(args: tuple[str, ...]) -> None:
    result = Cli("http://unused")("down", *args, env={"DOCKER_HOST": "tcp://127.0.0.1:9"})

    assert result.exit_code == 2
    assert "say which containers: NAME (or an id), --orphans or --all" in result.stderr


@pytest.mark.parametrize(
    ("seconds", "shown"), [(None, "?"), (-3.0, "0s"), (42.9, "42s"), (60, "1m"), (7300, "2h"), (200000, "2d")]
)
def test_ages_read_like_docker_ps(seconds: float | None, shown: str) -> None:
    assert format_age(seconds) == shown


OWNER = Owner("gpu-host", 41235, 0.0)


def record(state: OwnerState, *, keep: bool, owner: Owner | None = OWNER) -> ContainerRecord:
    return ContainerRecord(
        id="0" * 64,
        name="n",
        status="running",
        variant="main",
        port=32768,
        created=datetime.now(UTC),
        owner=owner,
        owner_state=state,
        keep=keep,
    )


@pytest.mark.parametrize(
    ("state", "keep", "shown"),
    [
        (OwnerState.ALIVE, False, "gpu-host:41235 (alive)"),
        (OwnerState.ALIVE, True, "gpu-host:41235 (alive, kept)"),
        (OwnerState.GONE, False, "gpu-host:41235 (gone: orphan)"),
        (OwnerState.GONE, True, "gpu-host:41235 (gone, kept)"),
        (OwnerState.ELSEWHERE, False, "gpu-host:41235 (elsewhere)"),
    ],
)
def test_the_owner_column_says_whether_it_is_an_orphan(state: OwnerState, keep: bool, shown: str) -> None:
    assert owner_column(record(state, keep=keep)) == shown


def test_a_container_without_owner_labels_has_no_owner() -> None:
    assert owner_column(record(OwnerState.UNKNOWN, keep=False, owner=None)) == "none (unknown)"
