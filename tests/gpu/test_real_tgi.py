"""Real TGI on a real GPU: TGIServer starts ghcr.io/huggingface/text-generation-inference with the default
variant of TheBloke/zephyr-7B-alpha-GPTQ and the client chats with it.

They run wherever `nvidia-smi` sees a GPU (Docker needs the NVIDIA runtime, and huggingface.co must be reachable
or the cache at HF_HOME must already hold the weights) and skip elsewhere, saying why. ZEPHYR_TGI_GPU_TESTS=0
skips them on a GPU machine. The first run pulls the image (~10 GB) and downloads 4.2 GB of weights.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import httpx2
import pytest

from zephyr_tgi._launcher.readiness import ProgressEvent, Stage
from zephyr_tgi._launcher.server import TGIServer

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(3600)]


def _gpu_unavailable_reason() -> str | None:
    """Why these tests cannot run here, or None when they can."""
    if os.environ.get("ZEPHYR_TGI_GPU_TESTS") == "0":
        return "real-GPU tests switched off by ZEPHYR_TGI_GPU_TESTS=0"
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU here (nvidia-smi not found): real TGI, vLLM or SGLang need a GPU, images, network"
    try:
        subprocess.run(["nvidia-smi", "-L"], check=True, capture_output=True, timeout=30)
    except (subprocess.SubprocessError, OSError) as exc:
        return f"nvidia-smi does not work: {exc}"
    return None


@pytest.fixture(scope="module")
def events() -> list[ProgressEvent]:
    return []


@pytest.fixture(scope="module")
def real_tgi(events: list[ProgressEvent]) -> Iterator[TGIServer]:
    reason = _gpu_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)

    def record(event: ProgressEvent) -> None:
        events.append(event)
        print(f"[gpu test] {event.stage.value}: {event.message}", flush=True)

    with TGIServer(startup_timeout=1800, progress=record) as server:
        yield server


def test_the_default_variant_answers_a_chat(real_tgi: TGIServer) -> None:
    with real_tgi.client() as client:
        result = client.chat("What is the capital of France? Answer in one word.", max_new_tokens=20)
    assert "paris" in result.text.lower()


def test_streaming_yields_tokens(real_tgi: TGIServer) -> None:
    with real_tgi.client() as client:
        chunks = list(client.chat_stream("Count from one to five.", max_new_tokens=30))
    assert len(chunks) > 3


def test_the_messages_api_works_with_the_copied_in_template(real_tgi: TGIServer) -> None:
    response = httpx2.post(
        f"{real_tgi.url}/chat_tokenize",
        json={"model": "tgi", "messages": [{"role": "user", "content": "Hi"}]},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.json()["templated_text"] == "<|user|>\nHi</s>\n<|assistant|>\n"
    completion = httpx2.post(
        f"{real_tgi.url}/v1/chat/completions",
        json={"model": "tgi", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 10},
        timeout=120,
    )
    assert completion.status_code == 200, completion.text


def test_the_server_reports_the_configured_budget(real_tgi: TGIServer) -> None:
    with real_tgi.client() as client:
        info = client.info()
    assert (info.max_input_tokens, info.max_total_tokens) == (3696, 4096)


def test_progress_saw_the_real_start_stages(real_tgi: TGIServer, events: list[ProgressEvent]) -> None:
    stages = {event.stage for event in events}
    assert {Stage.DOWNLOAD, Stage.SHARD_START, Stage.WARMUP, Stage.READY} <= stages
