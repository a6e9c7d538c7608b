"""`python -m zephyr_tgi.testing`: TGI launcher flags, env fallbacks, log lines, exit codes."""

from __future__ import annotations

import importlib.resources
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx2
import pytest

from zephyr_tgi.testing import LOG_LINES, STAGE_MARKERS
from zephyr_tgi.testing._cli import parse_arguments
from zephyr_tgi.testing._faults import DEFAULT_EXIT_MESSAGE

STARTUP_TIMEOUT = 15.0


class Emulator:
    """A CLI emulator process whose stdout lines are collected by a thread."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        environment = {k: v for k, v in os.environ.items() if k not in ("PORT", "API_KEY", "MAX_TOTAL_TOKENS")}
        environment.update(env or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "zephyr_tgi.testing", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert self.process.stdout is not None
        threading.Thread(target=self._pump, args=(self.process.stdout,), daemon=True).start()

    def _pump(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, marker: str, timeout: float = STARTUP_TIMEOUT) -> str:
        """The first stdout line containing `marker` (fails if the process ends first)."""
        for line in self.lines:
            if marker in line:
                return line
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {marker!r} in {self.lines}"
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            assert item is not None, f"exited before {marker!r}: {self.lines} {self.stderr()}"
            self.lines.append(item)
            if marker in item:
                return item

    def url(self) -> str:
        line = self.wait_for(STAGE_MARKERS["listening"])
        match = re.search(r"http://[^\s\"]+:(\d+)", line)
        assert match is not None, line
        return f"http://127.0.0.1:{match.group(1)}"

    def stderr(self) -> str:
        if self.process.poll() is None:
            return ""
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def terminate(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=10)


@pytest.fixture
def spawn() -> Iterator[type[Emulator]]:
    started: list[Emulator] = []

    class Tracked(Emulator):
        def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
            super().__init__(args, env)
            started.append(self)

    yield Tracked
    for emulator in started:
        if emulator.process.poll() is None:
            emulator.process.kill()
        emulator.process.wait(timeout=10)
        for stream in (emulator.process.stdout, emulator.process.stderr):
            if stream is not None:
                stream.close()


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zephyr_tgi.testing", *args], capture_output=True, text=True, timeout=30, check=False
    )


def test_every_stage_marker_is_in_a_log_line() -> None:
    assert all(any(marker in line for line in LOG_LINES) for marker in STAGE_MARKERS.values())


def test_serves_with_tgi_flags_and_logs_the_startup_stages(spawn: type[Emulator]) -> None:
    emulator = spawn(
        ["--model-id", "some/model", "--max-input-tokens", "100", "--max-total-tokens", "200", "--port", "0"]
    )
    url = emulator.url()
    info = httpx2.get(f"{url}/info", trust_env=False).json()
    assert (info["model_id"], info["max_input_tokens"], info["max_total_tokens"]) == ("some/model", 100, 200)
    stages = ["args", "download", "downloaded", "shard_starting", "shard_ready", "webserver", "warmup", "connected"]
    positions = [next(i for i, line in enumerate(emulator.lines) if STAGE_MARKERS[s] in line) for s in stages]
    assert positions == sorted(positions)
    assert emulator.lines[0].split()[1:3] == ["INFO", "text_generation_launcher:"]
    assert emulator.terminate() == 0
    emulator.wait_for(STAGE_MARKERS["shutdown"])


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_the_image_speaks_another_engine_when_told(spawn: type[Emulator], engine: str) -> None:
    emulator = spawn(
        ["--port", "0", "--max-total-tokens", "300", "--max-input-tokens", "200"],
        {"ZEPHYR_TGI_EMULATOR_ENGINE": engine},
    )
    url = emulator.url()
    models = httpx2.get(f"{url}/v1/models", trust_env=False).json()
    assert models["data"][0]["max_model_len"] == 300
    assert httpx2.get(f"{url}/info", trust_env=False).json() == {"detail": "Not Found"}  # FastAPI's 404
    assert emulator.terminate() == 0


def test_unknown_launcher_flags_are_ignored_with_a_warning(spawn: type[Emulator]) -> None:
    emulator = spawn(["--port", "0", "--cuda-graphs", "0", "--dtype", "float16", "--weird-flag"])
    warning = emulator.wait_for("Ignoring unknown launcher arguments")
    assert "--cuda-graphs 0 --dtype float16 --weird-flag" in warning
    assert httpx2.get(f"{emulator.url()}/health", trust_env=False).status_code == 200


def test_env_vars_are_the_fallback_and_docker_hostname_is_ignored(spawn: type[Emulator]) -> None:
    emulator = spawn(
        [],
        env={
            "PORT": "0",
            "MAX_TOTAL_TOKENS": "300",
            "API_KEY": "k",
            "HOSTNAME": "a1b2c3d4e5f6",
            "MODEL_ID": "env/model",
        },
    )
    url = emulator.url()
    assert emulator.wait_for("Args").count('hostname: "0.0.0.0"') == 1
    info = httpx2.get(f"{url}/info", trust_env=False).json()
    assert (info["model_id"], info["max_total_tokens"], info["max_input_tokens"]) == ("env/model", 300, 299)
    assert httpx2.post(f"{url}/generate", json={"inputs": "x"}, trust_env=False).status_code == 401


def test_flags_win_over_env_vars() -> None:
    values, _unknown = parse_arguments(
        ["--port", "81", "--emulator-token-latency", "0.5"],
        {
            "PORT": "80",
            "ZEPHYR_TGI_EMULATOR_TOKEN_LATENCY": "0.1",
            "ZEPHYR_TGI_EMULATOR_CHAT_TEMPLATE": "false",
            "ENABLE_PREFILL_LOGPROBS": "true",
        },
    )
    assert (values["port"], values["emulator_token_latency"]) == (81, 0.5)
    assert values["emulator_chat_template"] is False
    assert values["enable_prefill_logprobs"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--max-input-tokens", "10", "--max-total-tokens", "10"],
            "`max_input_tokens`(10) must be < `max_total_tokens`(10)",
        ),
        (
            ["--max-input-tokens", "10", "--max-input-length", "10"],
            "Both `max_input_tokens` (10) and `max_input_length` (10)",
        ),
        (["--max-input-tokens", "100", "--max-batch-prefill-tokens", "50"], "`max_batch_prefill_tokens` must be >="),
        (["--tokenizer-config-path", "/nonexistent/tokenizer_config.json"], "cannot read --tokenizer-config-path"),
    ],
)
def test_invalid_launcher_arguments_exit_1(args: list[str], message: str) -> None:
    result = _run(*args)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ArgumentValidation(")
    assert message in result.stderr


def test_a_tokenizer_config_without_chat_template_is_rejected(tmp_path: Path) -> None:
    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({"eos_token": "</s>"}))
    result = _run("--tokenizer-config-path", str(config))
    assert (result.returncode, "has no `chat_template`" in result.stderr) == (1, True)


def test_exit_after_crashes_during_warmup_with_the_exit_code() -> None:
    result = _run("--port", "0", "--emulator-exit-after", "0.2", "--emulator-exit-code", "3")
    assert result.returncode == 3
    assert DEFAULT_EXIT_MESSAGE in result.stderr
    assert STAGE_MARKERS["warmup"] in result.stdout
    assert STAGE_MARKERS["connected"] not in result.stdout
    assert STAGE_MARKERS["shard_failed"] in result.stdout


def test_emulator_flags_configure_replies_template_and_tokenizer(spawn: type[Emulator], tmp_path: Path) -> None:
    replies = tmp_path / "replies.json"
    replies.write_text(json.dumps({"ping": "pong"}))
    model = importlib.resources.files("mistral_common") / "data" / "tokenizer.model.v1"
    emulator = spawn(
        [
            "--port",
            "0",
            "--emulator-replies",
            str(replies),
            "--no-emulator-chat-template",
            "--tokenizer-model",
            str(model),
        ]
    )
    url = emulator.url()
    generated = httpx2.post(f"{url}/generate", json={"inputs": "ping"}, trust_env=False).json()
    chat = httpx2.post(
        f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}, trust_env=False
    )
    tokens = httpx2.post(f"{url}/tokenize", json={"inputs": "Hello world"}, trust_env=False).json()
    assert generated == {"generated_text": "pong"}
    assert (chat.status_code, chat.json()["error_type"]) == (422, "template_error")
    assert [token["id"] for token in tokens] == [1, 22557, 1526]


def test_refuse_for_delays_listening_until_connected_is_logged(spawn: type[Emulator]) -> None:
    emulator = spawn(["--port", "0", "--emulator-refuse-for", "0.5", "--json-output"])
    warmup = json.loads(emulator.wait_for(STAGE_MARKERS["warmup"]))
    assert warmup["level"] == "INFO"
    assert warmup["fields"]["message"] == "Warming up model"
    started = time.monotonic()
    emulator.wait_for(STAGE_MARKERS["connected"])
    assert time.monotonic() - started >= 0.3
    assert httpx2.get(f"{emulator.url()}/health", trust_env=False).status_code == 200


def test_sigint_also_stops_gracefully(spawn: type[Emulator]) -> None:
    emulator = spawn(["--port", "0"])
    emulator.url()
    emulator.process.send_signal(signal.SIGINT)
    assert emulator.process.wait(timeout=10) == 0


def test_proxy_unavailable_for_answers_503_with_retry_after_then_serves(spawn: type[Emulator]) -> None:
    emulator = spawn(["--port", "0", "--emulator-proxy-unavailable-for", "30"])
    url = emulator.url()
    response = httpx2.post(f"{url}/generate", json={"inputs": "x"}, trust_env=False)
    assert (response.status_code, response.headers["retry-after"]) == (503, "1")
    httpx2.post(f"{url}/__emulator__/faults", json={"proxy_unavailable_for": 0}, trust_env=False)
    assert httpx2.post(f"{url}/generate", json={"inputs": "x"}, trust_env=False).status_code == 200
