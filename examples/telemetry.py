"""OpenTelemetry: each call as a GenAI span with its metrics, inside your own trace, with its X-Request-Id.

Needs `pip install 'zephyr-tgi[otel]' opentelemetry-sdk`. Spans and metrics go to the SDK's in-memory exporter
and reader here so that the script can print them; an application sends them to its collector instead (an OTLP
exporter). Uses the TGI server at ZEPHYR_TGI_URL when it is set; otherwise starts zephyr_tgi's TGI emulator.
"""

from __future__ import annotations

from _server import client_for, server_url
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from zephyr_tgi import Telemetry

SHOWN = (
    "gen_ai.provider.name",
    "gen_ai.request.max_tokens",
    "gen_ai.response.finish_reasons",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.response.time_to_first_chunk",
    "server.address",
)


def main() -> None:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    # capture_content=True also records the prompts and answers on the spans: leave it off where they are private.
    telemetry = Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider, capture_content=False)

    with server_url() as url, client_for(url, telemetry=telemetry) as client:
        tracer = tracer_provider.get_tracer("example")
        with tracer.start_as_current_span("handle user request"):  # the client's spans become its children
            result = client.chat("What is GPTQ?", max_new_tokens=32)
            print(f"chat: {result.text[:60]!r}... (X-Request-Id {result.request_id})")
            with client.chat_stream("Name three colours.", max_new_tokens=16) as stream:
                text = "".join(chunk.text for chunk in stream)
            print(f"chat_stream: {text!r} (X-Request-Id {stream.request_id})")
            completion = client.chat_completion("Say hello.", max_tokens=8)
            print(f"chat_completion: {completion.text!r} (X-Request-Id {completion.request_id})")

    print("\n== spans")
    for span in spans.get_finished_spans():
        attributes = dict(span.attributes or {})
        shown = ", ".join(f"{key}={attributes[key]!r}" for key in SHOWN if key in attributes)
        print(f"{span.name} [{span.kind.name}] {shown}")

    print("\n== metrics")
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points = [p for p in metric.data.data_points if isinstance(p, HistogramDataPoint)]
                count = sum(p.count for p in points)
                total = sum(p.sum for p in points)
                print(f"{metric.name} ({metric.unit}): {count} values, sum {total:.4g}")
    tracer_provider.shutdown()
    meter_provider.shutdown()


if __name__ == "__main__":
    main()
