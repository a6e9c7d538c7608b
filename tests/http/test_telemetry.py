"""OpenTelemetry spans and metrics, traceparent and X-Request-Id, over real HTTP against the emulator.

Spans and metrics go to the SDK's in-memory exporter and reader; what reached the server is read from the
emulator's record of the requests it received. Every test runs with both clients.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from zephyr_tgi import (
    AsyncConversation,
    AsyncZephyrClient,
    Conversation,
    InputValidationError,
    OverloadedError,
    Telemetry,
    ZephyrClient,
)
from zephyr_tgi._telemetry._instrument import DURATION_BUCKETS, TOKEN_BUCKETS
from zephyr_tgi.testing import ScriptedResponse, TGIEmulator

from .conftest import Twin, generation_requests

_VALIDATION_BODY = '{"error":"Input validation error: `inputs` is too long","error_type":"validation"}'


@dataclass
class Recorded:
    """Where a test's telemetry goes."""

    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def telemetry(self, **settings: Any) -> Telemetry:
        return Telemetry(tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **settings)

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def only_span(self) -> ReadableSpan:
        spans = self.finished()
        assert len(spans) == 1, [span.name for span in spans]
        return spans[0]

    def points(self, name: str) -> list[HistogramDataPoint]:
        data = self.metrics.get_metrics_data()
        found: list[HistogramDataPoint] = []
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(p for p in metric.data.data_points if isinstance(p, HistogramDataPoint))
        return found

    def unit_of(self, name: str) -> str | None:
        data = self.metrics.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        return metric.unit
        return None


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    metrics = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[metrics])
    yield Recorded(spans, metrics, tracer_provider, meter_provider)
    tracer_provider.shutdown()
    meter_provider.shutdown()


async def _traced_twin(kind: str, emulator: TGIEmulator, recorded: Recorded, **settings: Any) -> Twin:
    return Twin(kind, emulator.url, telemetry=recorded.telemetry(**settings))


def _attributes(item: ReadableSpan | HistogramDataPoint | Any) -> dict[str, Any]:
    """The attributes of a span, a metric point or a span event, as a plain dict."""
    return dict(item.attributes or {})


async def test_a_chat_is_one_client_span_with_the_request_and_response_attributes(
    kind: str, emulator: TGIEmulator, recorded: Recorded
) -> None:
    twin = await _traced_twin(kind, emulator, recorded)
    options = {"max_new_tokens": 6, "temperature": 0.5, "top_p": 0.9, "top_k": 20, "seed": 7, "stop": ["\n\n"]}
    result = await twin.call("chat", "Hi", **options)
    await twin.close()

    span = recorded.only_span()
    attributes = _attributes(span)
    assert span.name == "chat"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    host, port = emulator.url.removeprefix("http://").split(":")
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "tgi"
    assert attributes["server.address"] == host
    assert attributes["server.port"] == int(port)
    assert attributes["gen_ai.request.max_tokens"] == 6
    assert attributes["gen_ai.request.temperature"] == 0.5
    assert attributes["gen_ai.request.top_p"] == 0.9
    assert attributes["gen_ai.request.top_k"] == 20
    assert attributes["gen_ai.request.seed"] == 7
    assert attributes["gen_ai.request.stop_sequences"] == ("\n\n",)
    assert attributes["gen_ai.response.finish_reasons"] == (result.finish_reason,)
    assert attributes["gen_ai.usage.output_tokens"] == result.generated_tokens
    assert "error.type" not in attributes


async def test_generate_is_a_text_completion_span_named_with_the_model(
    kind: str, emulator: TGIEmulator, recorded: Recorded
) -> None:
    twin = await _traced_twin(kind, emulator, recorded, model="TheBloke/zephyr-7B-alpha-GPTQ")
    await twin.call("generate", "Once upon a time", max_new_tokens=4)
    await twin.close()

    span = recorded.only_span()
    assert span.name == "text_completion TheBloke/zephyr-7B-alpha-GPTQ"
    assert _attributes(span)["gen_ai.operation.name"] == "text_completion"
    assert _attributes(span)["gen_ai.request.model"] == "TheBloke/zephyr-7B-alpha-GPTQ"


