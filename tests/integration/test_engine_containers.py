"""TGIServer(engine="vllm") against real Docker: the emulator image, told to speak vLLM, stands in for
vllm/vllm-openai. vLLM's command line (positional model, --max-model-len, --port 8000, ...) reaches the container,
port 8000 is published, readiness probes `/v1/completions`, and the client identifies and uses vLLM's API.
SGLang's image replaces the entrypoint (python3 -m sglang.launch_server), which the emulator image cannot stand
in for; its container arguments are covered by tests/unit/test_engine_launch.py and the fake-docker tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from zephyr_tgi import ZephyrClient
from zephyr_tgi._launcher.server import TGIServer

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]


def test_the_vllm_lifecycle_runs_a_real_container(emulator_image: str, tmp_path: Path, docker_client: Any) -> None:
    options: dict[str, Any] = {
        "engine": "vllm",
        "image": emulator_image,
        "gpus": None,
        "cache_dir": tmp_path,
        "startup_timeout": 60,
        "progress": False,
        "env": {"ZEPHYR_TGI_EMULATOR_ENGINE": "vllm"},
    }
    with TGIServer(**options) as server:
        attrs = docker_client.api.inspect_container(server.container_id)
        assert attrs["Config"]["Cmd"][0] == "TheBloke/zephyr-7B-alpha-GPTQ"
        assert "8000/tcp" in attrs["NetworkSettings"]["Ports"]
        with ZephyrClient(server.url) as client:  # auto: identified as vLLM
            assert client.chat("Hello", max_new_tokens=6).text
            assert client.engine == "vllm"
            assert client.info().max_total_tokens == 4096
        container_id = server.container_id
    assert not [c for c in docker_client.containers.list(all=True) if c.id == container_id]
