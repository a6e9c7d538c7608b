"""Fixtures for the command-line tests: click's runner against an in-process TGI emulator."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from click.testing import CliRunner, Result

from zephyr_tgi import Message, render_prompt
from zephyr_tgi._cli.main import cli
from zephyr_tgi.testing import TGIEmulator, expected_reply

# Variables the CLI (or the client it builds) reads: tests start from none of them, whatever the shell has.
CLEAN_ENV: dict[str, str | None] = {
    "ZEPHYR_TGI_URL": None,
    "ZEPHYR_TGI_API_KEY": None,
    "ZEPHYR_TGI_TIMEOUT": None,
    "ZEPHYR_TGI_SYSTEM_PROMPT": None,
    "ZEPHYR_TGI_VARIANT": None,
    "ZEPHYR_TGI_IMAGE": None,
    "ZEPHYR_TGI_GPUS": None,
    # One attempt: error tests must not wait through the backoff of retries.
    "ZEPHYR_TGI_MAX_ATTEMPTS": "1",
}


class Cli:
    """Runs `zephyr-tgi` in-process with click's runner; stdout and stderr are kept apart."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.runner = CliRunner()

    def __call__(
        self, *args: str, input: str | None = None, env: dict[str, str | None] | None = None, url: bool = True
    ) -> Result:
        argv = list(args)
        if url and {"chat", "generate", "info", "health", "tokenize"} & set(args):
            argv += ["--url", self.url]
        return self.runner.invoke(cli, argv, input=input, env={**CLEAN_ENV, **(env or {})})


@pytest.fixture
def emulator() -> Iterator[TGIEmulator]:
    """A fresh emulator on a free loopback port."""
    with TGIEmulator() as server:
        yield server


@pytest.fixture
def zephyr(emulator: TGIEmulator) -> Cli:
    """`zephyr(args...)` runs the CLI against `emulator` (the --url is added for the client commands)."""
    return Cli(emulator.url)


def chat_reply(*turns: tuple[str, str], system: str = "") -> str:
    """What the emulator answers to a chat, rendered the way `ZephyrClient.chat` renders it."""
    messages: Sequence[Message] = [
        Message(role="system", content=system),
        *(Message(role=role, content=content) for role, content in turns),
    ]
    return expected_reply(render_prompt(messages))


def last_prompt(emulator: TGIEmulator) -> str:
    """The prompt of the last generation request the emulator received."""
    for request in reversed(emulator.stats.requests):
        if request.path in ("/generate", "/generate_stream"):
            body = request.json
            assert isinstance(body, dict)
            prompt = body["inputs"]
            assert isinstance(prompt, str)
            return prompt
    raise AssertionError("no generation request was received")