async def test_a_chat_completion_span_has_the_response_model_and_usage(
    kind: str, emulator: TGIEmulator, recorded: Recorded
) -> None:
    twin = await _traced_twin(kind, emulator, recorded)
    completion = await twin.call("chat_completion", "Hi", max_tokens=5, temperature=0.2)
    await twin.close()

    span = recorded.only_span()
    attributes = _attributes(span)
    assert span.name == "chat"
    assert attributes["gen_ai.request.max_tokens"] == 5
    assert attributes["gen_ai.request.temperature"] == 0.2
    assert attributes["gen_ai.response.model"] == completion.model
    assert attributes["gen_ai.response.finish_reasons"] == (completion.choices[0].finish_reason,)
    assert completion.usage is not None
    assert attributes["gen_ai.usage.input_tokens"] == completion.usage.prompt_tokens
    assert attributes["gen_ai.usage.output_tokens"] == completion.usage.completion_tokens


async def test_the_metrics_follow_the_conventions_names_units_and_buckets(
    kind: str, emulator: TGIEmulator, recorded: Recorded
) -> None:
    twin = await _traced_twin(kind, emulator, recorded)
    completion = await twin.call("chat_completion", "Hi", max_tokens=5)
    await twin.close()

    assert recorded.unit_of("gen_ai.client.operation.duration") == "s"
    assert recorded.unit_of("gen_ai.client.token.usage") == "{token}"
    (duration,) = recorded.points("gen_ai.client.operation.duration")
    assert duration.count == 1
    assert tuple(duration.explicit_bounds) == DURATION_BUCKETS
    assert _attributes(duration)["gen_ai.operation.name"] == "chat"
    assert _attributes(duration)["gen_ai.provider.name"] == "tgi"
    tokens = {_attributes(p)["gen_ai.token.type"]: p for p in recorded.points("gen_ai.client.token.usage")}
    assert completion.usage is not None
    assert tokens["input"].sum == completion.usage.prompt_tokens
    assert tokens["output"].sum == completion.usage.completion_tokens
    assert tuple(tokens["output"].explicit_bounds) == TOKEN_BUCKETS
    # Not a stream: the chunk metrics are not reported.
    assert recorded.points("gen_ai.client.operation.time_to_first_chunk") == []


@pytest.mark.parametrize("method", ["chat_stream", "generate_stream"])
async def test_a_stream_span_ends_with_the_stream_and_times_its_chunks(
    kind: str, method: str, emulator: TGIEmulator, recorded: Recorded
) -> None:
    twin = await _traced_twin(kind, emulator, recorded)
    chunks = await twin.stream(method, "Hi", max_new_tokens=5)
    await twin.close()

    span = recorded.only_span()
    attributes = _attributes(span)
    assert span.name == ("chat" if method == "chat_stream" else "text_completion")
    assert attributes["gen_ai.request.stream"] is True
    assert attributes["gen_ai.response.time_to_first_chunk"] > 0
    result = chunks[-1].result
    assert attributes["gen_ai.usage.output_tokens"] == result.generated_tokens
    assert attributes["gen_ai.response.finish_reasons"] == (result.finish_reason,)
    (first,) = recorded.points("gen_ai.client.operation.time_to_first_chunk")
    (per_chunk,) = recorded.points("gen_ai.client.operation.time_per_output_chunk")
    assert first.count == 1
    assert per_chunk.count == len(chunks) - 1
    assert tuple(per_chunk.explicit_bounds) == DURATION_BUCKETS


