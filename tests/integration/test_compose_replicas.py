"""A client of three emulator containers (docker/compose.replicas.yaml): one is stopped, then killed, while
requests run, and nothing is lost. docker-compose v1 is run directly: the project is this module's own."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from zephyr_tgi import AsyncZephyrClient, Conversation, RetryPolicy, ZephyrClient, ZephyrTGIError

pytestmark = pytest.mark.docker

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker" / "compose.replicas.yaml"
SERVICES = ("replica-a", "replica-b", "replica-c")
RETRY = RetryPolicy(max_attempts=4, initial_delay=0.05, max_delay=0.5)


class Compose:
    """One docker-compose project of the replicas file."""

    def __init__(self, image: str) -> None:
        self.project = f"zephyr-tgi-replicas-{os.getpid()}"
        self.env = {**os.environ, "ZEPHYR_TGI_EMULATOR_IMAGE": image}

    def run(self, *args: str, timeout: float = 120.0) -> str:
        completed = subprocess.run(
            ["docker-compose", "-p", self.project, "-f", str(COMPOSE_FILE), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            check=False,
        )
        assert completed.returncode == 0, f"docker-compose {' '.join(args)}: {completed.stderr[-2000:]}"
        return completed.stdout

    def url(self, service: str) -> str:
        host_port = self.run("port", service, "80").strip()  # "127.0.0.1:49153"
        assert host_port.startswith("127.0.0.1:"), host_port
        return f"http://{host_port}"


def _healthy(url: str) -> bool:
    try:
        return httpx2.get(f"{url}/health", timeout=1.0).status_code == 200
    except httpx2.HTTPError:
        return False


def _wait_healthy(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not _healthy(url):
        assert time.monotonic() < deadline, f"{url} not healthy within {timeout} s"
        time.sleep(0.2)  # polling the container's readiness, bounded by the deadline


@pytest.fixture
def compose(emulator_image: str) -> Iterator[tuple[Compose, list[str]]]:
    """The three replicas up and healthy, and their URLs; everything removed afterwards."""
    project = Compose(emulator_image)
    try:
        project.run("up", "-d")
        urls = [project.url(service) for service in SERVICES]
        for url in urls:
            _wait_healthy(url)
        yield project, urls
    finally:
        project.run("down", "-v", "--timeout", "2")


def _generations(url: str) -> int:
    stats = httpx2.get(f"{url}/__emulator__/stats", timeout=5.0).json()
    return int(stats["requests_by_route"].get("/generate", 0))


def test_replicas_are_published_on_loopback_only(compose: tuple[Compose, list[str]]) -> None:
    _, urls = compose
    assert all(url.startswith("http://127.0.0.1:") for url in urls)
    assert len(set(urls)) == 3


def test_a_container_stopped_mid_run_loses_nothing(compose: tuple[Compose, list[str]]) -> None:
    project, urls = compose
    results: list[object] = []
    with ZephyrClient(urls, retry=RETRY, engine="tgi") as client:
        for index in range(60):
            if index == 15:
                project.run("stop", "--timeout", "1", "replica-b")  # SIGTERM, then gone: its port refuses
            try:
                results.append(client.generate(f"prompt {index}", max_new_tokens=8))
            except ZephyrTGIError as exc:
                results.append(exc)
        endpoints = client.endpoints
    assert [r for r in results if isinstance(r, Exception)] == []
    assert endpoints[1].failures >= 1
    assert endpoints[1].last_error is not None
    assert endpoints[0].healthy
    assert endpoints[2].healthy
    served = [_generations(urls[0]), _generations(urls[2])]
    assert sum(served) >= 60 - 5  # b served at most its 5 turns of the first 15 calls
    assert min(served) >= 20  # the two left share the load


async def test_a_container_killed_under_concurrent_requests_loses_nothing(
    compose: tuple[Compose, list[str]],
) -> None:
    project, urls = compose
    gate = asyncio.Semaphore(6)
    finished = 0

    async with AsyncZephyrClient(urls, retry=RETRY, engine="tgi") as client:

        async def one(index: int) -> object:
            nonlocal finished
            async with gate:
                try:
                    outcome: object = await client.chat(f"question {index}", max_new_tokens=16)
                except ZephyrTGIError as exc:
                    outcome = exc
            finished += 1
            if finished == 10:  # while 6 others are running or about to
                await asyncio.to_thread(project.run, "kill", "replica-c")
            return outcome

        results = await asyncio.gather(*(one(i) for i in range(60)))
        endpoints = client.endpoints
    assert [r for r in results if isinstance(r, Exception)] == []
    assert endpoints[2].failures >= 1
    assert [e.in_flight for e in endpoints] == [0, 0, 0]


def test_a_conversation_moves_when_its_container_stops_and_goes_on(compose: tuple[Compose, list[str]]) -> None:
    project, urls = compose
    with ZephyrClient(urls, retry=RETRY, engine="tgi") as client:
        conversation = Conversation(client)
        conversation.ask("first", max_new_tokens=8)
        (home,) = [i for i, url in enumerate(urls) if _generations(url) == 1]
        project.run("stop", "--timeout", "1", SERVICES[home])
        conversation.ask("second", max_new_tokens=8)
        conversation.ask("third", max_new_tokens=8)
    moved = [i for i, url in enumerate(urls) if i != home and _generations(url) > 0]
    assert len(moved) == 1
    assert _generations(urls[moved[0]]) == 2
    assert len(conversation.messages) == 6
