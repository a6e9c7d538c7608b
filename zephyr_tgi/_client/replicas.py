"""Several replicas behind one client: their state and which one a request goes to. No I/O here.

A `ReplicaSet` holds one `Replica` per URL, each with its own `Endpoint` (limits and engine are read per
replica). Choosing a replica is a pure function of their state and the clock:

1. replicas that are not ejected come first; a replica is ejected after a refused connection, a timeout, a 503
   or 429 (or a `/health` that was not 200), for a period that doubles with each consecutive ejection (1 s up to
   30 s by default), and is simply tried again once the period is over: no background probe, no extra request;
2. a session (a `Conversation`'s id) goes to the replica its rendezvous hash ranks highest among those, so it
   moves only when that replica is ejected, and comes back when it is healthy again;
3. otherwise the least busy replica: the fewest requests in flight from this client plus the requests the
   engine last said were waiting for a batch slot (its load signal, below), ties broken by the fewest requests
   in flight from this client, then by the fewest requests sent so far, then by the order of the URLs:
   deterministic, and round-robin when idle.

The load signal: each replica keeps the waiting count its engine's `/metrics` last reported (`tgi_queue_size`,
`vllm:num_requests_waiting`, `sglang:num_queue_reqs`) and when it was read. A replica's reading is due again
`load_refresh` seconds (5 s by default) after the last read was *claimed*, whatever its outcome, so each replica
gets at most one `/metrics` per interval from a client. A reading older than `LOAD_MAX_AGE_FACTOR` intervals,
or a read that failed (an error status, a timeout, a body without the metric), counts as 0: the replica is
ranked by this client's in-flight count alone. Our own requests that wait in an engine's queue count twice (in
flight and waiting): a conservative bias that moves new calls away from a replica we are already filling.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from .._engines import ENGINES
from .._errors import APIConnectionError, APIError, ConfigurationError, OverloadedError, ServerUnavailableError
from .core import Endpoint
from .params import Limits

__all__ = [
    "DEFAULT_LOAD_REFRESH",
    "LOAD_READ_TIMEOUT",
    "EndpointStatus",
    "Lease",
    "Replica",
    "ReplicaSet",
    "check_load_signal",
    "fails_over_at_once",
    "waiting_in",
]

DEFAULT_EJECTION = 1.0
DEFAULT_MAX_EJECTION = 30.0
DEFAULT_LOAD_REFRESH = 5.0  # seconds between two reads of one replica's /metrics
LOAD_READ_TIMEOUT = 0.25  # the most a /metrics read may take (and so delay the call that makes it)
LOAD_MAX_AGE_FACTOR = 3.0  # a reading older than this many intervals is no longer believed
# Every engine's name for its queue: the prefixes differ, so one body never matches two engines.
_WAITING_NAMES = frozenset(engine.summary_names["requests_waiting"] for engine in ENGINES.values())


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    """What a client knows of one of its replicas, at the moment it was asked (`client.endpoints`).

    Attributes:
        url: The replica's URL, a password in it shown as `***`.
        healthy: False while the replica is ejected (it refused connections, timed out, answered 503 or 429, or
            its `/health` was not 200); it is tried again when `ejected_for` reaches 0.
        ejected_for: Seconds until an ejected replica is tried again (0.0 when healthy).
        in_flight: Requests of this client (and those `with_options()` made from it) running on it now.
        requests: Requests sent to it so far.
        failures: Consecutive failed requests (0 after a success).
        last_error: The last failure's message, until a success.
        engine: "tgi", "vllm" or "sglang" once known, else None.
        limits: Its limits once read from its `/info`, else None.
        engine_waiting: The requests its engine's `/metrics` last said were waiting for a batch slot (all clients'),
            or None when never read, the last read failed, or the load signal is off.
        engine_waiting_age: Seconds since `engine_waiting` was read (None with it).
    """

    url: str
    healthy: bool
    ejected_for: float
    in_flight: int
    requests: int
    failures: int
    last_error: str | None
    engine: str | None
    limits: Limits | None
    engine_waiting: float | None = None
    engine_waiting_age: float | None = None


class Replica:
    """One URL and what is known of it; mutated only by its `ReplicaSet`, under its lock."""

    __slots__ = (
        "ejected_until",
        "ejections",
        "endpoint",
        "failures",
        "in_flight",
        "index",
        "last_error",
        "load_due",
        "requests",
        "shown_url",
        "url",
        "waiting",
        "waiting_at",
    )

    def __init__(self, index: int, url: str, shown_url: str, endpoint: Endpoint) -> None:
        self.index = index
        self.url = url
        self.shown_url = shown_url
        self.endpoint = endpoint
        self.in_flight = 0
        self.requests = 0
        self.failures = 0
        self.ejections = 0  # consecutive: the next ejection lasts longer
        self.ejected_until = 0.0
        self.last_error: str | None = None
        self.waiting: float | None = None  # the engine's last reported queue, None when unknown
        self.waiting_at = 0.0  # when `waiting` was read (the set's clock)
        self.load_due = 0.0  # when the next /metrics read may be claimed

    def __repr__(self) -> str:
        return f"Replica({self.shown_url!r}, in_flight={self.in_flight}, failures={self.failures})"


class Lease:
    """One request's hold on a replica: counted in flight until released, once."""

    __slots__ = ("released", "replica")

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.released = False