async def test_chunks_that_arrive_in_one_packet_are_each_counted_and_timed(
    kind: str, emulator: TGIEmulator, recorded: Recorded
) -> None:
    # A whole stream in one write: the client turns its events into chunks together, and telemetry still sees
    # every chunk (one first-chunk time, one gap per later chunk) and the result on the last.
    texts = ["The", " sky", " is", " blue"]
    events = [
        {"index": i + 1, "token": {"id": 10 + i, "text": text, "logprob": -0.1, "special": False}}
        for i, text in enumerate(texts)
    ]
    events[-1].update(
        generated_text="".join(texts),
        details={"finish_reason": "length", "generated_tokens": 4, "seed": None, "input_length": 3},
    )
    body = "".join("data: " + json.dumps(event) + "\n\n" for event in events)
    emulator.set_faults(scripted_responses=[ScriptedResponse(200, body, "text/event-stream")])
    twin = await _traced_twin(kind, emulator, recorded)
    chunks = await twin.stream("generate_stream", "Hi", max_new_tokens=4)
    await twin.close()

    assert [chunk.text for chunk in chunks] == texts
    attributes = _attributes(recorded.only_span())
    assert attributes["gen_ai.usage.output_tokens"] == 4
    assert attributes["gen_ai.response.finish_reasons"] == ("length",)
    (first,) = recorded.points("gen_ai.client.operation.time_to_first_chunk")
    (per_chunk,) = recorded.points("gen_ai.client.operation.time_per_output_chunk")
    assert (first.count, per_chunk.count) == (1, 3)


async def test_a_chat_completion_stream_span_gathers_the_chunks_answer(
    kind: str, emulator: TGIEmulator, recorded: Recorded
) -> None:
    twin = await _traced_twin(kind, emulator, recorded, capture_content=True)
    chunks = await twin.stream(
        "chat_completion", "Hi", stream=True, max_tokens=5, stream_options={"include_usage": True}
    )
    await twin.close()

    attributes = _attributes(recorded.only_span())
    usage = next(chunk.usage for chunk in chunks if chunk.usage is not None)
    assert attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert attributes["gen_ai.response.model"] == chunks[0].model
    (output,) = json.loads(attributes["gen_ai.output.messages"])
    assert output["parts"][0]["content"] == "".join(chunk.text for chunk in chunks)


async def test_a_stream_not_read_to_its_end_ends_its_span_when_closed(
    kind: str, emulator: TGIEmulator, recorded: Recorded
) -> None:
    emulator.set_faults(token_latency=0.01)
    telemetry = recorded.telemetry()
    if kind == "sync":

        def read_two() -> None:
            with ZephyrClient(emulator.url, telemetry=telemetry) as client:
                stream = client.chat_stream("Hi", max_new_tokens=20)
                next(stream)
                next(stream)
                assert recorded.finished() == []  # still open
                stream.close()

        await asyncio.to_thread(read_two)
    else:
        async with AsyncZephyrClient(emulator.url, telemetry=telemetry) as client:
            stream = client.chat_stream("Hi", max_new_tokens=20)
            await stream.__anext__()
            await stream.__anext__()
            assert recorded.finished() == []
            await stream.aclose()

    span = recorded.only_span()
    assert span.status.status_code is StatusCode.UNSET
    assert "gen_ai.usage.output_tokens" not in _attributes(span)  # the stream never got its end


async def test_retries_are_span_events_with_attempt_wait_and_cause(
    kind: str, emulator: TGIEmulator, recorded: Recorded
) -> None:
    emulator.set_faults(overload_next=2)
    twin = await _traced_twin(kind, emulator, recorded)
    await twin.call("chat", "Hi")
    await twin.close()

    span = recorded.only_span()
    retries = [event for event in span.events if event.name == "zephyr_tgi.retry"]
    assert [_attributes(e)["zephyr_tgi.retry.attempt"] for e in retries] == [1, 2]
    for event in retries:
        attributes = _attributes(event)
        assert attributes["error.type"] == "OverloadedError"
        assert attributes["zephyr_tgi.retry.wait"] > 0
    assert span.status.status_code is StatusCode.UNSET  # the third attempt succeeded


async def test_a_failover_to_another_replica_is_a_retry_event_and_the_span_names_the_replica_that_answered(
    kind: str, emulator: TGIEmulator, recorded: Recorded
) -> None:
    with TGIEmulator() as stopped:
        refused_url = stopped.url
    twin = Twin(kind, [refused_url, emulator.url], engine="tgi", telemetry=recorded.telemetry())
    await twin.call("chat", "Hi", max_new_tokens=2)
    await twin.close()

    span = recorded.only_span()
    (retry,) = [event for event in span.events if event.name == "zephyr_tgi.retry"]
    assert _attributes(retry)["error.type"] == "APIConnectionError"
    assert _attributes(retry)["zephyr_tgi.retry.wait"] == 0  # another replica was up: no wait
    assert _attributes(span)["server.port"] == int(emulator.url.rsplit(":", 1)[1])


