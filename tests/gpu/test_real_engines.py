"""vLLM and SGLang on a real GPU: TGIServer(engine=...) starts each engine's pinned image with the default
variant, and the same client calls behave as on TGI (chat, stream, JSON, refusal before sending).

They run wherever `nvidia-smi` sees a GPU (Docker with the NVIDIA runtime, huggingface.co or a warm HF_HOME) and
skip elsewhere, saying why; ZEPHYR_TGI_GPU_TESTS=0 skips them on a GPU machine. Each engine's first run pulls
its image (vLLM ~10 GB, SGLang ~15 GB) and the weights.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from tests.gpu.test_real_tgi import _gpu_unavailable_reason
from zephyr_tgi import ConfigurationError, ZephyrClient
from zephyr_tgi._launcher.server import TGIServer

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(3600)]


class Capital(BaseModel):
    country: str
    capital: str


@pytest.fixture(scope="module", params=["vllm", "sglang"])
def real_engine(request: pytest.FixtureRequest) -> Iterator[TGIServer]:
    reason = _gpu_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with TGIServer(engine=request.param, startup_timeout=1800) as server:
        yield server


def test_the_default_variant_answers_a_chat(real_engine: TGIServer) -> None:
    with real_engine.client() as client:
        result = client.chat("What is the capital of France? Answer in one word.", max_new_tokens=20)
        assert client.engine == real_engine.config.engine
    assert "paris" in result.text.lower()


def test_auto_identifies_the_engine(real_engine: TGIServer) -> None:
    with ZephyrClient(real_engine.url, engine="auto") as client:
        client.info()
        assert client.engine == real_engine.config.engine


def test_the_stream_joins_to_the_same_greedy_answer(real_engine: TGIServer) -> None:
    with real_engine.client() as client:
        whole = client.chat("Name three colours.", max_new_tokens=24, temperature=0)
        chunks = list(client.chat_stream("Name three colours.", max_new_tokens=24, temperature=0))
    final = chunks[-1].result
    assert final is not None
    assert "".join(chunk.text for chunk in chunks) == final.text == whole.text


def test_structured_output_is_constrained_and_validated(real_engine: TGIServer) -> None:
    with real_engine.client() as client:
        answer = client.chat_json("Which is the capital of Italy? Answer as JSON.", Capital, max_new_tokens=64)
    assert answer.capital.lower() == "rome"


def test_what_the_engine_lacks_is_refused_before_sending(real_engine: TGIServer) -> None:
    with real_engine.client() as client, pytest.raises(ConfigurationError, match="not supported on"):
        client.chat("Hi", typical_p=0.5)