def fails_over_at_once(exc: APIError) -> bool:
    """Whether a failure says the replica cannot serve now (so another one is tried at once, and this one is
    ejected): refused or failed connections, timeouts, 502-504 and 429. Other failures (an incomplete
    generation) are retried with the policy's backoff; the caller's errors (400, 413, 422) are never retried."""
    return isinstance(exc, (APIConnectionError, ServerUnavailableError, OverloadedError))


def check_load_signal(value: object) -> float | None:
    """The `load_signal` setting as seconds between reads of each replica's `/metrics` (None: off).

    Raises:
        ConfigurationError: not a bool or a positive finite number of seconds.
    """
    if value is True:
        return DEFAULT_LOAD_REFRESH
    if value is False:
        return None
    if isinstance(value, (int, float)) and math.isfinite(value) and value > 0:
        return float(value)
    raise ConfigurationError(f"load_signal must be True, False or a positive number of seconds, got {value!r}")


def waiting_in(metrics: Mapping[str, float]) -> float | None:
    """The requests waiting for a batch slot in parsed `/metrics` (summed over label sets), whatever the engine;
    None when the body has no such metric."""
    found: float | None = None
    for key, value in metrics.items():
        if key.split("{", 1)[0] in _WAITING_NAMES and math.isfinite(value) and value >= 0:
            found = (found or 0.0) + value
    return found


def _rank(session: str, replica: Replica) -> bytes:
    # Rendezvous (highest random weight) hashing: each (session, replica) pair gets a stable score, so removing
    # a replica moves only the sessions it held. blake2b, not hash(): the same in every process.
    return hashlib.blake2b(f"{session}\x00{replica.url}".encode(), digest_size=8).digest()