async def test_a_failed_call_has_error_type_an_error_status_and_a_failed_duration(
    kind: str, emulator: TGIEmulator, recorded: Recorded
) -> None:
    emulator.set_faults(
        scripted_responses=[ScriptedResponse(status=422, body=_VALIDATION_BODY, content_type="application/json")]
    )
    twin = await _traced_twin(kind, emulator, recorded)
    with pytest.raises(InputValidationError):
        await twin.call("chat", "Hi")
    await twin.close()

    span = recorded.only_span()
    assert span.status.status_code is StatusCode.ERROR
    assert _attributes(span)["error.type"] == "InputValidationError"
    (duration,) = recorded.points("gen_ai.client.operation.duration")
    assert _attributes(duration)["error.type"] == "InputValidationError"
    assert recorded.points("gen_ai.client.token.usage") == []


async def test_a_stream_failing_after_tokens_ends_its_span_with_the_error(
    kind: str, emulator: TGIEmulator, recorded: Recorded
) -> None:
    emulator.set_faults(stream_error_next=1, stream_error_after_tokens=2, stream_error_type="overloaded")
    twin = await _traced_twin(kind, emulator, recorded)
    chunks, error = await twin.stream_until_error("chat_stream", "Hi")
    await twin.close()

    assert isinstance(error, OverloadedError)
    span = recorded.only_span()
    assert span.status.status_code is StatusCode.ERROR
    assert _attributes(span)["error.type"] == "OverloadedError"
    assert span.events == ()  # a stream is not retried once tokens have arrived
    (per_chunk,) = recorded.points("gen_ai.client.operation.time_per_output_chunk")
    assert per_chunk.count == len(chunks) - 1


async def test_every_request_of_a_traced_call_carries_its_traceparent(
    kind: str, emulator: TGIEmulator, recorded: Recorded
) -> None:
    emulator.set_faults(overload_next=1)
    twin = await _traced_twin(kind, emulator, recorded)
    await twin.call("chat", "Hi")
    await twin.close()

    span = recorded.only_span()
    context = span.context
    expected = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    sent = [(request.path, request.headers.get("traceparent")) for request in emulator.stats.requests]
    # The first call reads /info (inside the call, under the endpoint's lock), then /generate twice (a retry).
    assert [path for path, _ in sent] == ["/info", "/generate", "/generate"]
    assert {traceparent for _, traceparent in sent} == {expected}


async def test_the_span_is_a_child_of_the_callers_current_span(
    kind: str, emulator: TGIEmulator, recorded: Recorded
) -> None:
    tracer = recorded.tracer_provider.get_tracer("test")
    twin = await _traced_twin(kind, emulator, recorded)
    if kind == "sync":

        def call_inside_a_span() -> None:
            with tracer.start_as_current_span("request handler"):
                assert isinstance(twin.client, ZephyrClient)
                twin.client.chat("Hi", max_new_tokens=3)

        await asyncio.to_thread(call_inside_a_span)
    else:
        assert isinstance(twin.client, AsyncZephyrClient)
        with tracer.start_as_current_span("request handler"):
            await twin.client.chat("Hi", max_new_tokens=3)
    await twin.close()

    spans = {span.name: span for span in recorded.finished()}
    parent = spans["chat"].parent
    assert parent is not None
    assert parent.span_id == spans["request handler"].context.span_id


