"""The engine's load signal in the replica choice, without I/O: the ranking, the refresh claims, their ages, the
setting, and the flow's one bounded `/metrics` read per call."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from tests.unit.test_replicas import URLS, Clock
from zephyr_tgi import ConfigurationError, RetryPolicy, Timeout, ZephyrClient
from zephyr_tgi._client.core import Endpoint, make_config
from zephyr_tgi._client.flows import Context, Send, read_load, retrying
from zephyr_tgi._client.replicas import (
    DEFAULT_LOAD_REFRESH,
    LOAD_MAX_AGE_FACTOR,
    LOAD_READ_TIMEOUT,
    Replica,
    ReplicaSet,
    check_load_signal,
    waiting_in,
)
from zephyr_tgi._client.transport import WireResponse
from zephyr_tgi._errors import APITimeoutError
from zephyr_tgi._timeout import call_times


def _set(clock: Clock, refresh: float | None = 5.0) -> ReplicaSet:
    replicas = [Replica(i, url, url, Endpoint()) for i, url in enumerate(URLS)]
    return ReplicaSet(replicas, clock=clock, load_refresh=refresh)


# --- ranking --------------------------------------------------------------------------------------------


def test_a_replica_whose_engine_reports_a_queue_is_passed_over() -> None:
    clock = Clock()
    replicas = _set(clock)
    a, b, c = replicas.replicas
    replicas.record_load(a, 4.0)
    replicas.record_load(b, 0.0)
    replicas.record_load(c, 1.0)
    assert replicas.choose() is b


def test_in_flight_and_waiting_add_up() -> None:
    clock = Clock()
    replicas = _set(clock)
    a, b, c = replicas.replicas
    replicas.record_load(a, 2.0)  # rank 2
    for _ in range(3):
        replicas.acquire(b)  # rank 3
    replicas.record_load(c, 1.0)
    replicas.acquire(c)  # rank 2, and more of ours in flight than a: a wins the tie
    assert replicas.choose() is a
    replicas.record_load(a, 3.0)
    assert replicas.choose() is c


def test_an_unknown_signal_ranks_by_in_flight_alone() -> None:
    clock = Clock()
    replicas = _set(clock)
    a, b, _ = replicas.replicas
    replicas.record_load(a, None)  # the read failed
    replicas.record_load(b, 1.0)
    assert replicas.choose() is a
    replicas.acquire(a)
    replicas.acquire(a)
    assert replicas.choose().url == URLS[2]  # never read: 0


def test_an_old_reading_is_no_longer_believed() -> None:
    clock = Clock()
    replicas = _set(clock, refresh=2.0)
    a, b, _ = replicas.replicas
    replicas.record_load(a, 9.0)
    replicas.record_load(b, 9.0)
    assert replicas.choose().url == URLS[2]
    clock.now += 2.0 * LOAD_MAX_AGE_FACTOR + 0.1
    assert replicas.choose() is a  # every reading too old: round-robin order again


def test_the_signal_off_ignores_readings() -> None:
    replicas = _set(Clock(), refresh=None)
    a, _, _ = replicas.replicas
    replicas.record_load(a, 9.0)
    assert replicas.choose() is a
    assert replicas.claim_load_reads() == []


def test_a_session_stays_on_its_replica_whatever_its_queue() -> None:
    clock = Clock()
    replicas = _set(clock)
    home = replicas.choose("conversation-1")
    replicas.record_load(home, 50.0)
    assert replicas.choose("conversation-1") is home


# --- refresh claims -------------------------------------------------------------------------------------


def test_each_replica_is_claimed_once_per_interval_oldest_first() -> None:
    clock = Clock()
    replicas = _set(clock, refresh=5.0)
    a, b, c = replicas.replicas
    assert replicas.claim_load_reads(limit=1) == [a]
    assert replicas.claim_load_reads(limit=1) == [b]  # a is claimed: a concurrent call reads another
    replicas.record_load(a, 1.0)
    replicas.record_load(b, 1.0)
    assert replicas.claim_load_reads() == [c]
    assert replicas.claim_load_reads() == []
    clock.now += 4.9
    assert replicas.claim_load_reads() == []
    clock.now += 0.2
    assert replicas.claim_load_reads() == [c, a, b]  # c was never recorded: the oldest reading


def test_an_ejected_replica_is_not_read() -> None:
    clock = Clock()
    replicas = _set(clock)
    a, b, c = replicas.replicas
    replicas.mark_health(a, False)
    assert replicas.claim_load_reads() == [b, c]


def test_endpoints_show_the_waiting_count_and_its_age() -> None:
    clock = Clock()
    replicas = _set(clock)
    a, _b, _ = replicas.replicas
    replicas.record_load(a, 3.0)
    clock.now += 1.5
    first, second, _ = replicas.statuses()
    assert (first.engine_waiting, first.engine_waiting_age) == (3.0, 1.5)
    assert (second.engine_waiting, second.engine_waiting_age) == (None, None)


# --- the metric and the setting -------------------------------------------------------------------------


def test_every_engines_queue_metric_is_read_and_summed_over_labels() -> None:
    assert waiting_in({"tgi_queue_size": 3.0, "tgi_batch_current_size": 8.0}) == 3.0
    assert waiting_in({'vllm:num_requests_waiting{model_name="a"}': 2.0, "vllm:num_requests_running": 5.0}) == 2.0
    assert waiting_in({'sglang:num_queue_reqs{tp="0"}': 1.0, 'sglang:num_queue_reqs{tp="1"}': 4.0}) == 5.0
    assert waiting_in({"tgi_request_count": 3.0}) is None
    assert waiting_in({"tgi_queue_size": float("nan")}) is None
    assert waiting_in({"tgi_queue_size": -1.0}) is None


@pytest.mark.parametrize(("value", "seconds"), [(True, DEFAULT_LOAD_REFRESH), (False, None), (2, 2.0), (0.5, 0.5)])
def test_load_signal_setting(value: object, seconds: float | None) -> None:
    assert check_load_signal(value) == seconds


@pytest.mark.parametrize("value", [0, -1.0, float("inf"), float("nan"), "yes", None])
def test_a_bad_load_signal_is_refused_before_anything_is_sent(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="load_signal must be"):
        ZephyrClient(["http://127.0.0.1:9", "http://127.0.0.1:10"], load_signal=value)
    with pytest.raises(ConfigurationError, match="load_signal must be"):
        ZephyrClient("http://127.0.0.1:9", load_signal=value)  # checked with one URL too


def test_one_url_has_no_replica_set_and_so_no_reads() -> None:
    with ZephyrClient("http://127.0.0.1:9", load_signal=1.0) as client:
        assert client._ctx.replicas is None


# --- the flow: one bounded read per call, which never fails it ------------------------------------------


def _context(refresh: float | None = 5.0) -> Context:
    config = make_config(list(URLS), retry=RetryPolicy(max_attempts=1))
    replicas = _set(Clock(), refresh)
    return Context(config, replicas.replicas[0].endpoint, random.Random(0), replicas=replicas)


def _attempt(ctx: Context) -> Any:
    return ctx.url
    yield  # a generator that sends nothing: the attempt itself is not what these tests look at


def test_a_call_reads_one_stale_signal_before_choosing() -> None:
    ctx = _context()
    assert ctx.replicas is not None
    flow = retrying(ctx, "t", call_times(Timeout(), "admin"), _attempt)
    effect = next(flow)
    assert isinstance(effect, Send)
    assert effect.request.url == URLS[0] + "/metrics"
    assert effect.request.timeout.read == LOAD_READ_TIMEOUT
    assert effect.until is not None
    assert effect.until - time.monotonic() <= LOAD_READ_TIMEOUT
    with pytest.raises(StopIteration) as stop:
        flow.send(WireResponse(200, {}, b"tgi_queue_size 7\n"))
    assert stop.value.value == URLS[1]  # the one it read has 7 waiting
    assert ctx.replicas.replicas[0].waiting == 7.0


def test_a_failed_read_leaves_the_signal_unknown_and_the_call_goes_on() -> None:
    ctx = _context()
    assert ctx.replicas is not None
    flow = retrying(ctx, "t", call_times(Timeout(), "admin"), _attempt)
    next(flow)
    with pytest.raises(StopIteration) as stop:
        flow.throw(APITimeoutError("GET /metrics timed out"))
    assert stop.value.value == URLS[0]
    assert ctx.replicas.replicas[0].waiting is None


@pytest.mark.parametrize("response", [WireResponse(404, {}, b"Not Found"), WireResponse(200, {}, b"\xff garbage {")])
def test_an_error_status_or_garbage_is_no_reading(response: WireResponse) -> None:
    ctx = _context()
    assert ctx.replicas is not None
    replica = ctx.replicas.replicas[0]
    ctx.replicas.record_load(replica, 5.0)
    flow = read_load(ctx, ctx.replicas, replica, None)
    next(flow)
    with pytest.raises(StopIteration):
        flow.send(response)
    assert replica.waiting is None


def test_a_read_takes_at_most_a_quarter_of_the_time_left() -> None:
    ctx = _context()
    assert ctx.replicas is not None
    replica = ctx.replicas.replicas[0]
    deadline = time.monotonic() + 0.2
    effect = next(read_load(ctx, ctx.replicas, replica, deadline))
    assert isinstance(effect, Send)
    assert effect.until is not None
    assert effect.until <= deadline - 0.14
    with pytest.raises(StopIteration):
        next(read_load(ctx, ctx.replicas, replica, time.monotonic()))  # no time left: nothing sent


def test_no_read_when_the_signal_is_off_or_for_a_session() -> None:
    flow = retrying(_context(None), "t", call_times(Timeout(), "admin"), _attempt)
    with pytest.raises(StopIteration):
        next(flow)
    ctx = _context().for_session("conversation-1")
    with pytest.raises(StopIteration):
        next(retrying(ctx, "t", call_times(Timeout(), "admin"), _attempt))
