"""TGIServer's docker plumbing and error paths, against a fake docker client.

The fake records what TGIServer asks of Docker. When a fake container "serves", an in-process TGIEmulator
answers on the published port, so readiness probing and clients are real HTTP. Real-container behaviour is
covered by tests/integration/test_server_emulator.py.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tarfile
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import docker.errors
import psutil
import pytest
import requests
import requests.exceptions

from zephyr_tgi._errors import (
    ConfigurationError,
    ContainerStartError,
    DockerUnavailableError,
    GPUUnavailableError,
    ServerError,
    ServerNotReadyError,
)
from zephyr_tgi._launcher.args import (
    LABEL_CONFIG_HASH,
    LABEL_CREATOR,
    LABEL_PACKAGE,
    TOKENIZER_CONFIG_PATH,
    build_launcher_args,
    current_creator,
)
from zephyr_tgi._launcher.ownership import LABEL_CREATED, LABEL_KEEP, Owner, OwnerState, owner_labels
from zephyr_tgi._launcher.readiness import ProgressEvent, Stage
from zephyr_tgi._launcher.server import TGIServer
from zephyr_tgi.testing import TGIEmulator

if TYPE_CHECKING:
    from docker import DockerClient

TGI_START_LOG = [
    "2025-12-18T10:00:00Z  INFO text_generation_launcher: Args {",
    "2025-12-18T10:00:00Z  INFO download: text_generation_launcher: Starting check and download process for m",
    "2025-12-18T10:00:01Z  INFO download: text_generation_launcher: Successfully downloaded weights for m",
    "2025-12-18T10:00:01Z  INFO shard-manager: text_generation_launcher: Starting shard rank=0",
    "2025-12-18T10:00:02Z  INFO shard-manager: text_generation_launcher: Shard ready in 1.0s rank=0",
    "2025-12-18T10:00:02Z  INFO text_generation_launcher: Starting Webserver",
    "2025-12-18T10:00:02Z  INFO text_generation_router_v3: backends/v3/src/lib.rs:125: Warming up model",
    "2025-12-18T10:00:03Z  INFO text_generation_router::server: router/src/server.rs:2000: Connected",
]
OOM_LOG = [f"INFO noise {i}" for i in range(80)] + [
    "ERROR text_generation_launcher: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.00 GiB",
    "ERROR text_generation_launcher: Shard 0 failed to start",
    "Error: ShardCannotStart",
]


def api_error(message: str, status: int = 500, cls: type[docker.errors.APIError] = docker.errors.APIError) -> Any:
    response = requests.Response()
    response.status_code = status
    return cls(message, response=response, explanation=message)


class FakeContainer:
    """Just enough of docker's Container for TGIServer."""

    def __init__(self, docker: FakeDocker, kwargs: dict[str, Any], *, status: str = "created") -> None:
        self.docker = docker
        self.kwargs = kwargs
        docker.serial += 1
        self.id = f"{docker.serial:064x}"
        self.short_id = self.id[-12:]
        self.name = kwargs.get("name") or f"fake_{docker.serial}"
        self.status = status
        self.labels: dict[str, str] = dict(kwargs.get("labels", {}))
        self.exit_code = 0
        self.log_lines: list[str] = []
        self.host_port: int | None = None
        self.emulator: TGIEmulator | None = None
        self.archives: list[tuple[str, bytes]] = []

    @property
    def attrs(self) -> dict[str, Any]:
        bindings = [{"HostIp": "127.0.0.1", "HostPort": str(self.host_port)}] if self.host_port else []
        return {
            "State": {"ExitCode": self.exit_code},
            # Published on the port the container listens on (TGI 80, vLLM 8000, SGLang 30000).
            "NetworkSettings": {"Ports": {next(iter(self.kwargs.get("ports") or {"80/tcp": None})): bindings or None}},
            "Config": {"Labels": self.labels},
        }

    def put_archive(self, path: str, data: bytes) -> bool:
        self.docker.calls.append(f"put_archive:{path}")
        self.archives.append((path, data))
        return True

    def start(self) -> None:
        self.docker.calls.append("start")
        if self.docker.start_error is not None:
            raise self.docker.start_error
        self.status = "running"
        self.docker.behaviour(self)

    def reload(self) -> None:
        if self.status == "removed":
            raise api_error("No such container", 404, docker.errors.NotFound)

    def logs(self, stdout: bool = True, stderr: bool = True, **kwargs: Any) -> Any:
        tail = kwargs.get("tail", "all")
        lines = self.log_lines if tail == "all" else self.log_lines[-int(tail) :]
        data = "".join(f"{line}\n" for line in lines).encode()
        if kwargs.get("stream"):
            # Chunks that do not follow line boundaries, like docker's frames can.
            return iter([data[i : i + 7] for i in range(0, len(data), 7)])
        return data

    def stop(self, timeout: int | None = None) -> None:
        self.docker.calls.append("stop")
        self.status = "exited"
        if self.emulator is not None:
            self.emulator.stop()

    def remove(self, force: bool = False, v: bool = False) -> None:
        self.docker.calls.append("remove")
        self.stop()
        self.status = "removed"