async def test_batch_items_are_children_of_the_callers_span_though_they_run_on_workers(
    kind: str, emulator: TGIEmulator, recorded: Recorded
) -> None:
    tracer = recorded.tracer_provider.get_tracer("test")
    twin = await _traced_twin(kind, emulator, recorded)
    if kind == "sync":

        def batch_inside_a_span() -> None:
            with tracer.start_as_current_span("batch"):
                assert isinstance(twin.client, ZephyrClient)
                twin.client.batch_chat(["a", "b", "c"], concurrency=3, progress=False, max_new_tokens=2)

        await asyncio.to_thread(batch_inside_a_span)
    else:
        assert isinstance(twin.client, AsyncZephyrClient)
        with tracer.start_as_current_span("batch"):
            await twin.client.batch_chat(["a", "b", "c"], concurrency=3, progress=False, max_new_tokens=2)
    await twin.close()

    spans = recorded.finished()
    (batch,) = [span for span in spans if span.name == "batch"]
    items = [span for span in spans if span.name == "chat"]
    assert len(items) == 3
    assert all(item.parent is not None and item.parent.span_id == batch.context.span_id for item in items)


async def test_content_is_not_recorded_unless_asked(kind: str, emulator: TGIEmulator, recorded: Recorded) -> None:
    twin = await _traced_twin(kind, emulator, recorded)
    await twin.call("chat", "my secret question", system="be brief", max_new_tokens=3)
    await twin.close()

    attributes = _attributes(recorded.only_span())
    for key in ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions"):
        assert key not in attributes
    assert "my secret question" not in repr(attributes)


