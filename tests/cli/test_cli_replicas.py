"""`--url` repeated (or comma-separated URLs) makes the CLI's client one of several replicas."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.http.conftest import generation_requests
from zephyr_tgi.testing import TGIEmulator, expected_reply

from .conftest import Cli

TWO: dict[str, str | None] = {"ZEPHYR_TGI_MAX_ATTEMPTS": "2"}  # attempts count across replicas


@pytest.fixture
def replicas() -> Iterator[list[TGIEmulator]]:
    servers = [TGIEmulator().start() for _ in range(2)]
    yield servers
    for server in servers:
        server.stop()


def test_generate_with_a_repeated_url_uses_every_replica(replicas: list[TGIEmulator]) -> None:
    cli = Cli(replicas[0].url)
    for prompt in ("one", "two"):  # one process per call: each starts with idle replicas, the first first
        result = cli("generate", "--no-stream", prompt, "--url", replicas[0].url, "--url", replicas[1].url, url=False)
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == expected_reply(prompt).strip()
    stopped = replicas[0]
    stopped.stop()
    # Two attempts (the tests' default is one): the CLI does not retry a refused connection on one server, but
    # another replica is another URL.
    result = cli("generate", "--no-stream", "three", "--url", stopped.url, "--url", replicas[1].url, url=False, env=TWO)
    assert result.exit_code == 0, result.output
    assert [len(generation_requests(s)) for s in replicas] == [2, 1]


def test_the_environment_may_hold_comma_separated_urls(replicas: list[TGIEmulator]) -> None:
    cli = Cli(replicas[0].url)
    replicas[0].stop()
    urls = f"{replicas[0].url},{replicas[1].url}"
    result = cli("generate", "--no-stream", "Hi", env={**TWO, "ZEPHYR_TGI_URL": urls}, url=False)
    assert result.exit_code == 0, result.output
    assert len(generation_requests(replicas[1])) == 1


def test_health_lists_each_replica(replicas: list[TGIEmulator]) -> None:
    replicas[1].set_faults(unavailable_for=60.0)
    cli = Cli(replicas[0].url)
    args = ["health", "--url", replicas[0].url, "--url", replicas[1].url]
    text = cli(*args, url=False)
    assert text.exit_code == 0, text.output  # one healthy replica is enough to serve
    assert f"  {replicas[0].url}: healthy" in text.stdout
    assert f"  {replicas[1].url}: unhealthy" in text.stdout
    found = json.loads(cli(*args, "--json", url=False).stdout)
    assert [(r["url"], r["healthy"]) for r in found["replicas"]] == [(replicas[0].url, True), (replicas[1].url, False)]


def test_health_of_replicas_all_down_exits_1(replicas: list[TGIEmulator]) -> None:
    for server in replicas:
        server.set_faults(unavailable_for=60.0)
    cli = Cli(replicas[0].url)
    result = cli("health", "--url", replicas[0].url, "--url", replicas[1].url, url=False)
    assert result.exit_code == 1, result.output


def test_a_repeated_url_is_a_usage_error_naming_it(replicas: list[TGIEmulator]) -> None:
    cli = Cli(replicas[0].url)
    result = cli("generate", "Hi", "--url", replicas[0].url, "--url", replicas[0].url + "/", url=False)
    assert result.exit_code != 0
    assert "repeats base_url[0]" in result.output