class FakeAPI:
    def __init__(self, docker: FakeDocker) -> None:
        self.docker = docker
        self.base_url = "http+docker://localhost"

    def pull(self, repository: str, tag: str | None = None, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.docker.calls.append(f"pull:{repository}:{tag}")
        if self.docker.pull_error is not None:
            raise self.docker.pull_error
        yield from self.docker.pull_events
        self.docker.images_present.add(f"{repository}:{tag}")


class FakeImages:
    def __init__(self, docker: FakeDocker) -> None:
        self.docker = docker

    def get(self, name: str) -> object:
        self.docker.calls.append("images.get")
        if name not in self.docker.images_present:
            raise api_error(f"No such image: {name}", 404, docker.errors.ImageNotFound)
        return object()


class FakeContainers:
    def __init__(self, docker: FakeDocker) -> None:
        self.docker = docker

    def create(self, **kwargs: Any) -> FakeContainer:
        self.docker.calls.append("create")
        container = FakeContainer(self.docker, kwargs)
        self.docker.created.append(container)
        return container

    def list(
        self, all: bool = False, filters: dict[str, Any] | None = None, ignore_removed: bool = False
    ) -> list[FakeContainer]:
        self.docker.calls.append("list")
        wanted = dict(item.split("=", 1) for item in (filters or {}).get("label", []))
        return [
            c
            for c in self.docker.existing + self.docker.created
            if c.status != "removed" and all_items_in(wanted, c.labels)
        ]


def all_items_in(wanted: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in wanted.items())


def serve(
    api_key: str | None = None, log: list[str] | None = None, engine: str = "tgi"
) -> Callable[[FakeContainer], None]:
    """Container behaviour: a TGI (or the engine's server) that comes up and answers on its published port."""

    def behaviour(container: FakeContainer) -> None:
        container.emulator = TGIEmulator(api_key=api_key, engine=engine).start()
        container.host_port = container.emulator.port
        container.log_lines = list(TGI_START_LOG if log is None else log)

    return behaviour


def crash(exit_code: int, log: list[str]) -> Callable[[FakeContainer], None]:
    def behaviour(container: FakeContainer) -> None:
        container.status = "exited"
        container.exit_code = exit_code
        container.log_lines = list(log)

    return behaviour


def hang(container: FakeContainer) -> None:
    """Container behaviour: running, logging, never listening."""
    container.log_lines = TGI_START_LOG[:4]


class FakeDocker:
    """Just enough of docker.DockerClient for TGIServer; records what it was asked."""

    def __init__(self, behaviour: Callable[[FakeContainer], None] | None = None) -> None:
        self.calls: list[str] = []
        self.serial = 0
        self.created: list[FakeContainer] = []
        self.existing: list[FakeContainer] = []
        self.images_present = {"ghcr.io/huggingface/text-generation-inference:3.3.7", "emulator:1"}
        self.runtimes: dict[str, Any] = {"runc": {}, "nvidia": {"path": "nvidia-container-runtime"}}
        self.pull_events: list[dict[str, Any]] = []
        self.pull_error: Exception | None = None
        self.start_error: Exception | None = None
        self.ping_error: Exception | None = None
        self.behaviour = behaviour or serve()
        self.api = FakeAPI(self)
        self.images = FakeImages(self)
        self.containers = FakeContainers(self)

    def ping(self) -> bool:
        self.calls.append("ping")
        if self.ping_error is not None:
            raise self.ping_error
        return True

    def info(self) -> dict[str, Any]:
        self.calls.append("info")
        return {"Runtimes": self.runtimes, "DefaultRuntime": "runc"}

    def close(self) -> None:
        self.calls.append("close")
        for container in self.created + self.existing:
            if container.emulator is not None:
                container.emulator.stop()


@pytest.fixture
def fake() -> Iterator[FakeDocker]:
    docker_fake = FakeDocker()
    yield docker_fake
    docker_fake.close()


def make(fake: FakeDocker, **kwargs: Any) -> TGIServer:
    options: dict[str, Any] = {
        "docker_client": cast("DockerClient", fake),
        "progress": False,
        "cache_dir": "hf-cache",
        "hf_token": "",
    }
    return TGIServer(**(options | kwargs))


# -- the happy path ----------------------------------------------------------------------------------------


def test_start_creates_the_container_copies_the_template_then_starts_it(fake: FakeDocker) -> None:
    with make(fake, hf_token="hf_secret_token") as server:
        assert fake.calls[:7] == ["ping", "info", "list", "images.get", "create", "put_archive:/", "start"]
        (container,) = fake.created
        assert container.kwargs["command"] == build_launcher_args(server.config)
        assert container.kwargs["environment"] == {"HF_TOKEN": "hf_secret_token"}
        assert container.kwargs["ports"] == {"80/tcp": ("127.0.0.1", None)}
        assert container.kwargs["device_requests"] == [{"driver": "", "count": -1, "capabilities": [["gpu"]]}]
        assert container.kwargs["volumes"] == {"hf-cache": {"bind": "/data", "mode": "rw"}}
        assert container.labels[LABEL_CONFIG_HASH] == server.config_hash
        assert container.labels[LABEL_CREATOR] == current_creator()
        assert server.url == f"http://127.0.0.1:{container.host_port}"
        assert server.port == container.host_port
        assert server.container_id == container.id
        assert server.is_ready


@pytest.mark.parametrize(("engine", "port"), [("vllm", 8000), ("sglang", 30000)])
def test_the_same_lifecycle_serves_vllm_and_sglang(fake: FakeDocker, engine: str, port: int) -> None:
    fake.behaviour = serve(api_key="k-1", engine=engine, log=[])
    with make(fake, engine=engine, api_key="k-1") as server:
        (container,) = fake.created
        assert container.kwargs["image"] == server.config.image
        assert container.kwargs["ports"] == {f"{port}/tcp": ("127.0.0.1", None)}
        assert container.kwargs["command"] == build_launcher_args(server.config)
        assert server.is_ready  # probed with a one-token /v1/completions
        with server.client() as client:
            assert client.engine == engine
            assert client.chat("Hi", max_new_tokens=3).text
    assert container.status == "removed"


def test_the_template_archive_lands_at_the_tokenizer_config_path(fake: FakeDocker) -> None:
    with make(fake):
        path, data = fake.created[0].archives[0]
    assert path == "/"
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        assert TOKENIZER_CONFIG_PATH.lstrip("/") in archive.getnames()


def test_without_the_chat_template_nothing_is_copied(fake: FakeDocker) -> None:
    with make(fake, chat_template=False):
        assert not fake.created[0].archives


def test_the_client_talks_to_the_served_model_with_the_api_key(fake: FakeDocker) -> None:
    fake.behaviour = serve(api_key="k-123")
    with make(fake, api_key="k-123") as server, server.client() as client:
        assert client.chat("Hi").text
        assert fake.created[0].kwargs["environment"] == {"API_KEY": "k-123"}


async def test_the_async_client_talks_to_the_served_model(fake: FakeDocker) -> None:
    with make(fake) as server:
        async with server.async_client() as client:
            assert (await client.generate("Hi")).text


def test_progress_reports_tgi_stages_in_order_then_ready(fake: FakeDocker) -> None:
    events: list[ProgressEvent] = []
    with make(fake, progress=events.append):
        pass
    stages = [event.stage for event in events]
    assert stages == [
        Stage.START,
        Stage.DOWNLOAD,
        Stage.DOWNLOADED,
        Stage.SHARD_START,
        Stage.SHARD_READY,
        Stage.WEBSERVER,
        Stage.WARMUP,
        Stage.READY,
    ]


def test_a_missing_image_is_pulled_with_progress(fake: FakeDocker) -> None:
    fake.images_present.clear()
    fake.pull_events = [
        {"status": "Pulling fs layer", "id": "l1"},
        {"status": "Downloading", "id": "l1", "progressDetail": {"current": 10, "total": 100}},
        {"status": "Pull complete", "id": "l1"},
        {"status": "Status: Downloaded newer image for emulator:1"},
    ]
    events: list[ProgressEvent] = []
    with make(fake, image="emulator:1", gpus=None, progress=events.append):
        assert "pull:emulator:1" in fake.calls
    pulls = [e for e in events if e.stage is Stage.PULL]
    assert pulls[-1].message.startswith("Status: Downloaded")
    assert pulls[-1].current == pulls[-1].total == 100


def test_no_gpu_means_no_device_request_and_no_runtime_check(fake: FakeDocker) -> None:
    fake.runtimes = {"runc": {}}
    with make(fake, image="emulator:1", gpus=None):
        assert "device_requests" not in fake.created[0].kwargs
        assert "info" not in fake.calls


def test_a_docker_client_factory_is_called_at_start_not_at_construction(fake: FakeDocker) -> None:
    made: list[int] = []

    def factory() -> DockerClient:
        made.append(1)
        return cast("DockerClient", fake)

    server = TGIServer(docker_client=factory, progress=False, cache_dir="c", hf_token="")
    assert not made
    with server:
        assert made == [1]


# -- lifecycle ---------------------------------------------------------------------------------------------


def test_stop_stops_and_removes_and_is_idempotent(fake: FakeDocker) -> None:
    server = make(fake).start()
    server.stop()
    server.stop()
    assert fake.calls.count("remove") == 1
    assert fake.created[0].status == "removed"
    assert server.container_id is None
    with pytest.raises(ServerError, match="not started"):
        _ = server.url


def test_start_is_idempotent(fake: FakeDocker) -> None:
    with make(fake) as server:
        server.start()
        assert fake.calls.count("create") == 1


def test_the_context_manager_cleans_up_when_the_body_raises(fake: FakeDocker) -> None:
    with pytest.raises(RuntimeError, match="boom"), make(fake):
        raise RuntimeError("boom")
    assert fake.created[0].status == "removed"


def test_ctrl_c_while_waiting_removes_the_container_and_propagates(fake: FakeDocker) -> None:
    fake.behaviour = hang

    def interrupt(event: ProgressEvent) -> None:
        if event.stage is Stage.SHARD_START:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make(fake, progress=interrupt).start()
    assert fake.created[0].status == "removed"


def test_keep_leaves_the_container_running_after_the_block(fake: FakeDocker) -> None:
    with make(fake, keep=True) as server:
        container_id = server.container_id
    assert fake.created[0].status == "running"
    assert server.container_id is None
    assert container_id == fake.created[0].id


# -- reuse -------------------------------------------------------------------------------------------------


def test_reuse_attaches_to_a_running_container_with_the_same_config(fake: FakeDocker) -> None:
    first = make(fake, reuse=True).start()
    second = make(fake, reuse=True).start()
    try:
        assert second.container_id == first.container_id
        assert second.url == first.url
        assert first.owns_container
        assert not second.owns_container
        assert fake.calls.count("create") == 1
        second.stop()  # detaches only: the container is first's
        assert fake.created[0].status == "running"
    finally:
        first.stop()
    assert fake.created[0].status == "removed"


def test_reuse_with_another_config_starts_another_container(fake: FakeDocker) -> None:
    with make(fake, reuse=True) as first, make(fake, reuse=True, max_total_tokens=8192) as second:
        assert first.container_id != second.container_id
        assert fake.calls.count("create") == 2


def test_reuse_names_the_container_after_the_config_hash(fake: FakeDocker) -> None:
    with make(fake, reuse=True) as server:
        assert fake.created[0].kwargs["name"] == f"zephyr-tgi-{server.config_hash}"


def test_reuse_removes_a_stopped_leftover_of_the_same_config_and_starts_fresh(fake: FakeDocker) -> None:
    with make(fake, reuse=True) as original:
        labels = fake.created[0].labels
        assert labels[LABEL_PACKAGE] == "zephyr-tgi"
        original_id = original.container_id
    leftover = FakeContainer(fake, {"labels": labels}, status="exited")
    fake.existing.append(leftover)
    with make(fake, reuse=True) as server:
        assert server.container_id not in (original_id, leftover.id)
    assert leftover.status == "removed"


def test_reuse_of_a_server_with_another_api_key_is_a_configuration_error(fake: FakeDocker) -> None:
    fake.behaviour = serve(api_key="theirs")
    owner = make(fake, api_key="theirs", reuse=True).start()
    try:
        with pytest.raises(ConfigurationError, match="401"):
            make(fake, api_key="mine", reuse=True).start()
        assert fake.created[0].status == "running"  # not ours to remove
    finally:
        owner.stop()


# -- failures ----------------------------------------------------------------------------------------------


def test_a_crash_raises_at_once_with_exit_code_log_tail_and_hint(fake: FakeDocker) -> None:
    fake.behaviour = crash(1, OOM_LOG)
    began = time.monotonic()
    with pytest.raises(ContainerStartError) as caught:
        make(fake, startup_timeout=600).start()
    assert time.monotonic() - began < 5
    error = caught.value
    assert error.exit_code == 1
    assert len(error.logs.splitlines()) == 50
    assert "CUDA out of memory" in error.logs
    assert "exited with code 1" in str(error)
    assert "max_batch_prefill_tokens" in str(error)  # the OOM hint
    assert fake.created[0].status == "removed"


def test_a_crash_without_a_known_cause_still_names_the_common_ones(fake: FakeDocker) -> None:
    fake.behaviour = crash(2, ["something odd"])
    with pytest.raises(ContainerStartError, match="gated/private repo"):
        make(fake).start()


def test_secrets_are_redacted_from_crash_logs(fake: FakeDocker) -> None:
    fake.behaviour = crash(1, ['Args { api_key: Some("k-123"), model_id: "m" }'])
    with pytest.raises(ContainerStartError) as caught:
        make(fake, api_key="k-123").start()
    assert "k-123" not in str(caught.value)
    assert "k-123" not in caught.value.logs


def test_no_readiness_before_the_timeout_raises_with_the_log_tail(fake: FakeDocker) -> None:
    fake.behaviour = hang
    with pytest.raises(ServerNotReadyError) as caught:
        make(fake, startup_timeout=0.6).start()
    assert "Starting shard" in caught.value.logs
    assert "not ready after" in str(caught.value)
    assert fake.created[0].status == "removed"


def test_missing_docker_sdk_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "docker", None)
    with pytest.raises(DockerUnavailableError, match=r"pip install 'zephyr-tgi\[docker\]'"):
        TGIServer(progress=False, hf_token="", cache_dir="c").start()


