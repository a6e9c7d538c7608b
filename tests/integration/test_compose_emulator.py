"""The client against the emulator service that docker-compose starts (pytest-docker, docker-compose v1)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from zephyr_tgi import AsyncZephyrClient, OverloadedError, RetryPolicy, ZephyrClient

pytestmark = pytest.mark.docker

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker" / "compose.emulator.yaml"


@pytest.fixture(scope="session")
def docker_compose_command() -> str:
    """Debian ships docker-compose 1.29 (the v1 command); there is no `docker compose` plugin here."""
    return "docker-compose"


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    return f"zephyr-tgi-tests-{os.getpid()}"


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    # pytest-docker's default adds --wait, which docker-compose v1 does not know.
    return ["up -d"]


@pytest.fixture(scope="session")
def docker_cleanup() -> list[str]:
    return ["down -v --timeout 5"]


def _healthy(url: str) -> bool:
    try:
        return httpx2.get(f"{url}/health", timeout=1.0).status_code == 200
    except httpx2.HTTPError:
        return False


@pytest.fixture(scope="session")
def compose_url(emulator_image: str, docker_ip: str, docker_services: Any) -> str:
    """The URL of the compose-started emulator, once its /health answers."""
    port = docker_services.port_for("tgi-emulator", 80)
    url = f"http://{docker_ip}:{port}"
    docker_services.wait_until_responsive(check=lambda: _healthy(url), timeout=60.0, pause=0.2)
    return url


@pytest.fixture
def client(compose_url: str) -> Iterator[ZephyrClient]:
    httpx2.post(f"{compose_url}/__emulator__/reset", timeout=5.0)
    with ZephyrClient(compose_url, retry=RetryPolicy(initial_delay=0.01, max_delay=0.05)) as client:
        yield client


def test_published_on_loopback_only(compose_url: str) -> None:
    assert compose_url.startswith("http://127.0.0.1:")


def test_info_reflects_the_compose_command(client: ZephyrClient) -> None:
    info = client.info()
    assert info.model_id == "TheBloke/zephyr-7B-alpha-GPTQ"
    assert (info.max_input_tokens, info.max_total_tokens) == (3696, 4096)


def test_chat_and_stream_agree(client: ZephyrClient) -> None:
    whole = client.chat("What is GPTQ?")
    chunks = list(client.chat_stream("What is GPTQ?"))
    assert chunks[-1].result is not None
    assert "".join(c.text for c in chunks) == whole.text


async def test_async_chat_completion_stream(compose_url: str) -> None:
    async with AsyncZephyrClient(compose_url) as client:
        chunks = [c async for c in await client.chat_completion("Hi", stream=True, max_tokens=5)]
        assert chunks
        assert chunks[-1].choices[0].finish_reason is not None


def test_overload_in_the_container_is_retried_then_reported(client: ZephyrClient, compose_url: str) -> None:
    httpx2.post(f"{compose_url}/__emulator__/faults", json={"overload_next": 2}, timeout=5.0)
    assert client.chat("Hi").text
    httpx2.post(f"{compose_url}/__emulator__/faults", json={"overload_next": 50}, timeout=5.0)
    with pytest.raises(OverloadedError):
        client.chat("Hi")
    stats = json.loads(httpx2.get(f"{compose_url}/__emulator__/stats", timeout=5.0).text)
    assert stats["overloaded_total"] == 2 + 4


def test_metrics_count_the_requests(client: ZephyrClient) -> None:
    client.chat("Hi")
    metrics = client.metrics()
    assert metrics.get("tgi_request_count", 0) >= 1
