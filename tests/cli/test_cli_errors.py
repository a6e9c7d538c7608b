"""Errors: one `error:` line on stderr, exit 1 (2 for usage, 130 for Ctrl-C), tracebacks only with --debug,
and never a secret in the output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import zephyr_tgi._cli.main as cli_module
from zephyr_tgi.testing import TGIEmulator

from .conftest import CLEAN_ENV, Cli

PLANTED = "sk-planted-4f1c9e"  # a secret that must never appear in anything the CLI prints
ZEPHYR_TGI = Path(sys.executable).with_name("zephyr-tgi")


def closed_port_url() -> str:
    """The URL of a port nothing listens on (an emulator that was started and stopped)."""
    emulator = TGIEmulator().start()
    emulator.stop()
    return emulator.url


def test_connection_refused_is_one_error_line_and_exit_1(zephyr: Cli) -> None:
    url = closed_port_url()

    result = zephyr("info", "--url", url, url=False)

    assert result.exit_code == 1
    assert result.stdout == ""
    # Fails at once (no retry: nothing listens there), with the URL and what to do next.
    assert result.stderr.splitlines() == [
        f"error: GET /info to {url}: cannot connect ([Errno 111] Connection refused). "
        "Is the server running and is this its URL?",
        "  check --url (or ZEPHYR_TGI_URL); `zephyr-tgi serve` starts a server, `zephyr-tgi ps` lists ours",
    ]


def test_missing_url_says_how_to_give_one(zephyr: Cli) -> None:
    result = zephyr("chat", "Hi", url=False)

    assert result.exit_code == 1
    assert result.stderr.startswith("error: no server URL: pass --url or set ZEPHYR_TGI_URL")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("position", ["group", "command"])
def test_debug_adds_the_traceback(zephyr: Cli, position: str) -> None:
    url = closed_port_url()
    args = ["--debug", "info", "--url", url] if position == "group" else ["info", "--url", url, "--debug"]

    result = zephyr(*args, url=False)

    assert result.exit_code == 1
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert "zephyr_tgi._errors.APIConnectionError" in result.stderr
    assert result.stderr.splitlines()[-2].startswith("error: GET /info to")


def test_usage_errors_exit_2(zephyr: Cli) -> None:
    result = zephyr("chat", "--no-such-option")

    assert result.exit_code == 2
    assert "No such option '--no-such-option'" in result.stderr


def test_a_param_without_a_value_is_a_usage_error(zephyr: Cli) -> None:
    result = zephyr("chat", "-p", "temperature", "Hi")

    assert result.exit_code == 2
    assert "Invalid value for '-p' / '--param': expected KEY=VALUE, got 'temperature'" in result.stderr


def test_invalid_sampling_options_fail_before_anything_is_sent(zephyr: Cli, emulator: TGIEmulator) -> None:
    result = zephyr("chat", "--top-p", "1.5", "Hi")

    assert result.exit_code == 1
    assert result.stderr.startswith("error: invalid sampling options: top_p")
    assert emulator.stats.requests_total == 0


def test_server_errors_are_one_line(zephyr: Cli, emulator: TGIEmulator) -> None:
    emulator.set_faults(stream_error_next=1)

    result = zephyr("generate", "Hello")

    assert result.exit_code == 1
    assert result.stderr.splitlines() == ["error: Request failed during generation: CUDA out of memory"]


def test_a_too_long_prompt_is_a_budget_error(emulator: TGIEmulator) -> None:
    with TGIEmulator(max_input_tokens=20, max_total_tokens=40) as small:
        result = Cli(small.url)("chat", "word " * 100)

    assert result.exit_code == 1
    assert result.stderr.startswith("error: the conversation needs")


def test_bugs_are_called_bugs(zephyr: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(url: str | None, api_key: str | None) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(cli_module, "_client", broken)

    result = zephyr("info")

    assert result.exit_code == 1
    assert result.stderr == (
        "error: unexpected RuntimeError: boom (a bug in zephyr-tgi, please report it; "
        "rerun with --debug for the traceback)\n"
    )


# -- secrets ----------------------------------------------------------------------------------------


@pytest.fixture
def keyed() -> Iterator[Cli]:
    """The CLI against an emulator that wants another key than the planted one."""
    with TGIEmulator(api_key="the-right-key") as emulator:
        yield Cli(emulator.url)


@pytest.mark.parametrize(
    "args",
    [
        ("chat", "Hi"),
        ("chat", "--json", "Hi"),
        ("generate", "--no-stream", "Hi"),
        ("generate", "--jsonl", "Hi"),
        ("tokenize", "Hi"),
        ("--debug", "chat", "Hi"),
        ("--debug", "tokenize", "Hi"),
    ],
)
def test_a_wrong_api_key_is_never_printed(keyed: Cli, args: tuple[str, ...]) -> None:
    result = keyed(*args, "--api-key", PLANTED)

    assert result.exit_code == 1
    assert "error: HTTP 401" in result.stderr
    assert PLANTED not in result.output


def test_an_api_key_is_not_printed_by_commands_that_succeed(keyed: Cli) -> None:
    for args in (("info", "--json"), ("info",), ("health",)):  # TGI's key guards only the POST routes
        result = keyed(*args, "--api-key", PLANTED)
        assert result.exit_code == 0
        assert PLANTED not in result.output


def test_an_api_key_from_the_environment_is_not_shown_in_help(zephyr: Cli) -> None:
    result = zephyr("chat", "--help", env={"ZEPHYR_TGI_API_KEY": PLANTED})

    assert "ZEPHYR_TGI_API_KEY" in result.stdout
    assert PLANTED not in result.output


def test_the_right_api_key_works(emulator: TGIEmulator) -> None:
    with TGIEmulator(api_key=PLANTED) as keyed:
        result = Cli(keyed.url)("chat", "--api-key", PLANTED, "Hi")

    assert result.exit_code == 0
    assert PLANTED not in result.output


# -- Ctrl-C, in a real process ----------------------------------------------------------------------


def test_ctrl_c_while_streaming_exits_130() -> None:
    with TGIEmulator(token_latency=0.05) as slow:
        env = {**os.environ, **{k: v for k, v in CLEAN_ENV.items() if v is not None}}
        env.pop("ZEPHYR_TGI_URL", None)
        process = subprocess.Popen(
            [str(ZEPHYR_TGI), "chat", "--url", slow.url, "Tell me a long story"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        try:
            assert process.stdout is not None
            first = process.stdout.read(1)  # blocks until the first token arrives (the answer takes > 1 s)
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=20)
        finally:
            process.kill()
    assert first
    assert process.returncode == 130
    assert err.decode().strip().splitlines()[-1] == "interrupted"