class ReplicaSet:
    """The replicas of one client and its derived clients, and the choice of one per attempt."""

    def __init__(
        self,
        replicas: Sequence[Replica],
        *,
        clock: Callable[[], float] = time.monotonic,
        ejection: float = DEFAULT_EJECTION,
        max_ejection: float = DEFAULT_MAX_EJECTION,
        load_refresh: float | None = DEFAULT_LOAD_REFRESH,
    ) -> None:
        if not replicas:
            raise ValueError("a ReplicaSet needs at least one replica")
        self.replicas = tuple(replicas)
        self._clock = clock
        self._ejection = ejection
        self._max_ejection = max_ejection
        self.load_refresh = load_refresh  # None: the load signal is off, no /metrics is ever read
        self._lock = threading.Lock()  # threads of the sync client (batch_chat) choose and release concurrently

    def choose(self, session: str | None = None, avoid: Collection[Replica] = ()) -> Replica:
        """The replica for the next attempt; `avoid` holds those that already failed this call.

        When every replica is ejected or avoided, the one whose ejection ends first is chosen (the retry plan
        then waits its backoff before trying it).
        """
        now = self._clock()
        with self._lock:
            candidates = [r for r in self.replicas if r.ejected_until <= now and r not in avoid]
            if not candidates:
                candidates = [r for r in self.replicas if r.ejected_until <= now]
            if not candidates:
                return min(self.replicas, key=lambda r: (r.ejected_until, r.index))
            if session is not None:
                return max(candidates, key=lambda r: _rank(session, r))
            return min(
                candidates, key=lambda r: (r.in_flight + self._waiting(r, now), r.in_flight, r.requests, r.index)
            )

    def claim_load_reads(self, limit: int | None = None) -> list[Replica]:
        """The replicas whose `/metrics` should be read now (at most `limit`, the oldest readings first), each
        claimed for one interval: a concurrent caller does not read it again, and neither does a failed read.

        Ejected replicas are skipped (their state says more than their queue). Empty when the signal is off.
        """
        if self.load_refresh is None:
            return []
        now = self._clock()
        with self._lock:
            due = [r for r in self.replicas if r.load_due <= now and r.ejected_until <= now]
            due.sort(key=lambda r: (r.waiting_at, r.index))
            claimed = due if limit is None else due[:limit]
            for replica in claimed:
                replica.load_due = now + self.load_refresh
            return claimed

    def record_load(self, replica: Replica, waiting: float | None) -> None:
        """The outcome of a `/metrics` read on `replica`: its waiting count, or None (the read failed)."""
        with self._lock:
            replica.waiting = waiting
            replica.waiting_at = self._clock()

    def _waiting(self, replica: Replica, now: float) -> float:
        if replica.waiting is None or self.load_refresh is None:
            return 0.0
        if now - replica.waiting_at > self.load_refresh * LOAD_MAX_AGE_FACTOR:
            return 0.0  # too old to say anything about now
        return replica.waiting

    def acquire(self, replica: Replica) -> Lease:
        """Count a request in flight on `replica`."""
        with self._lock:
            replica.in_flight += 1
            replica.requests += 1
        return Lease(replica)

    def release(self, lease: Lease, error: APIError | None = None) -> None:
        """The request of `lease` is over: a success, or `error` (which may eject the replica). Idempotent."""
        with self._lock:
            if lease.released:
                return
            lease.released = True
            replica = lease.replica
            replica.in_flight -= 1
            if error is None:
                replica.failures = 0
                replica.ejections = 0
                replica.last_error = None
                return
            replica.failures += 1
            replica.last_error = f"{type(error).__name__}: {error}"
            if fails_over_at_once(error):
                self._eject(replica, error.retry_after)

    def abandon(self, lease: Lease) -> None:
        """The request of `lease` ended without an outcome about the replica (the caller stopped, or our own
        check failed): it is no longer in flight, and nothing else changes."""
        with self._lock:
            if not lease.released:
                lease.released = True
                lease.replica.in_flight -= 1

    def mark_health(self, replica: Replica, healthy: bool, why: str | None = None) -> None:
        """The outcome of a `GET /health` on `replica`: 200 brings it back at once, anything else ejects it."""
        with self._lock:
            if healthy:
                replica.ejected_until = 0.0
                replica.ejections = 0
                replica.failures = 0
                replica.last_error = None
            else:
                replica.failures += 1
                replica.last_error = why or "GET /health was not 200"
                self._eject(replica, None)

    def others_available(self, replica: Replica, avoid: Collection[Replica] = ()) -> bool:
        """Whether a replica other than `replica` (and those in `avoid`) is not ejected now."""
        now = self._clock()
        with self._lock:
            return any(r is not replica and r not in avoid and r.ejected_until <= now for r in self.replicas)

    def statuses(self) -> tuple[EndpointStatus, ...]:
        """A snapshot of every replica's state, in the order of the URLs."""
        now = self._clock()
        with self._lock:
            return tuple(
                EndpointStatus(
                    url=r.shown_url,
                    healthy=r.ejected_until <= now,
                    ejected_for=max(0.0, r.ejected_until - now),
                    in_flight=r.in_flight,
                    requests=r.requests,
                    failures=r.failures,
                    last_error=r.last_error,
                    engine=r.endpoint.engine.name if r.endpoint.engine is not None else None,
                    limits=r.endpoint.limits,
                    engine_waiting=r.waiting,
                    engine_waiting_age=None if r.waiting is None else max(0.0, now - r.waiting_at),
                )
                for r in self.replicas
            )

    def _eject(self, replica: Replica, retry_after: float | None) -> None:
        period = min(self._ejection * 2.0 ** min(replica.ejections, 16), self._max_ejection)
        if retry_after is not None:  # the server said when to come back: believed, within the same cap
            period = min(max(period, retry_after), self._max_ejection)
        replica.ejections += 1
        replica.ejected_until = max(replica.ejected_until, self._clock() + period)
