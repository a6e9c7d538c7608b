"""/info, /health, /tokenize, /metrics and the Messages API over real HTTP."""

from __future__ import annotations

import pytest

from tests.http.conftest import Twin
from zephyr_tgi import ChatCompletion, ChatCompletionChunk, InputValidationError, ServerInfo
from zephyr_tgi.testing import TGIEmulator


async def test_info_is_typed(twin: Twin) -> None:
    info: ServerInfo = await twin.call("info")
    assert info.model_id == "TheBloke/zephyr-7B-alpha-GPTQ"
    assert (info.max_input_tokens, info.max_total_tokens) == (3696, 4096)


async def test_health_is_true_when_up_and_false_when_unreachable(twin: Twin, kind: str) -> None:
    assert await twin.call("health") is True
    unreachable = Twin(kind, "http://127.0.0.1:9")
    assert await unreachable.call("health") is False
    await unreachable.close()


async def test_wait_until_ready_returns_info(twin: Twin) -> None:
    info = await twin.call("wait_until_ready", 5.0)
    assert info.max_total_tokens == 4096


async def test_tokenize_returns_spans_that_cover_the_text(twin: Twin) -> None:
    spans = await twin.call("tokenize", "Hello world, again")
    assert spans
    assert "".join(span.text for span in spans) == "Hello world, again"
    assert spans[0].start == 0
    assert spans[-1].stop == len("Hello world, again")


async def test_metrics_are_parsed_to_numbers(twin: Twin) -> None:
    await twin.call("chat", "Hi")
    metrics = await twin.call("metrics")
    assert metrics
    assert all(isinstance(value, float) for value in metrics.values())
    assert any(name.startswith("tgi_request") for name in metrics)


async def test_chat_completion(twin: Twin) -> None:
    completion: ChatCompletion = await twin.call("chat_completion", [{"role": "user", "content": "Hi"}], max_tokens=8)
    assert completion.text
    assert completion.choices[0].finish_reason in ("length", "stop", "stop_sequence")
    assert completion.usage is not None
    assert completion.usage.completion_tokens <= 8


async def test_chat_completion_stream_ends_at_done(twin: Twin) -> None:
    chunks: list[ChatCompletionChunk] = await twin.stream("chat_completion", "Hi", stream=True, max_tokens=6)
    whole: ChatCompletion = await twin.call("chat_completion", "Hi", max_tokens=6)
    assert "".join(chunk.text for chunk in chunks) == whole.text
    assert chunks[-1].choices[0].finish_reason is not None


async def test_missing_chat_template_is_an_input_validation_error(kind: str) -> None:
    with TGIEmulator(chat_template=False) as emulator:
        twin = Twin(kind, emulator.url)
        with pytest.raises(InputValidationError) as info:
            await twin.call("chat_completion", "Hi")
        with pytest.raises(InputValidationError):
            await twin.stream("chat_completion", "Hi", stream=True)
        await twin.close()
    assert info.value.error_type == "template_error"
    assert info.value.status_code == 422
    # Client-side templating does not depend on the server's template.
    with TGIEmulator(chat_template=False) as emulator:
        twin = Twin(kind, emulator.url)
        assert (await twin.call("chat", "Hi")).text
        await twin.close()


async def test_calls_reuse_one_connection(twin: Twin, emulator: TGIEmulator) -> None:
    await twin.call("chat", "Hi")  # the first call also reads /info
    emulator.reset()
    for _ in range(3):
        await twin.call("chat", "Hi")
        await twin.stream("chat_stream", "Hi")
        await twin.call("chat_completion", "Hi", max_tokens=2)
    assert emulator.stats.requests_total == 9
    assert emulator.stats.connections_total == 0  # every request went over the connection opened before
