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


def test_tokenize_gives_the_spans_of_zephyrs_tokenizer(real_engine: TGIServer) -> None:
    from zephyr_tgi import ZephyrTokenizer

    text = "Zephyr costs 5 € — ça va? 日本語 😀\n\tdone </s> after"
    expected = ZephyrTokenizer.from_pretrained().encode_spans(text)
    with real_engine.client() as client:
        spans = client.tokenize(text)
    assert [span.id for span in spans] == [span.id for span in expected]
    assert "".join(span.text for span in spans) == text


def test_perplexity_reads_the_engines_prompt_logprobs(real_engine: TGIServer) -> None:
    fluent = "The capital of France is Paris, and the capital of Italy is Rome."
    scrambled = "Rome Paris capital the of is and France, Italy of capital the is."
    with real_engine.client() as client:
        assert 1.0 < client.perplexity(fluent) < client.perplexity(scrambled)
