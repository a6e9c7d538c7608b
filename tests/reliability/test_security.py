"""Security checks: planted secrets never leave for the wrong server, and never show in a repr, a log or the CLI.

Planted: a Hugging Face token in HF_TOKEN and in a saved-login file under a temporary HF_HOME, and a TGI api key.
Every request the emulator receives is inspected; reprs of clients, results, errors, the launcher and its config
are scanned; logs are captured at DEBUG (zephyr_tgi, httpx2, huggingface_hub, everything); the `zephyr-tgi` CLI
is run with click's CliRunner. The launcher publishes on 127.0.0.1 unless told otherwise, and warns when it would
expose TGI without an api key.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from zephyr_tgi import (
    AsyncZephyrClient,
    AuthenticationError,
    RetryPolicy,
    ZephyrClient,
)
from zephyr_tgi._launcher.args import LaunchConfig, build_launcher_args, container_create_kwargs, labels
from zephyr_tgi._launcher.server import TGIServer
from zephyr_tgi.testing import TGIEmulator

HF_ENV_TOKEN = "hf_PLANTEDenvTOKENa1b2c3d4e5f6g7h8i9j0"
HF_FILE_TOKEN = "hf_PLANTEDfileTOKENz9y8x7w6v5u4t3s2r1"
API_KEY = "tgi-PLANTED-api-key-7f3a9c2e"
WRONG_KEY = "tgi-PLANTED-wrong-key-1b2c3d4e"
SECRETS = (HF_ENV_TOKEN, HF_FILE_TOKEN, API_KEY, WRONG_KEY)
FAST = RetryPolicy(max_attempts=3, initial_delay=0.0, max_delay=0.01)
LOOPBACK_PUBLISHED = {"80/tcp": ("127.0.0.1", None)}


def leaked(text: str, secrets: tuple[str, ...] = SECRETS) -> list[str]:
    """The planted secrets that appear in `text`."""
    return [secret for secret in secrets if secret in text]


@pytest.fixture(params=["HF_TOKEN", "saved login"])
def hf_token(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A Hugging Face token huggingface_hub would find: in HF_TOKEN, or in the saved-login file under HF_HOME."""
    import huggingface_hub
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    home.mkdir()
    (home / "token").write_text(HF_FILE_TOKEN)
    monkeypatch.setenv("HF_HOME", str(home))
    # huggingface_hub resolves the file's path from HF_HOME at import time: point it at the planted file.
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    if request.param == "HF_TOKEN":
        monkeypatch.setenv("HF_TOKEN", HF_ENV_TOKEN)
        expected = HF_ENV_TOKEN
    else:
        monkeypatch.delenv("HF_TOKEN", raising=False)
        expected = HF_FILE_TOKEN
    assert huggingface_hub.get_token() == expected, "the planted token must be one huggingface_hub would send"
    return expected


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def exercise(kind: str, url: str, emulator: TGIEmulator, api_key: str | None = None) -> None:
    """Every kind of call the clients make (generation, streams, the Messages API, server routes, a retry)."""
    if kind == "sync":
        with ZephyrClient(url, api_key=api_key, retry=FAST) as client:
            client.info()
            client.health()
            client.tokenize("Hi")
            client.metrics()
            client.count_tokens([{"role": "user", "content": "Hi"}])
            client.chat("Hi", max_new_tokens=2)
            list(client.chat_stream("Hi", max_new_tokens=2))
            client.generate("Hi", max_new_tokens=2)
            list(client.generate_stream("Hi", max_new_tokens=2))
            client.chat_completion("Hi", max_tokens=2)
            list(client.chat_completion("Hi", stream=True, max_tokens=2))
            client.batch_chat(["Hi", "Ho"], max_new_tokens=2, progress=False)
            emulator.set_faults(overload_next=1)  # one retry, logged with the error it got
            client.chat("Hi", max_new_tokens=2)
        return

    async def run() -> None:
        async with AsyncZephyrClient(url, api_key=api_key, retry=FAST) as client:
            await client.info()
            await client.health()
            await client.tokenize("Hi")
            await client.metrics()
            await client.count_tokens([{"role": "user", "content": "Hi"}])
            await client.chat("Hi", max_new_tokens=2)
            [chunk async for chunk in client.chat_stream("Hi", max_new_tokens=2)]
            await client.generate("Hi", max_new_tokens=2)
            [chunk async for chunk in client.generate_stream("Hi", max_new_tokens=2)]
            await client.chat_completion("Hi", max_tokens=2)
            [chunk async for chunk in await client.chat_completion("Hi", stream=True, max_tokens=2)]
            await client.batch_chat(["Hi", "Ho"], max_new_tokens=2, progress=False)
            emulator.set_faults(overload_next=1)
            await client.chat("Hi", max_new_tokens=2)

    asyncio.run(run())


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> pytest.LogCaptureFixture:
    """Capture every log record at DEBUG, the chatty libraries included (huggingface_hub logs curl commands)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_DEBUG", True)
    for name in ("", "zephyr_tgi", "httpx2", "httpcore2", "huggingface_hub"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def assert_no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    assert {"httpx2", "zephyr_tgi"} & {record.name for record in caplog.records}, "the capture is not working"
    for record in caplog.records:
        rendered = f"{record.name} {record.getMessage()} {record.args!r} {record.exc_text or ''}"
        assert not leaked(rendered), f"{leaked(rendered)} logged by {record.name}: {record.getMessage()[:300]}"
    assert not leaked(caplog.text)


# --- what reaches the server ---------------------------------------------------------------------------------


def test_no_hugging_face_token_reaches_a_tgi_server(
    kind: str, hf_token: str, debug_logs: pytest.LogCaptureFixture
) -> None:
    with TGIEmulator() as emulator:
        exercise(kind, emulator.url, emulator)
        requests = emulator.stats.requests
    assert {r.path for r in requests} >= {"/info", "/generate", "/generate_stream", "/v1/chat/completions"}
    for request in requests:
        assert "authorization" not in request.headers, f"{request.method} {request.path}: {request.headers}"
        assert not leaked(repr(request.headers)), request.path
    assert_no_secret_in_logs(debug_logs)


def test_with_an_api_key_only_that_key_is_sent(kind: str, hf_token: str, debug_logs: pytest.LogCaptureFixture) -> None:
    with TGIEmulator(api_key=API_KEY) as emulator:
        exercise(kind, emulator.url, emulator, api_key=API_KEY)
        requests = emulator.stats.requests
    assert requests
    for request in requests:
        assert request.headers.get("authorization") == f"Bearer {API_KEY}", f"{request.method} {request.path}"
        assert not leaked(repr(request.headers), (HF_ENV_TOKEN, HF_FILE_TOKEN)), request.path
    assert_no_secret_in_logs(debug_logs)


# --- what shows -----------------------------------------------------------------------------------------------


def test_no_secret_in_the_reprs_of_clients_results_and_errors(debug_logs: pytest.LogCaptureFixture) -> None:
    with TGIEmulator(api_key=API_KEY) as emulator:
        with ZephyrClient(emulator.url, api_key=API_KEY) as client:
            result = client.chat("Hi", max_new_tokens=2)
            shown = [repr(client), str(client), repr(result), str(result), repr(client.retry), repr(client.timeout)]
        async_client = AsyncZephyrClient(emulator.url, api_key=API_KEY)
        shown += [repr(async_client), str(async_client)]
        asyncio.run(async_client.close())
        with ZephyrClient(emulator.url, api_key=WRONG_KEY, retry=FAST) as wrong:
            with pytest.raises(AuthenticationError) as caught:
                wrong.chat("Hi")
            with pytest.raises(AuthenticationError) as caught_stream:
                list(wrong.chat_stream("Hi"))
    for error in (caught.value, caught_stream.value):
        # The whole chain, as a traceback would print it (causes included).
        shown += [repr(error), str(error), repr(error.__cause__), "".join(traceback.format_exception(error))]
        shown += [repr(error.headers), repr(error.body)]
    for text in shown:
        assert not leaked(text), text[:500]
    assert_no_secret_in_logs(debug_logs)


def test_no_secret_in_the_launcher_or_its_config(hf_token: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loopback: no warning expected
        server = TGIServer(gpus=None, api_key=API_KEY, docker_client=cast(Any, FakeDocker()), progress=False)
    if hf_token == HF_ENV_TOKEN:  # the launcher reads HF_TOKEN (the saved login stays with huggingface_hub)
        assert server.config.hf_token is not None
        assert server.config.hf_token.get_secret_value() == hf_token
    config = server.config
    shown = [
        repr(server),
        str(server),
        repr(config),
        str(config),
        config.model_dump_json(),
        repr(config.model_dump()),
        repr(build_launcher_args(config)),
        repr(labels(config, version="0")),
        server.config_hash,
    ]
    for text in shown:
        assert not leaked(text), text[:500]


def test_no_secret_in_the_plugins_external_server_repr() -> None:
    from zephyr_tgi.testing._plugin import ExternalTGIServer

    assert not leaked(repr(ExternalTGIServer("http://127.0.0.1:1", api_key=API_KEY)))


# --- the launcher's defaults ----------------------------------------------------------------------------------


class _CreateCalled(Exception):
    """Raised by the fake docker client once TGIServer asks it to create the container."""


class FakeDocker:
    """Just enough of docker's client to reach `containers.create`, whose arguments it records."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.api = SimpleNamespace(base_url="http+docker://localhost")
        self.images = SimpleNamespace(get=lambda name: SimpleNamespace(id=name))
        self.containers = SimpleNamespace(create=self._create, list=lambda **kwargs: [])

    def ping(self) -> bool:
        return True

    def info(self) -> dict[str, Any]:
        return {"Runtimes": {"runc": {}}}

    def close(self) -> None:
        pass

    def _create(self, **kwargs: Any) -> Any:
        self.created.append(kwargs)
        raise _CreateCalled


