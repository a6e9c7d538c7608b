"""Request accounting: the permit semaphore, EmulatorStats snapshots and Prometheus /metrics."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["EmulatorStats", "RecordedRequest", "Recorder"]

_KEPT_REQUESTS = 1000


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the emulator received it (header names lower-cased; json None if not JSON).

    Args:
        method: The HTTP method.
        path: The request's path, query included.
        headers: Its headers.
        json: Its JSON body, parsed.
    """

    method: str
    path: str
    headers: dict[str, str]
    json: Any


@dataclass(frozen=True)
class EmulatorStats:
    """A snapshot of what the emulator has seen since start or the last reset().

    Args:
        requests_total: Requests answered.
        requests_by_route: Requests per route.
        in_flight: Generation requests under way now.
        max_in_flight: The most generation requests under way at once.
        overloaded_total: Requests answered 429.
        connections_total: TCP connections accepted (shows whether a client reuses its connections).
        requests: Every request received, in order.
    """

    requests_total: int = 0
    requests_by_route: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0
    overloaded_total: int = 0
    connections_total: int = 0  # TCP connections accepted: shows whether a client reuses its connections
    requests: list[RecordedRequest] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what GET /__emulator__/stats returns)."""
        return asdict(self)


class _Histogram:
    """A Prometheus histogram with fixed buckets."""

    def __init__(self, buckets: list[float]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1

    def render(self, name: str, lines: list[str]) -> None:
        lines.append(f"# TYPE {name} histogram")
        for bound, count in zip(self.buckets, self.counts, strict=True):
            lines.append(f'{name}_bucket{{le="{bound:g}"}} {count}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum {self.total:g}")
        lines.append(f"{name}_count {self.count}")


class Recorder:
    """Thread-safe counters shared by the server loop and the caller's thread."""

    def __init__(self, max_concurrent_requests: int, max_input_tokens: int, max_total_tokens: int) -> None:
        self._lock = threading.Lock()
        self._max_concurrent = max_concurrent_requests
        self._max_input_tokens = max_input_tokens
        self._max_total_tokens = max_total_tokens
        self._in_flight = 0
        self.reset()

    def reset(self) -> None:
        """Forget everything except the permits held by requests still running."""
        with self._lock:
            self._requests_total = 0
            self._by_route: dict[str, int] = {}
            self._recorded: deque[RecordedRequest] = deque(maxlen=_KEPT_REQUESTS)
            self._overloaded = 0
            self._connections = 0
            self._max_in_flight = self._in_flight
            self._tgi_count = 0
            self._tgi_success = 0
            self._tgi_failure: dict[str, int] = {}
            # Bucket layouts follow TGI's router: 100 linear buckets up to the token limits.
            self._input_length = _Histogram([self._max_input_tokens / 100 * (i + 1) for i in range(100)])
            self._generated = _Histogram([self._max_total_tokens / 100 * (i + 1) for i in range(100)])
            self._duration = _Histogram([0.0001 * 1.5 ** (i + 1) for i in range(35)])

    def connected(self) -> None:
        """Count one accepted TCP connection."""
        with self._lock:
            self._connections += 1

    def record(self, request: RecordedRequest, route: str) -> None:
        """Count and keep one incoming request."""
        with self._lock:
            self._requests_total += 1
            self._by_route[route] = self._by_route.get(route, 0) + 1
            self._recorded.append(request)

    def try_acquire(self) -> bool:
        """Take a generation permit, or report overload (TGI's `try_acquire_owned`)."""
        with self._lock:
            if self._in_flight >= self._max_concurrent:
                return False
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            return True

    def release(self) -> None:
        """Give a permit back."""
        with self._lock:
            self._in_flight = max(self._in_flight - 1, 0)

    def overloaded(self) -> None:
        """Count an overloaded answer."""
        with self._lock:
            self._overloaded += 1
            self._tgi_failure["overloaded"] = self._tgi_failure.get("overloaded", 0) + 1

    def tgi_request(self) -> None:
        """tgi_request_count += 1."""
        with self._lock:
            self._tgi_count += 1

    def tgi_failure(self, error_type: str) -> None:
        """tgi_request_failure{err=...} += 1."""
        with self._lock:
            self._tgi_failure[error_type] = self._tgi_failure.get(error_type, 0) + 1

    def tgi_success(self, input_length: int, generated_tokens: int, duration: float) -> None:
        """A finished generation."""
        with self._lock:
            self._tgi_success += 1
            self._input_length.observe(input_length)
            self._generated.observe(generated_tokens)
            self._duration.observe(duration)

    def snapshot(self) -> EmulatorStats:
        """An immutable copy of the counters."""
        with self._lock:
            return EmulatorStats(
                requests_total=self._requests_total,
                requests_by_route=dict(self._by_route),
                in_flight=self._in_flight,
                max_in_flight=self._max_in_flight,
                overloaded_total=self._overloaded,
                connections_total=self._connections,
                requests=list(self._recorded),
            )

    def totals(self) -> dict[str, int]:
        """The counters every engine's metrics report under its own names."""
        with self._lock:
            return {
                "in_flight": self._in_flight,
                "success": self._tgi_success,
                "prompt_tokens": int(self._input_length.total),
                "generated_tokens": int(self._generated.total),
            }

    def prometheus(self, queued: int = 0) -> str:
        """The /metrics text exposition with a few of TGI's metric names; `queued` is the requests waiting for
        a batch slot (`tgi_queue_size`)."""
        with self._lock:
            batch = max(self._in_flight - queued, 0)  # a queued request holds its permit but is not in the batch
            lines = [
                "# TYPE tgi_request_count counter",
                f"tgi_request_count {self._tgi_count}",
                "# TYPE tgi_request_success counter",
                f"tgi_request_success {self._tgi_success}",
                "# TYPE tgi_request_failure counter",
            ]
            lines.extend(f'tgi_request_failure{{err="{err}"}} {n}' for err, n in sorted(self._tgi_failure.items()))
            lines += [
                "# TYPE tgi_queue_size gauge",
                f"tgi_queue_size {queued}",
                "# TYPE tgi_batch_current_size gauge",
                f"tgi_batch_current_size {batch}",
                "# TYPE tgi_batch_current_max_tokens gauge",
                f"tgi_batch_current_max_tokens {batch * self._max_total_tokens}",
            ]
            self._input_length.render("tgi_request_input_length", lines)
            self._generated.render("tgi_request_generated_tokens", lines)
            self._duration.render("tgi_request_duration", lines)
        return "\n".join(lines) + "\n"