def test_an_unreachable_daemon_is_docker_unavailable_with_the_cause(fake: FakeDocker) -> None:
    fake.ping_error = requests.exceptions.ConnectionError("Connection refused")
    with pytest.raises(DockerUnavailableError, match="Docker daemon") as caught:
        make(fake).start()
    assert isinstance(caught.value.__cause__, requests.exceptions.ConnectionError)
    assert "create" not in fake.calls


def test_a_client_the_factory_made_is_closed_with_the_server(fake: FakeDocker) -> None:
    server = TGIServer(docker_client=lambda: cast("DockerClient", fake), progress=False, cache_dir="c", hf_token="")
    with server:
        assert "close" not in fake.calls
    assert fake.calls.count("close") == 1


def test_a_client_passed_in_stays_open_for_its_owner(fake: FakeDocker) -> None:
    with make(fake):
        pass
    assert "close" not in fake.calls


def test_a_client_the_factory_made_is_closed_when_the_preflight_refuses(fake: FakeDocker) -> None:
    fake.runtimes = {"runc": {}}
    server = TGIServer(docker_client=lambda: cast("DockerClient", fake), progress=False, cache_dir="c", hf_token="")
    with pytest.raises(GPUUnavailableError):
        server.start()
    assert fake.calls.count("close") == 1


