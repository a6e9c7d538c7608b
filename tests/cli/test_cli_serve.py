"""`zephyr-tgi serve`: argument handling, output and cleanup, with a fake launcher.

There is no Docker or GPU in this test run, so a fake stands in for `TGIServer` to check the command's wiring:
what it passes to the launcher, what it prints, and that the container is stopped on Ctrl-C, SIGTERM and when it
dies. The launcher itself is tested against Docker in tests/integration.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from click.testing import Result

import zephyr_tgi._cli.main as cli_module
from zephyr_tgi import ContainerStartError

from .conftest import Cli

PLANTED = "sk-planted-serve-77"


@dataclass
class Event:
    """What TGIServer's progress callback receives."""

    stage: str
    message: str
    current: int | None = None
    total: int | None = None


@dataclass
class Config:
    api_key: str | None
    engine: str = "tgi"


@dataclass
class FakeServer:
    """Records how `serve` drives it; `logs()` plays what happens after start (Ctrl-C by default)."""

    kwargs: dict[str, Any]
    after_start: Callable[[], Iterator[str]]
    start_error: BaseException | None = None
    started: bool = False
    stopped: int = 0
    log_calls: list[dict[str, Any]] = field(default_factory=list)

    url = "http://127.0.0.1:32768"
    container_id = "c0ffee123456"

    @property
    def config(self) -> Config:
        return Config(api_key=self.kwargs.get("api_key"), engine=self.kwargs.get("engine", "tgi"))

    def start(self) -> FakeServer:
        progress = self.kwargs["progress"]
        progress(Event("pull", "pulling the image", current=2_000_000_000, total=4_000_000_000))
        progress(Event("download", "Starting check and download process"))
        if self.start_error is not None:
            raise self.start_error
        progress(Event("ready", "TheBloke/zephyr-7B-alpha-GPTQ@main"))
        self.started = True
        return self

    def logs(self, **kwargs: Any) -> Iterator[str]:
        self.log_calls.append(kwargs)
        return self.after_start()

    def stop(self) -> None:
        self.stopped += 1


def ctrl_c() -> Iterator[str]:
    yield "INFO text_generation_router: Connected"
    raise KeyboardInterrupt


def container_exits() -> Iterator[str]:
    yield "ERROR shard-manager: Shard complete standard error output: CUDA out of memory"


class Launcher:
    """Stands in for the TGIServer class: `from_env(**kwargs)` builds a FakeServer and remembers it."""

    def __init__(self, after_start: Callable[[], Iterator[str]] = ctrl_c, start_error: BaseException | None = None):
        self.after_start = after_start
        self.start_error = start_error
        self.server: FakeServer | None = None

    def from_env(self, **kwargs: Any) -> FakeServer:
        self.server = FakeServer(kwargs, self.after_start, self.start_error)
        return self.server


@pytest.fixture
def launcher(monkeypatch: pytest.MonkeyPatch) -> Launcher:
    fake = Launcher()
    monkeypatch.setattr(cli_module, "_server_class", lambda: fake)
    return fake


@pytest.fixture
def serve(launcher: Launcher) -> Callable[..., Result]:
    def run(*args: str, env: dict[str, str | None] | None = None) -> Result:
        return Cli("http://unused")("serve", *args, env=env)

    return run


def test_options_reach_the_launcher(serve: Callable[..., Result], launcher: Launcher) -> None:
    serve(
        "--variant", "gptq-4bit-32g-actorder_True", "--gpus", "0,1", "--port", "8080", "--image", "tgi:test",
        "--startup-timeout", "60", "--reuse",
    )  # fmt: skip

    assert launcher.server is not None
    kwargs = dict(launcher.server.kwargs)
    kwargs.pop("progress")
    assert kwargs == {
        "variant": "gptq-4bit-32g-actorder_True",
        "gpus": "0,1",
        "port": 8080,
        "image": "tgi:test",
        "startup_timeout": 60.0,
        "host": "127.0.0.1",
        "reuse": True,
        "keep": False,
        "check_gpu_runtime": True,
        "messages_for": "cli",
    }


def test_the_engine_reaches_the_launcher_and_its_variable_is_printed(
    serve: Callable[..., Result], launcher: Launcher
) -> None:
    result = serve("--engine", "vllm")

    assert launcher.server is not None
    assert launcher.server.kwargs["engine"] == "vllm"
    assert result.stdout == "export ZEPHYR_TGI_URL=http://127.0.0.1:32768\nexport ZEPHYR_TGI_ENGINE=vllm\n"
    from_env = serve(env={"ZEPHYR_TGI_ENGINE": "sglang"})
    assert from_env.exit_code == 0, from_env.output
    assert launcher.server.kwargs["engine"] == "sglang"
    assert serve("--engine", "llamacpp").exit_code == 2


