"""`zephyr-tgi emulator`: the TGI emulator on a port, with its fault options, stopped by Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zephyr_tgi import RetryPolicy, ZephyrClient
from zephyr_tgi._cli.main import build_emulator
from zephyr_tgi.testing import TGIEmulator

from .conftest import Cli

ZEPHYR_TGI = Path(sys.executable).with_name("zephyr-tgi")


def read_line(process: subprocess.Popen[bytes], timeout: float = 15.0) -> str:
    """The next line the process prints on stdout, waiting at most `timeout` seconds."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            process.kill()
            raise AssertionError(f"no output within {timeout} s; stderr: {process.communicate()[1].decode()}")
    return process.stdout.readline().decode()


def test_fault_options_become_the_emulators_faults() -> None:
    emulator = build_emulator(
        host="127.0.0.1",
        port=0,
        api_key=None,
        replies=None,
        seed=None,
        max_input_tokens=100,
        max_total_tokens=200,
        enable_prefill_logprobs=True,
        faults={"overload_next": 2, "retry_after": "1", "unavailable_for": 3.0, "token_latency": 0.01},
    )

    assert emulator.faults.overload_next == 2
    assert emulator.faults.retry_after == "1"
    assert emulator.faults.unavailable_for == 3.0
    assert emulator.info()["max_total_tokens"] == 200


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_the_engine_option_makes_the_emulator_speak_that_engine(engine: str) -> None:
    emulator = build_emulator(
        host="127.0.0.1",
        port=0,
        api_key=None,
        replies=None,
        seed=None,
        max_input_tokens=100,
        max_total_tokens=200,
        enable_prefill_logprobs=False,
        faults={},
        engine=engine,
    )
    with emulator, ZephyrClient(emulator.url) as client:
        assert client.info().max_total_tokens == 200
        assert client.engine == engine
    assert Cli("http://unused")("emulator", "--engine", "llamacpp").exit_code == 2


def test_limits_the_emulator_refuses_are_usage_errors() -> None:
    result = Cli("http://unused")("emulator", "--max-input-tokens", "500", "--max-total-tokens", "100")

    assert result.exit_code == 2
    assert "max_input_tokens (500) must be < max_total_tokens (100)" in result.stderr


def test_a_port_in_use_is_one_error_line() -> None:
    with TGIEmulator() as taken:
        result = Cli("http://unused")("emulator", "--port", str(taken.port))

    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: cannot listen on 127.0.0.1:{taken.port}: ")
    assert line.endswith("(--port 0 picks a free port)")


def test_replies_must_be_a_json_object_of_strings(tmp_path: Path) -> None:
    replies = tmp_path / "replies.json"
    replies.write_text('{"Hi": 1}')

    result = Cli("http://unused")("emulator", "--replies", str(replies))

    assert result.exit_code == 2
    assert "must hold a JSON object of strings" in result.stderr


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serves_until_stopped(tmp_path: Path, stop_signal: signal.Signals) -> None:
    replies = tmp_path / "replies.json"
    replies.write_text(json.dumps({"Hi": "Hello from the emulator!"}))
    process = subprocess.Popen(
        [str(ZEPHYR_TGI), "emulator", "--port", "0", "--json", "--replies", str(replies), "--overload-next", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("ZEPHYR_TGI_")},
    )
    try:
        started = json.loads(read_line(process))
        assert started["url"] == f"http://127.0.0.1:{started['port']}"
        retry = RetryPolicy(initial_delay=0.01, max_delay=0.05)
        with ZephyrClient(started["url"], retry=retry) as client:
            began = time.monotonic()
            assert client.chat("Hi").text == "Hello from the emulator!"  # after one 429, retried
            assert time.monotonic() - began < 5
        process.send_signal(stop_signal)
        _, err = process.communicate(timeout=15)
    finally:
        process.kill()
    assert process.returncode == 0
    assert err.decode().rstrip().endswith("Stopped.")