def test_a_client_the_factory_made_is_closed_when_its_ping_fails(fake: FakeDocker) -> None:
    fake.ping_error = requests.exceptions.ConnectionError("Connection refused")
    server = TGIServer(docker_client=lambda: cast("DockerClient", fake), progress=False, cache_dir="c", hf_token="")
    with pytest.raises(DockerUnavailableError):
        server.start()
    assert fake.calls.count("close") == 1


def test_a_kept_server_closes_the_client_it_made_when_its_block_ends(fake: FakeDocker) -> None:
    server = TGIServer(
        docker_client=lambda: cast("DockerClient", fake), keep=True, progress=False, cache_dir="c", hf_token=""
    )
    with server:
        pass
    assert fake.calls.count("close") == 1
    assert fake.created[0].status == "running"  # kept: only the client's pool is released


def test_a_failing_client_factory_is_docker_unavailable() -> None:
    def factory() -> DockerClient:
        raise docker.errors.DockerException("Error while fetching server API version")

    with pytest.raises(DockerUnavailableError, match="fetching server API version"):
        TGIServer(docker_client=factory, progress=False, hf_token="", cache_dir="c").start()


def test_gpus_without_an_nvidia_runtime_fail_before_anything_starts(fake: FakeDocker) -> None:
    fake.runtimes = {"runc": {}, "io.containerd.runc.v2": {}}
    with pytest.raises(GPUUnavailableError, match="NVIDIA Container Toolkit"):
        make(fake).start()
    assert not any(call.startswith(("pull", "create")) for call in fake.calls)


