"""The only module that imports OpenTelemetry: a call's flow wrapped so that it records one span and the metrics.

The wrapper sits between a shell's driver and the flow, as `tap` does: it sees each `Send` (adds `traceparent`,
reads the server's address), each `Sleep` of the retry plan (a span event with the attempt, the wait and the
cause), each stream item (time to first chunk, time per chunk), the result (usage, finish reasons) and the error
the call ends with (`error.type`). A client without telemetry never builds it, so its calls pay nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from .. import __version__
from .._client.flows import EFFECTS, Exclusive, Flow, Send, Sleep, items_of, relay
from .._client.transport import WireRequest
from .._errors import ZephyrTGIError
from ._describe import Attributes, Operation, StreamTally, result_attributes, server_attributes
from .settings import Telemetry

__all__ = ["DURATION_BUCKETS", "TOKEN_BUCKETS", "Instrumentation"]

_T = TypeVar("_T")
Provider = Callable[[], str | None]  # the serving engine's name, once known
_SCOPE = "zephyr_tgi"
# The bucket boundaries the GenAI metric conventions recommend (gen-ai-metrics.md).
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
# Attributes every metric point carries when the span has them (the conventions' metric attributes).
_METRIC_KEYS = (
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "server.address",
    "server.port",
)


class Instrumentation:
    """A client's tracer, meter and instruments, and the wrapper that records each call with them."""

    def __init__(self, settings: Telemetry, *, capture_content: bool) -> None:
        self.capture_content = capture_content
        self.model = settings.model
        self._tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider=settings.tracer_provider)
        meter = metrics.get_meter(_SCOPE, __version__, meter_provider=settings.meter_provider)
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=list(TOKEN_BUCKETS),
        )
        self._first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time to receive the first chunk of a streamed response.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self._per_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_per_output_chunk",
            unit="s",
            description="Time between consecutive chunks of a streamed response.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )

    def observe(self, flow: Flow[_T], operation: Operation, provider: Provider) -> Flow[_T]:
        """`flow`, recorded as one span of `operation`; `provider()` names the engine (known once identified).

        The span's parent is the caller's current span now, when the call is made: a `batch_chat` item runs on a
        worker thread, and a stream may be read elsewhere, where the caller's context is not current.
        """
        return self._observed(flow, operation, provider, otel_context.get_current())

    def _observed(
        self, flow: Flow[_T], operation: Operation, provider: Provider, parent: otel_context.Context
    ) -> Flow[_T]:
        attributes = dict(operation.attributes)
        known = provider()
        if known is not None:
            attributes["gen_ai.provider.name"] = known
        if self.capture_content:
            attributes.update(operation.content)
        span = self._tracer.start_span(operation.span_name, context=parent, kind=SpanKind.CLIENT, attributes=attributes)
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        tally = StreamTally(capture=self.capture_content) if operation.stream else None
        chunk_attributes: Attributes = {}  # the metric attributes of the chunk timings, fixed at the first chunk
        started = last = time.monotonic()
        outcome: Any = None
        failure: ZephyrTGIError | None = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    effect = flow.send(outcome) if failure is None else flow.throw(failure)
                except StopIteration as stop:
                    if tally is None:
                        attributes.update(result_attributes(stop.value, capture=self.capture_content))
                    result: _T = stop.value
                    return result
                failure = None
                kind = effect.__class__
                if kind is Send:
                    # Every request's: when a call moves to another replica, the span names the one that answered.
                    attributes.update(server_attributes(effect.request.url))
                    effect = Send(_with_headers(effect.request, carrier), effect.until, effect.stream)
                elif kind is Exclusive:
                    effect = Exclusive(_injecting(effect.flow, carrier), effect.endpoint)
                elif kind is Sleep and effect.cause is not None:
                    span.add_event(
                        "zephyr_tgi.retry",
                        {
                            "zephyr_tgi.retry.attempt": effect.attempt,
                            "zephyr_tgi.retry.wait": effect.seconds,
                            "error.type": type(effect.cause).__name__,
                            "exception.message": str(effect.cause),
                        },
                    )
                elif kind not in EFFECTS and tally is not None:  # items of the stream for the caller
                    now = time.monotonic()
                    for item in items_of(effect):  # the chunks of one packet came at the same time
                        if tally.chunks == 0:
                            chunk_attributes = _metric_attributes(attributes)
                            attributes["gen_ai.response.time_to_first_chunk"] = now - started
                            self._first_chunk.record(now - started, chunk_attributes)
                        else:
                            self._per_chunk.record(now - last, chunk_attributes)
                        last = now
                        tally.add(item)
                try:
                    outcome = yield effect
                except ZephyrTGIError as exc:
                    failure = exc
        except GeneratorExit:
            raise  # the caller closed a stream early: the span ends below, as the stream did, without an error
        except BaseException as exc:
            error = exc
            raise
        finally:
            flow.close()
            self._finish(span, attributes, tally, provider, started, error)

    def _finish(
        self,
        span: Span,
        attributes: Attributes,
        tally: StreamTally | None,
        provider: Provider,
        started: float,
        error: BaseException | None,
    ) -> None:
        duration = time.monotonic() - started
        if tally is not None:
            attributes.update(tally.finish())
        if "gen_ai.provider.name" not in attributes:
            known = provider()
            if known is not None:
                attributes["gen_ai.provider.name"] = known
        if error is not None:
            attributes["error.type"] = type(error).__name__
            span.set_status(Status(StatusCode.ERROR, str(error)))
        span.set_attributes(attributes)
        span.end()
        metric_attributes = _metric_attributes(attributes)
        if error is not None:
            metric_attributes["error.type"] = attributes["error.type"]
        self._duration.record(duration, metric_attributes)
        if error is None:
            for key, token_type in (("gen_ai.usage.input_tokens", "input"), ("gen_ai.usage.output_tokens", "output")):
                count = attributes.get(key)
                if count is not None:
                    self._tokens.record(count, {**metric_attributes, "gen_ai.token.type": token_type})


def _metric_attributes(attributes: Attributes) -> Attributes:
    return {key: attributes[key] for key in _METRIC_KEYS if key in attributes}


def _with_headers(request: WireRequest, extra: dict[str, str]) -> WireRequest:
    if not extra:  # no propagator is configured, or the span is not recorded and nothing is propagated
        return request
    return request.with_headers(extra)


def _injecting(flow: Flow[_T], carrier: dict[str, str]) -> Flow[_T]:
    """A sub-flow (the engine's identification and limits, run under the endpoint's lock) whose requests also
    carry the call's trace context."""

    def inject(effect: Any) -> Any:
        if effect.__class__ is Send:
            return Send(_with_headers(effect.request, carrier), effect.until, effect.stream)
        return effect

    return relay(flow, inject)