def _created_with(tmp_path: Path, **kwargs: Any) -> dict[str, Any]:
    docker = FakeDocker()
    server = TGIServer(
        gpus=None, cache_dir=tmp_path / "cache", docker_client=cast(Any, docker), progress=False, **kwargs
    )
    with pytest.raises(_CreateCalled):
        server.start()
    (created,) = docker.created
    return created


def test_the_launcher_publishes_on_loopback_by_default(tmp_path: Path) -> None:
    assert _created_with(tmp_path)["ports"] == LOOPBACK_PUBLISHED
    assert container_create_kwargs(LaunchConfig(), version="0", name=None)["ports"] == LOOPBACK_PUBLISHED


def test_the_api_key_and_token_go_through_the_environment_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", HF_ENV_TOKEN)
    created = _created_with(tmp_path, api_key=API_KEY)
    assert created["environment"]["API_KEY"] == API_KEY
    assert created["environment"]["HF_TOKEN"] == HF_ENV_TOKEN
    assert not leaked(repr(created["command"]))
    assert not leaked(repr(created["labels"]))


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::"])
def test_exposing_tgi_without_an_api_key_warns(host: str) -> None:
    with pytest.warns(UserWarning, match="without an api_key"):
        TGIServer(host=host, gpus=None, docker_client=cast(Any, FakeDocker()), progress=False)