def test_dockers_device_driver_error_at_start_is_gpu_unavailable(fake: FakeDocker) -> None:
    fake.runtimes = {"runc": {}}
    fake.start_error = api_error('could not select device driver "" with capabilities: [[gpu]]')
    with pytest.raises(GPUUnavailableError) as caught:
        make(fake, check_gpu_runtime=False).start()
    assert isinstance(caught.value.__cause__, docker.errors.APIError)
    assert fake.created[0].status == "removed"


def test_an_image_that_cannot_be_pulled_is_a_container_start_error(fake: FakeDocker) -> None:
    fake.images_present.clear()
    fake.pull_error = api_error("pull access denied for nope, repository does not exist", 404, docker.errors.NotFound)
    with pytest.raises(ContainerStartError, match="nope") as caught:
        make(fake, image="nope:latest").start()
    assert caught.value.exit_code is None
    assert "create" not in fake.calls


def test_an_error_event_in_the_pull_stream_is_a_container_start_error(fake: FakeDocker) -> None:
    fake.images_present.clear()
    fake.pull_events = [{"error": "manifest unknown", "errorDetail": {"message": "manifest unknown"}}]
    with pytest.raises(ContainerStartError, match="manifest unknown"):
        make(fake, image="ghcr.io/x/y:9").start()


