"""The `zephyr-tgi-emulator` Docker image, for real.

Each test starts containers of the image (built by docker/emulator/build.sh) with the Docker SDK,
publishing port 80 on 127.0.0.1 with an ephemeral host port that is read back from Docker, and
talks to the emulator over HTTP. Containers are labelled `org.zephyr-tgi.test=1` and always removed.

Without a reachable Docker daemon (or without the image) the tests skip, unless
ZEPHYR_TGI_REQUIRE_DOCKER=1 is set: then they fail (fixtures `docker_client` and `emulator_image`
of tests/integration/conftest.py).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2
import pytest

from tests.conftest import docker_unavailable
from zephyr_tgi.testing._faults import DEFAULT_EXIT_MESSAGE

if TYPE_CHECKING:
    from docker import DockerClient

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

TEST_LABEL = "org.zephyr-tgi.test"
MODEL_ID = "TheBloke/zephyr-7B-alpha-GPTQ"
TGI_FLAGS = (
    "--model-id", MODEL_ID,
    "--max-input-tokens", "3696",
    "--max-total-tokens", "4096",
    "--usage-stats", "off",
)  # fmt: skip
REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker" / "compose.emulator.yaml"
READY_TIMEOUT_S = 60.0

Runner = Callable[..., Any]


@pytest.fixture
def run_emulator(docker_client: DockerClient, emulator_image: str, request: pytest.FixtureRequest) -> Iterator[Runner]:
    """Start emulator containers; every one of them is removed at teardown, whatever happened."""
    import docker

    started: list[Any] = []

    def run(*flags: str, port: int = 80, environment: dict[str, str] | None = None) -> Any:
        # ("127.0.0.1", None): loopback only, host port chosen by Docker (read back by _host_port).
        published: dict[str, Any] = {f"{port}/tcp": ("127.0.0.1", None)}
        container = docker_client.containers.create(
            emulator_image,
            command=list(flags),
            detach=True,
            init=True,
            environment=environment,
            labels={TEST_LABEL: "1", f"{TEST_LABEL}.node": request.node.nodeid[:200]},
            ports=published,
        )
        started.append(container)
        container.start()
        return container

    yield run
    # Teardown (runs whatever the test did): force-remove every container this test created.
    for container in started:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)


def _logs(container: Any) -> str:
    try:
        return bytes(container.logs(stdout=True, stderr=True)).decode("utf-8", "replace")
    except Exception as exc:  # the container may be gone already
        return f"<no logs: {exc}>"


def _host_port(container: Any, port: int = 80) -> int:
    """The ephemeral 127.0.0.1 port Docker published for `port`/tcp."""
    deadline = time.monotonic() + 10
    while True:
        container.reload()
        bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get(f"{port}/tcp") or []
        for binding in bindings:
            if binding.get("HostIp") in ("127.0.0.1", "") and binding.get("HostPort"):
                return int(binding["HostPort"])
        if time.monotonic() > deadline:
            pytest.fail(f"Docker published no host port for {port}/tcp: {bindings!r}")
        time.sleep(0.05)


def _wait_ready(container: Any, base_url: str, timeout: float = READY_TIMEOUT_S) -> float:
    """Poll GET /health until it answers 200; returns the seconds it took. Fails early if the
    container exits, and after `timeout` seconds."""
    start = time.monotonic()
    last: str = "no answer yet"
    while time.monotonic() - start < timeout:
        container.reload()
        if container.status in ("exited", "dead"):
            pytest.fail(
                f"emulator container exited ({container.attrs['State'].get('ExitCode')}) before it was "
                f"ready; logs:\n{_logs(container)}"
            )
        try:
            response = httpx2.get(f"{base_url}/health", timeout=2.0)
        except httpx2.TransportError as exc:
            last = repr(exc)
        else:
            if response.status_code == 200:
                return time.monotonic() - start
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        time.sleep(0.1)
    pytest.fail(f"emulator not ready after {timeout:.0f}s ({last}); logs:\n{_logs(container)}")


def _start_ready(run_emulator: Runner, *flags: str) -> str:
    container = run_emulator(*TGI_FLAGS, *flags)
    base_url = f"http://127.0.0.1:{_host_port(container)}"
    _wait_ready(container, base_url)
    return base_url


def test_image_metadata_matches_tgi_interface(docker_client: DockerClient, emulator_image: str) -> None:
    config = docker_client.images.get(emulator_image).attrs["Config"]
    assert config["Entrypoint"][-2:] == ["-m", "zephyr_tgi.testing"]
    assert not config.get("Cmd")  # the container's command is the list of TGI launcher flags
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PORT"] == "80"
    assert env["HF_HOME"] == "/data"
    assert "80/tcp" in config["ExposedPorts"]
    assert config["Labels"]["org.opencontainers.image.title"] == "zephyr-tgi-emulator"


def test_health_and_info(run_emulator: Runner) -> None:
    base_url = _start_ready(run_emulator)
    info = httpx2.get(f"{base_url}/info", timeout=10.0)
    assert info.status_code == 200, info.text
    body = info.json()
    # The launcher flags given as the container's command reached the emulator.
    assert body["model_id"] == MODEL_ID
    assert body["max_input_tokens"] == 3696
    assert body["max_total_tokens"] == 4096


def test_generate_returns_generated_text(run_emulator: Runner) -> None:
    base_url = _start_ready(run_emulator)
    response = httpx2.post(
        f"{base_url}/generate",
        json={"inputs": "What is a container image?", "parameters": {"max_new_tokens": 16}},
        timeout=30.0,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["generated_text"], str)
    assert body["generated_text"]


def test_port_environment_variable_is_honoured(run_emulator: Runner) -> None:
    # Like the real TGI image: PORT from the environment when --port is not given.
    container = run_emulator(*TGI_FLAGS, port=8081, environment={"PORT": "8081"})
    base_url = f"http://127.0.0.1:{_host_port(container, 8081)}"
    _wait_ready(container, base_url)


def test_exit_flag_stops_the_container_with_the_given_code(run_emulator: Runner) -> None:
    container = run_emulator(*TGI_FLAGS, "--emulator-exit-after", "0.5", "--emulator-exit-code", "3")
    result = container.wait(timeout=60)
    logs = _logs(container)
    assert result["StatusCode"] == 3, logs
    assert DEFAULT_EXIT_MESSAGE in logs, logs


def _compose(*args: str, project: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker-compose", "-p", project, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_compose_service_becomes_healthy(docker_client: DockerClient, emulator_image: str, tmp_path: Path) -> None:
    """docker/compose.emulator.yaml with docker-compose v1: the service starts, its port is
    published on 127.0.0.1 and its own healthcheck (python3 in the image) passes."""
    if shutil.which("docker-compose") is None:
        docker_unavailable("docker-compose (v1) is not installed")
    override = tmp_path / "compose.test.yaml"
    override.write_text(
        f'version: "2.4"\nservices:\n  tgi-emulator:\n    labels:\n      {TEST_LABEL}: "1"\n',
        encoding="utf-8",
    )
    files = ("-f", str(COMPOSE_FILE), "-f", str(override))
    project = f"zephyr-tgi-test-{uuid.uuid4().hex[:10]}"
    try:
        up = _compose(*files, "up", "-d", project=project)
        assert up.returncode == 0, up.stderr
        port = _compose(*files, "port", "tgi-emulator", "80", project=project)
        assert port.returncode == 0, port.stderr
        address = port.stdout.strip()
        assert address.startswith("127.0.0.1:"), address
        (container,) = docker_client.containers.list(
            all=True, filters={"label": [f"com.docker.compose.project={project}"]}
        )
        _wait_ready(container, f"http://{address}")
        deadline = time.monotonic() + READY_TIMEOUT_S
        while (health := container.attrs["State"].get("Health", {}).get("Status")) != "healthy":
            assert health in ("starting", None), f"healthcheck: {container.attrs['State'].get('Health')}"
            assert time.monotonic() < deadline, f"not healthy after {READY_TIMEOUT_S:.0f}s: {health}"
            time.sleep(0.2)
            container.reload()
    finally:
        _compose(*files, "down", "-v", "--remove-orphans", "-t", "2", project=project)
        for leftover in docker_client.containers.list(
            all=True, filters={"label": [f"com.docker.compose.project={project}"]}
        ):
            leftover.remove(force=True, v=True)
