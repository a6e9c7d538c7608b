"""What telemetry costs the client: CPU per call and per streamed token with it off (the default) and on.

    python -m benchmarks.telemetry                     # off and on, alternated round by round
    python -m benchmarks.telemetry --rounds 3 --calls 100 --streams 4

"On" is the OpenTelemetry SDK with a real tracer and meter provider (spans to an in-memory exporter through a
SimpleSpanProcessor, metrics to an in-memory reader): the cost of the spans, events and metrics themselves.
"Off" builds no wrapper at all: the flow goes to the driver as it is. To compare "off" with an older checkout
(before telemetry existed), run only "off" with that checkout first on the path:

    PYTHONPATH=/path/to/old/checkout python benchmarks/telemetry.py --modes off

The server is one of benchmarks/servers.py's raw servers in another process, so its CPU is not counted; the
clock is this process's CPU time. Each number is the median over rounds; modes alternate so that a noisy
neighbour hurts both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a file: `benchmarks` (and zephyr_tgi) come from PYTHONPATH when it names a checkout, else from here.
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import zephyr_tgi
from benchmarks.harness import raw_server
from zephyr_tgi import ZephyrClient

_QUESTION = "Tell me about GPTQ quantisation."
_PACE = "0.0005"  # benchmarks/run.py's pace: the server writes a token every half millisecond
_STREAM_TOKENS = 256


def _client(url: str, mode: str) -> tuple[ZephyrClient, Any]:
    """A client with telemetry `mode`, and what to clear between rounds (the exporter) when on."""
    if mode == "off":
        return ZephyrClient(url), None
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from zephyr_tgi import Telemetry

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    telemetry = Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    return ZephyrClient(url, telemetry=telemetry), exporter


def _cpu_us(work: Any, units: int) -> float:
    cpu0 = time.process_time()
    work()
    return 1e6 * (time.process_time() - cpu0) / units


def run(modes: list[str], rounds: int, calls: int, streams: int) -> dict[str, dict[str, float]]:
    """Median CPU µs per non-streamed chat and per streamed token, for each mode."""
    samples: dict[str, dict[str, list[float]]] = {mode: {"chat": [], "stream": []} for mode in modes}
    with raw_server("tgi", "--events-per-write", "1", "--pace", _PACE) as url:
        clients = {mode: _client(url, mode) for mode in modes}
        try:
            for client, _ in clients.values():  # warm up: connections, the /info read, caches
                client.chat(_QUESTION, max_new_tokens=16)
                for _ in client.generate_stream(_QUESTION, max_new_tokens=_STREAM_TOKENS):
                    pass
            for _ in range(rounds):
                for mode, (client, exporter) in clients.items():

                    def chats(client: ZephyrClient = client) -> None:
                        for _ in range(calls):
                            client.chat(_QUESTION, max_new_tokens=16)

                    def streamed(client: ZephyrClient = client) -> None:
                        for _ in range(streams):
                            for _ in client.generate_stream(_QUESTION, max_new_tokens=_STREAM_TOKENS):
                                pass

                    samples[mode]["chat"].append(_cpu_us(chats, calls))
                    samples[mode]["stream"].append(_cpu_us(streamed, streams * _STREAM_TOKENS))
                    if exporter is not None:
                        exporter.clear()
        finally:
            for client, _ in clients.values():
                client.close()
    return {
        mode: {
            "chat_cpu_us_per_call": statistics.median(by_kind["chat"]),
            "stream_cpu_us_per_token": statistics.median(by_kind["stream"]),
            "chat_spread_us": max(by_kind["chat"]) - min(by_kind["chat"]),
            "stream_spread_us": max(by_kind["stream"]) - min(by_kind["stream"]),
        }
        for mode, by_kind in samples.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", choices=("off", "on"), default=["off", "on"])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per mode (the median is reported)")
    parser.add_argument("--calls", type=int, default=200, help="non-streamed chats per round")
    parser.add_argument("--streams", type=int, default=8, help=f"{_STREAM_TOKENS}-token streams per round")
    args = parser.parse_args(argv)
    if min(args.rounds, args.calls, args.streams) < 1:
        parser.error("--rounds, --calls and --streams must be at least 1")
    print(f"zephyr_tgi {zephyr_tgi.__version__} from {Path(zephyr_tgi.__file__).parent}")
    results = run(args.modes, args.rounds, args.calls, args.streams)
    for mode, numbers in results.items():
        print(
            f"telemetry {mode:>3}: {numbers['chat_cpu_us_per_call']:7.1f} µs CPU per chat "
            f"(spread {numbers['chat_spread_us']:.1f}), {numbers['stream_cpu_us_per_token']:5.2f} µs CPU per "
            f"streamed token (spread {numbers['stream_spread_us']:.2f})"
        )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