def test_pull_never_refuses_a_missing_image_without_pulling(fake: FakeDocker) -> None:
    fake.images_present.clear()
    with pytest.raises(ContainerStartError, match="pull='never'"):
        make(fake, pull="never").start()
    assert not any(call.startswith("pull") for call in fake.calls)


def test_a_taken_host_port_is_a_container_start_error(fake: FakeDocker) -> None:
    fake.start_error = api_error("Bind for 127.0.0.1:8080 failed: port is already allocated")
    with pytest.raises(ContainerStartError, match="port"):
        make(fake, port=8080).start()


def test_a_bug_is_not_disguised_as_a_docker_error(fake: FakeDocker) -> None:
    fake.start_error = TypeError("unexpected keyword")
    with pytest.raises(TypeError):
        make(fake).start()
    assert fake.created[0].status == "removed"


# -- configuration and environment -------------------------------------------------------------------------


def test_the_repr_has_no_secrets(fake: FakeDocker) -> None:
    server = make(fake, api_key="sk-abc", hf_token="hf_def")
    text = repr(server)
    assert "sk-abc" not in text
    assert "hf_def" not in text
    assert "api_key=set" in text


def test_publishing_beyond_loopback_without_a_key_warns() -> None:
    with pytest.warns(UserWarning, match="without an api_key"):
        TGIServer(host="0.0.0.0", hf_token="", cache_dir="c")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TGIServer(host="0.0.0.0", api_key="k", hf_token="", cache_dir="c")


def test_hf_token_and_hf_home_are_read_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    monkeypatch.setenv("HF_HOME", "/srv/hf")
    server = TGIServer()
    monkeypatch.delenv("HF_TOKEN")
    token = server.config.hf_token
    assert token is not None
    assert token.get_secret_value() == "hf_env"
    assert server.config.cache_dir == "/srv/hf"
    assert TGIServer(hf_token="").config.hf_token is None