async def test_content_is_recorded_when_asked(kind: str, emulator: TGIEmulator, recorded: Recorded) -> None:
    twin = await _traced_twin(kind, emulator, recorded, capture_content=True)
    result = await twin.call("chat", "my question", system="be brief", max_new_tokens=3)
    await twin.close()

    attributes = _attributes(recorded.only_span())
    assert json.loads(attributes["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "my question"}]}
    ]
    assert json.loads(attributes["gen_ai.system_instructions"]) == [{"type": "text", "content": "be brief"}]
    (output,) = json.loads(attributes["gen_ai.output.messages"])
    assert output == {
        "role": "assistant",
        "parts": [{"type": "text", "content": result.text}],
        "finish_reason": result.finish_reason,
    }


async def test_the_environment_variable_turns_content_capture_on(
    kind: str, emulator: TGIEmulator, recorded: Recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    twin = await _traced_twin(kind, emulator, recorded)
    await twin.call("generate", "the prompt", max_new_tokens=3)
    await twin.close()

    attributes = _attributes(recorded.only_span())
    assert json.loads(attributes["gen_ai.input.messages"])[0]["parts"][0]["content"] == "the prompt"


async def test_an_explicit_setting_wins_over_the_environment_variable(
    kind: str, emulator: TGIEmulator, recorded: Recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    twin = await _traced_twin(kind, emulator, recorded, capture_content=False)
    await twin.call("generate", "the prompt", max_new_tokens=3)
    await twin.close()

    assert "gen_ai.input.messages" not in _attributes(recorded.only_span())


async def test_a_client_from_with_options_keeps_telemetry(kind: str, emulator: TGIEmulator, recorded: Recorded) -> None:
    twin = await _traced_twin(kind, emulator, recorded)
    derived = Twin.__new__(Twin)
    derived.kind, derived.client = kind, twin.client.with_options(timeout=30)
    await derived.call("chat", "Hi", max_new_tokens=2)
    await twin.close()

    assert recorded.only_span().name == "chat"


async def test_a_conversation_ask_is_a_chat_span_with_its_history_as_content(
    kind: str, emulator: TGIEmulator, recorded: Recorded
) -> None:
    telemetry = recorded.telemetry(capture_content=True)
    if kind == "sync":

        def two_asks() -> None:
            with ZephyrClient(emulator.url, telemetry=telemetry) as client:
                conversation = Conversation(client, system="be brief")
                conversation.ask("first", max_new_tokens=3)
                list(conversation.ask_stream("second", max_new_tokens=3))

        await asyncio.to_thread(two_asks)
    else:
        async with AsyncZephyrClient(emulator.url, telemetry=telemetry) as client:
            conversation = AsyncConversation(client, system="be brief")
            await conversation.ask("first", max_new_tokens=3)
            _ = [chunk async for chunk in conversation.ask_stream("second", max_new_tokens=3)]

    first, second = recorded.finished()
    assert first.name == second.name == "chat"
    assert _attributes(first)["gen_ai.request.max_tokens"] == 3
    assert _attributes(second)["gen_ai.request.stream"] is True
    roles = [m["role"] for m in json.loads(_attributes(second)["gen_ai.input.messages"])]
    assert roles == ["user", "assistant", "user"]
    assert json.loads(_attributes(second)["gen_ai.system_instructions"])[0]["content"] == "be brief"


async def test_calls_other_than_generations_record_no_span(
    kind: str, emulator: TGIEmulator, recorded: Recorded
) -> None:
    twin = await _traced_twin(kind, emulator, recorded)
    await twin.call("info")
    await twin.call("health")
    await twin.close()

    assert recorded.finished() == []


# --- X-Request-Id (always sent, with or without telemetry) ---------------------------------------------------


async def test_each_call_sends_one_request_id_the_same_on_its_retries(twin: Twin, emulator: TGIEmulator) -> None:
    emulator.set_faults(overload_next=1)
    first = await twin.call("chat", "Hi", max_new_tokens=2)
    second = await twin.call("chat", "Hi", max_new_tokens=2)

    sent = [request.headers.get("x-request-id") for request in generation_requests(emulator)]
    assert len(sent) == 3  # the first call's two attempts, then the second call
    assert sent[0] == sent[1] == first.request_id
    assert sent[2] == second.request_id
    assert first.request_id != second.request_id


async def test_a_chat_completion_keeps_its_request_id(twin: Twin, emulator: TGIEmulator) -> None:
    completion = await twin.call("chat_completion", "Hi", max_tokens=3)
    (request,) = generation_requests(emulator)
    assert completion.request_id == request.headers["x-request-id"]


async def test_a_stream_shows_its_request_id(kind: str, emulator: TGIEmulator) -> None:
    if kind == "sync":

        def read() -> str:
            with ZephyrClient(emulator.url) as client, client.chat_stream("Hi", max_new_tokens=3) as stream:
                list(stream)
                return stream.request_id

        request_id = await asyncio.to_thread(read)
    else:
        async with AsyncZephyrClient(emulator.url) as client:
            stream = client.chat_stream("Hi", max_new_tokens=3)
            async with stream:
                _ = [chunk async for chunk in stream]
            request_id = stream.request_id
    (request,) = generation_requests(emulator)
    assert request_id == request.headers["x-request-id"]


async def test_an_error_keeps_the_request_id_of_its_call(twin: Twin, emulator: TGIEmulator) -> None:
    emulator.set_faults(
        scripted_responses=[ScriptedResponse(status=422, body=_VALIDATION_BODY, content_type="application/json")]
    )
    with pytest.raises(InputValidationError) as info:
        await twin.call("chat", "Hi")
    (request,) = generation_requests(emulator)
    assert info.value.request_id == request.headers["x-request-id"]


async def test_the_servers_own_request_id_is_the_one_kept(twin: Twin, emulator: TGIEmulator) -> None:
    answer = json.dumps({"generated_text": "Hello", "details": {"finish_reason": "eos_token", "generated_tokens": 1}})
    emulator.set_faults(
        scripted_responses=[
            ScriptedResponse(
                status=200, body=answer, content_type="application/json", headers={"x-request-id": "gateway-42"}
            )
        ]
    )
    result = await twin.call("generate", "Hi", max_new_tokens=2)
    assert result.request_id == "gateway-42"


def test_a_client_without_telemetry_never_imports_opentelemetry() -> None:
    code = (
        "import sys\n"
        "from zephyr_tgi import ZephyrClient\n"
        "from zephyr_tgi.testing import TGIEmulator\n"
        "with TGIEmulator() as emulator, ZephyrClient(emulator.url) as client:\n"
        "    client.chat('Hi', max_new_tokens=2)\n"
        "    list(client.chat_stream('Hi', max_new_tokens=2))\n"
        "    client.chat_completion('Hi', max_tokens=2)\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert loaded.stdout.strip() == "[]"