def test_unset_options_are_left_to_the_launchers_environment_defaults(
    serve: Callable[..., Result], launcher: Launcher
) -> None:
    serve()

    assert launcher.server is not None
    assert set(launcher.server.kwargs) == {"host", "reuse", "keep", "check_gpu_runtime", "messages_for", "progress"}


def test_prints_the_url_as_an_export_line_and_progress_on_stderr(serve: Callable[..., Result]) -> None:
    result = serve()

    assert result.exit_code == 0, result.output
    assert result.stdout == "export ZEPHYR_TGI_URL=http://127.0.0.1:32768\n"
    assert "[zephyr-tgi] pull: pulling the image 2.00/4.00 GB" in result.stderr
    assert "[zephyr-tgi] download: Starting check and download process" in result.stderr
    assert "[zephyr-tgi] ready: " in result.stderr


def test_ctrl_c_stops_and_removes_the_container(serve: Callable[..., Result], launcher: Launcher) -> None:
    result = serve()

    assert launcher.server is not None
    assert launcher.server.stopped == 1
    assert launcher.server.log_calls == [{"follow": True, "tail": 0}]
    assert "Stopping and removing the container c0ffee123456" in result.stderr
    assert result.stderr.rstrip().endswith("Stopped.")
    assert result.exit_code == 0


def test_logs_are_shown_only_when_asked(serve: Callable[..., Result]) -> None:
    assert "Connected" not in serve().stderr
    assert "INFO text_generation_router: Connected" in serve("--logs").stderr


def test_a_container_that_dies_is_an_error(serve: Callable[..., Result], launcher: Launcher) -> None:
    launcher.after_start = container_exits

    result = serve()

    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith("error: the TGI container stopped on its own")
    assert launcher.server is not None
    assert launcher.server.stopped == 1


def test_detach_leaves_the_container_running(serve: Callable[..., Result], launcher: Launcher) -> None:
    result = serve("--detach")

    assert result.exit_code == 0
    assert launcher.server is not None
    assert launcher.server.stopped == 0
    assert launcher.server.log_calls == []
    assert launcher.server.kwargs["keep"] is True  # labelled as kept: no reaper or orphan sweep removes it
    assert "`zephyr-tgi down c0ffee123456` removes it" in result.stderr


def test_skip_gpu_check_turns_the_runtime_check_off(serve: Callable[..., Result], launcher: Launcher) -> None:
    serve("--skip-gpu-check")

    assert launcher.server is not None
    assert launcher.server.kwargs["check_gpu_runtime"] is False


def test_json_prints_one_object(serve: Callable[..., Result]) -> None:
    result = serve("--detach", "--json")

    assert json.loads(result.stdout) == {
        "url": "http://127.0.0.1:32768",
        "container_id": "c0ffee123456",
        "detached": True,
    }


def test_a_failed_start_is_reported_with_its_hints(serve: Callable[..., Result], launcher: Launcher) -> None:
    launcher.start_error = ContainerStartError(
        "the TGI container abc exited with code 1 before it was ready.\n  hint: the GPU ran out of memory\n"
        "Last 50 log lines:\nCUDA out of memory",
        exit_code=1,
        logs="CUDA out of memory",
    )

    result = serve()

    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    first = lines.index("error: the TGI container abc exited with code 1 before it was ready.")
    assert lines[first + 1] == "    hint: the GPU ran out of memory"
    assert "Traceback" not in result.stderr


def test_ctrl_c_during_start_exits_130(serve: Callable[..., Result], launcher: Launcher) -> None:
    launcher.start_error = KeyboardInterrupt()

    result = serve()

    assert result.exit_code == 130
    assert result.stderr.rstrip().endswith("interrupted")


def test_the_api_key_is_passed_on_and_never_printed(serve: Callable[..., Result], launcher: Launcher) -> None:
    result = serve("--api-key", PLANTED)

    assert launcher.server is not None
    assert launcher.server.kwargs["api_key"] == PLANTED
    assert "set ZEPHYR_TGI_API_KEY for clients too" in result.stderr
    assert PLANTED not in result.output


def test_an_unknown_variant_is_refused_by_the_real_launcher() -> None:
    # No fake here: the real TGIServer validates the variant before it needs Docker.
    result = Cli("http://unused")("serve", "--variant", "gptq-3bit")

    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ")
    assert "unknown GPTQ variant 'gptq-3bit'" in line


def test_on_a_terminal_progress_is_a_bar_over_the_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from zephyr_tgi import ProgressEvent, Stage

    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setattr(err, "isatty", lambda: True)
    progress = cli_module._StartProgress()

    progress(ProgressEvent(Stage.DOWNLOAD, "Starting check and download process"))
    progress(ProgressEvent(Stage.WARMUP, "Warming up model"))
    progress.close()

    shown = err.getvalue()
    assert "download" in shown
    assert f"{list(Stage).index(Stage.WARMUP) + 1}/{len(Stage)}" in shown
    assert "Warming up model" in shown