def test_from_env_reads_zephyr_tgi_variables_and_arguments_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZEPHYR_TGI_VARIANT", "gptq-8bit-32g-actorder_True")
    monkeypatch.setenv("ZEPHYR_TGI_IMAGE", "emulator:1")
    monkeypatch.setenv("ZEPHYR_TGI_GPUS", "none")
    server = TGIServer.from_env(image="other:2")
    assert server.config.variant == "gptq-8bit-32g-actorder_True"
    assert server.config.image == "other:2"
    assert server.config.gpus is None
    assert server.variant.bits == 8


def test_cache_dir_paths_become_absolute_and_bare_names_are_volumes(tmp_path: Path) -> None:
    assert TGIServer(cache_dir=Path("rel/dir"), hf_token="").config.cache_dir == str(Path("rel/dir").resolve())
    assert TGIServer(cache_dir="hf-volume", hf_token="").config.cache_dir == "hf-volume"
    assert TGIServer(cache_dir=tmp_path, hf_token="").config.cache_dir == str(tmp_path)


def test_gpus_accept_the_command_line_spelling() -> None:
    assert TGIServer(gpus="0,1", hf_token="", cache_dir="c").config.gpus == ("0", "1")
    assert TGIServer(gpus="none", hf_token="", cache_dir="c").config.gpus is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"variant": "nope"}, "main"),
        ({"max_input_tokens": 4096}, "max_input_tokens"),
        ({"startup_timeout": 0}, "startup_timeout"),
        ({"pull": "sometimes"}, "pull"),
    ],
)
def test_bad_settings_fail_at_construction(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        TGIServer(hf_token="", cache_dir="c", **kwargs)


def test_logs_stream_whole_lines_with_secrets_redacted(fake: FakeDocker) -> None:
    fake.behaviour = serve(api_key="k-9", log=["first line", 'Args { api_key: Some("k-9") }', "last"])
    with make(fake, api_key="k-9") as server:
        assert list(server.logs()) == ["first line", 'Args { api_key: Some("***") }', "last"]


def test_a_container_removed_behind_our_back_is_reported_as_gone(fake: FakeDocker) -> None:
    def vanish(container: FakeContainer) -> None:
        container.status = "removed"

    fake.behaviour = vanish
    with pytest.raises(ContainerStartError, match="disappeared") as caught:
        make(fake).start()
    assert caught.value.exit_code is None


# -- ownership: labels, the orphan sweep, who may be removed ------------------------------------------------


def test_the_container_names_its_owner_and_since_when(fake: FakeDocker) -> None:
    with make(fake):
        labels = fake.created[0].labels
    owner = Owner.from_labels(labels)
    assert owner is not None
    assert owner.pid == os.getpid()
    assert owner.state() is OwnerState.ALIVE
    assert labels[LABEL_KEEP] == "false"
    assert datetime.fromisoformat(labels[LABEL_CREATED]) <= datetime.now(UTC)


def test_a_kept_container_says_so_in_its_labels(fake: FakeDocker) -> None:
    with make(fake, keep=True):
        pass
    assert fake.created[0].labels[LABEL_KEEP] == "true"


def test_start_removes_this_hosts_orphans_and_nothing_else(fake: FakeDocker) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    gone = Owner(socket.gethostname(), child.pid, psutil.Process(child.pid).create_time())
    child.wait(timeout=30)
    base = {LABEL_PACKAGE: "zephyr-tgi"}
    orphan = FakeContainer(fake, {"labels": base | owner_labels(gone, keep=False)}, status="running")
    kept = FakeContainer(fake, {"labels": base | owner_labels(gone, keep=True)}, status="running")
    live = FakeContainer(fake, {"labels": base | owner_labels(Owner.current(), keep=False)}, status="running")
    remote = FakeContainer(fake, {"labels": base | owner_labels(Owner("far", 1, 0.0), keep=False)}, status="exited")
    unlabelled = FakeContainer(fake, {"labels": base}, status="running")
    fake.existing += [orphan, kept, live, remote, unlabelled]
    events: list[ProgressEvent] = []
    with make(fake, progress=events.append):
        pass
    assert orphan.status == "removed"
    assert [c.status for c in (kept, live, remote, unlabelled)] == ["running", "running", "exited", "running"]
    assert any(f"removed orphaned container {orphan.name}" in event.message for event in events)


def test_a_fake_docker_client_gets_no_reaper(fake: FakeDocker) -> None:
    before = {p.pid for p in psutil.Process().children()}
    with make(fake):
        assert {p.pid for p in psutil.Process().children()} == before


# -- messages: Python names for the API, flags for the command line ------------------------------------------


def test_without_an_nvidia_runtime_python_callers_read_python_arguments(fake: FakeDocker) -> None:
    fake.runtimes = {"runc": {}}
    with pytest.raises(GPUUnavailableError) as caught:
        make(fake).start()
    assert "gpus=None" in str(caught.value)
    assert "check_gpu_runtime=False" in str(caught.value)


def test_without_an_nvidia_runtime_the_command_line_reads_flags(fake: FakeDocker) -> None:
    fake.runtimes = {"runc": {}}
    with pytest.raises(GPUUnavailableError) as caught:
        make(fake, messages_for="cli").start()
    message = str(caught.value)
    assert "--gpus all was requested" in message
    assert "--gpus none" in message
    assert "--skip-gpu-check" in message
    assert "gpus=None" not in message
    assert "check_gpu_runtime" not in message


@pytest.mark.parametrize(
    ("audience", "names", "absent"), [("python", "image=", "--image"), ("cli", "--image", "image=")]
)
def test_an_unpullable_image_points_at_registry_access_not_at_the_emulator(
    fake: FakeDocker, audience: str, names: str, absent: str
) -> None:
    fake.images_present.clear()
    fake.pull_error = api_error("pull access denied for nope, repository does not exist", 404, docker.errors.NotFound)
    with pytest.raises(ContainerStartError) as caught:
        make(fake, image="nope:latest", messages_for=audience).start()
    message = str(caught.value)
    assert "registry" in message
    assert "mirror" in message
    assert names in message
    assert absent not in message
    assert message.index("registry") < message.index("Only for tests without a GPU: the emulator image")


def test_a_taken_port_names_the_flag_on_the_command_line(fake: FakeDocker) -> None:
    fake.start_error = api_error("Bind for 127.0.0.1:8080 failed: port is already allocated")
    with pytest.raises(ContainerStartError, match="another --port"):
        make(fake, port=8080, messages_for="cli").start()


def test_bad_settings_name_the_flags_on_the_command_line() -> None:
    with pytest.raises(ConfigurationError, match=r"invalid `zephyr-tgi serve` options: --host: host must be"):
        TGIServer(host="not-an-ip", messages_for="cli", hf_token="", cache_dir="c")


def test_an_unknown_audience_is_refused() -> None:
    with pytest.raises(ValueError, match="messages_for"):
        TGIServer(messages_for=cast("Any", "martian"), hf_token="", cache_dir="c")


def test_a_crash_hint_for_the_command_line_names_flags(fake: FakeDocker) -> None:
    fake.behaviour = crash(1, OOM_LOG)
    with pytest.raises(ContainerStartError) as caught:
        make(fake, messages_for="cli").start()
    assert "--variant" in str(caught.value)
    assert "extra_args" not in str(caught.value)


def test_a_too_short_startup_timeout_names_the_flag_on_the_command_line() -> None:
    with pytest.raises(ConfigurationError, match="--startup-timeout must be > 0"):
        TGIServer(startup_timeout=0, messages_for="cli", hf_token="", cache_dir="c")


def test_publishing_beyond_loopback_warns_in_flags_on_the_command_line() -> None:
    with pytest.warns(UserWarning, match="without --api-key") as caught:
        TGIServer(host="0.0.0.0", messages_for="cli", hf_token="", cache_dir="c")
    assert "api_key=" not in str(caught[0].message)


def test_reuse_never_attaches_to_an_orphan_it_starts_and_owns_a_fresh_one(fake: FakeDocker) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    gone = Owner(socket.gethostname(), child.pid, psutil.Process(child.pid).create_time())
    child.wait(timeout=30)
    with make(fake, reuse=True) as probe:
        labels = dict(fake.created[0].labels)
        config_hash = probe.config_hash
    orphan = FakeContainer(fake, {"labels": labels | owner_labels(gone, keep=False)}, status="running")
    fake.existing.append(orphan)
    with make(fake, reuse=True) as server:
        assert server.config_hash == config_hash
        assert orphan.status == "removed"
        assert server.owns_container
        assert server.container_id != orphan.id