@pytest.mark.parametrize(
    ("host", "api_key"), [("127.0.0.1", None), ("::1", None), ("localhost", None), ("0.0.0.0", API_KEY)]
)
def test_loopback_or_an_api_key_does_not_warn(host: str, api_key: str | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        server = TGIServer(host=host, api_key=api_key, gpus=None, docker_client=cast(Any, FakeDocker()), progress=False)
    assert container_create_kwargs(server.config, version="0", name=None)["ports"]["80/tcp"][0] == server.config.host


def test_a_published_host_is_used_as_given(tmp_path: Path) -> None:
    assert _created_with(tmp_path, host="0.0.0.0", api_key=API_KEY)["ports"] == {"80/tcp": ("0.0.0.0", None)}


# --- the command line -----------------------------------------------------------------------------------------


@pytest.fixture
def cli() -> Any:
    """The `zephyr-tgi` click entry point (skipped while zephyr_tgi._cli.main is not written)."""
    module = pytest.importorskip(
        "zephyr_tgi._cli.main", reason="the zephyr-tgi CLI (zephyr_tgi/_cli.py) does not exist yet"
    )
    return module.cli


def _output(result: Any) -> str:
    parts = [result.output or ""]
    for stream in ("stdout", "stderr"):
        with_value = getattr(result, stream, None)
        if isinstance(with_value, str):
            parts.append(with_value)
    if result.exception is not None:
        parts.append("".join(traceback.format_exception(result.exception)))
    return "\n".join(parts)


def test_the_cli_shows_no_secret(cli: Any, hf_token: str, debug_logs: pytest.LogCaptureFixture) -> None:
    from click.testing import CliRunner

    runner = CliRunner()
    with TGIEmulator(api_key=API_KEY) as emulator:
        server = ["--url", emulator.url]
        succeeded = [
            runner.invoke(cli, ["info", *server, "--api-key", API_KEY]),
            runner.invoke(cli, ["info", "--json", *server, "--api-key", API_KEY]),
            runner.invoke(cli, ["health", *server, "--api-key", API_KEY]),
            runner.invoke(cli, ["tokenize", "Hi", *server, "--api-key", API_KEY]),
            runner.invoke(cli, ["generate", "Hi", *server, "--api-key", API_KEY]),
            runner.invoke(cli, ["chat", "Hi", *server], env={"ZEPHYR_TGI_API_KEY": API_KEY}),
        ]
        failed = [
            runner.invoke(cli, ["generate", "Hi", *server, "--api-key", WRONG_KEY]),
            runner.invoke(cli, ["generate", "Hi", "--debug", *server, "--api-key", WRONG_KEY]),
            runner.invoke(cli, ["chat", "Hi", "--debug", *server], env={"ZEPHYR_TGI_API_KEY": WRONG_KEY}),
        ]
        requests = emulator.stats.requests
    for result in succeeded:
        assert result.exit_code == 0, _output(result)
    for result in failed:
        assert result.exit_code != 0, _output(result)
    for result in (*succeeded, *failed):
        assert not leaked(_output(result)), _output(result)
    for request in requests:
        assert not leaked(repr(request.headers), (HF_ENV_TOKEN, HF_FILE_TOKEN)), request.path
    assert_no_secret_in_logs(debug_logs)


def test_the_cli_help_shows_no_secret_from_the_environment(
    cli: Any, hf_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    monkeypatch.setenv("ZEPHYR_TGI_API_KEY", API_KEY)
    runner = CliRunner()
    commands = [[], *([name] for name in cli.commands)]
    for command in commands:
        result = runner.invoke(cli, [*command, "--help"])
        assert result.exit_code == 0, _output(result)
        assert not leaked(_output(result)), f"zephyr-tgi {' '.join(command)} --help: {_output(result)}"
