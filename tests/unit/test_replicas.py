"""The pure replica logic: which replica an attempt goes to, ejection and its backoff, sessions, settings."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Callable

import pytest

from zephyr_tgi import (
    APIConnectionError,
    APITimeoutError,
    ConfigurationError,
    IncompleteGenerationError,
    InputValidationError,
    OverloadedError,
    RetryPolicy,
    ServerUnavailableError,
    Timeout,
    ZephyrClient,
)
from zephyr_tgi._client.core import Endpoint, make_config, settings_from_env
from zephyr_tgi._client.flows import Context, Flow, Sleep, retrying
from zephyr_tgi._client.replicas import Replica, ReplicaSet, fails_over_at_once
from zephyr_tgi._client.surface import replica_set
from zephyr_tgi._timeout import call_times

URLS = ("http://a:1", "http://b:2", "http://c:3")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _set(clock: Clock | None = None, urls: tuple[str, ...] = URLS) -> ReplicaSet:
    replicas = [Replica(i, url, url, Endpoint()) for i, url in enumerate(urls)]
    # The load signal off: these tests are about ejection, sessions and the retry plan (tests/unit/test_load_signal.py).
    return ReplicaSet(replicas, clock=clock or Clock(), ejection=1.0, max_ejection=8.0, load_refresh=None)


def _names(replicas: list[Replica]) -> list[str]:
    return [r.url for r in replicas]


# --- choosing -------------------------------------------------------------------------------------------


def test_idle_replicas_take_turns_in_url_order() -> None:
    replicas = _set()
    chosen = []
    for _ in range(6):
        replica = replicas.choose()
        replicas.release(replicas.acquire(replica))
        chosen.append(replica)
    assert _names(chosen) == [*URLS, *URLS]


def test_the_replica_with_fewest_requests_in_flight_is_chosen() -> None:
    replicas = _set()
    a, b, c = replicas.replicas
    leases = [replicas.acquire(a), replicas.acquire(a), replicas.acquire(b)]
    assert replicas.choose() is c
    leases.append(replicas.acquire(c))
    leases.append(replicas.acquire(c))
    assert replicas.choose() is b  # b has 1 in flight, a and c have 2
    for lease in leases:
        replicas.release(lease)
    assert [r.in_flight for r in replicas.replicas] == [0, 0, 0]


@pytest.mark.parametrize(
    "error",
    [
        APIConnectionError("refused", connect_failed=True),
        APITimeoutError("connect timed out"),
        ServerUnavailableError("unavailable", status_code=503),
        OverloadedError("busy", status_code=429),
    ],
)
def test_a_replica_that_cannot_serve_is_ejected_and_skipped(error: APIConnectionError) -> None:
    clock = Clock()
    replicas = _set(clock)
    a = replicas.replicas[0]
    replicas.release(replicas.acquire(a), error)
    assert fails_over_at_once(error)
    assert all(replicas.choose() is not a for _ in range(5))
    status = replicas.statuses()[0]
    assert not status.healthy
    assert status.ejected_for == pytest.approx(1.0)
    assert status.failures == 1
    assert status.last_error is not None
    assert type(error).__name__ in status.last_error


def test_an_ejected_replica_is_tried_again_once_its_period_is_over() -> None:
    clock = Clock()
    replicas = _set(clock)
    a = replicas.replicas[0]
    replicas.release(replicas.acquire(a), APIConnectionError("refused", connect_failed=True))
    busy = [replicas.acquire(r) for r in replicas.replicas[1:]]  # the others are busier than a
    clock.now += 0.99
    assert replicas.choose() is not a
    clock.now += 0.02
    assert replicas.choose() is a
    assert replicas.statuses()[0].healthy
    for lease in busy:
        replicas.release(lease)


def test_ejection_doubles_while_failures_go_on_capped_and_resets_after_a_success() -> None:
    clock = Clock()
    replicas = _set(clock)
    a = replicas.replicas[0]
    periods = []
    for _ in range(6):
        replicas.release(replicas.acquire(a), ServerUnavailableError("down", status_code=503))
        periods.append(replicas.statuses()[0].ejected_for)
        clock.now += periods[-1]
    assert periods == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    replicas.release(replicas.acquire(a))
    replicas.release(replicas.acquire(a), ServerUnavailableError("down", status_code=503))
    assert replicas.statuses()[0].ejected_for == 1.0
    assert replicas.statuses()[0].failures == 1


def test_retry_after_sets_the_ejection_within_the_cap() -> None:
    clock = Clock()
    replicas = _set(clock)
    a = replicas.replicas[0]
    replicas.release(replicas.acquire(a), OverloadedError("busy", status_code=429, headers={"retry-after": "3"}))
    assert replicas.statuses()[0].ejected_for == 3.0
    replicas.release(replicas.acquire(a), OverloadedError("busy", status_code=429, headers={"retry-after": "60"}))
    assert replicas.statuses()[0].ejected_for == 8.0


@pytest.mark.parametrize(
    "error",
    [IncompleteGenerationError("cut", status_code=500), InputValidationError("bad", status_code=422)],
)
def test_other_failures_are_counted_but_do_not_eject(error: APIConnectionError) -> None:
    replicas = _set()
    a = replicas.replicas[0]
    replicas.release(replicas.acquire(a), error)
    assert not fails_over_at_once(error)
    status = replicas.statuses()[0]
    assert status.healthy
    assert status.failures == 1


def test_when_every_replica_is_ejected_the_one_back_first_is_chosen() -> None:
    clock = Clock()
    replicas = _set(clock)
    a, b, c = replicas.replicas
    for replica in (b, a, c):
        replicas.release(replicas.acquire(replica), APIConnectionError("refused", connect_failed=True))
        clock.now += 0.1
    assert replicas.choose() is b
    assert not replicas.others_available(b)


def test_replicas_that_failed_this_call_are_avoided_while_others_are_healthy() -> None:
    replicas = _set()
    a, b, c = replicas.replicas
    failed = [a]  # an incomplete generation: not ejected, but this call tries elsewhere first
    assert replicas.choose(avoid=failed) is b
    assert replicas.choose(avoid=[a, b]) is c
    assert replicas.choose(avoid=[a, b, c]) is a  # all failed: the usual choice among the healthy


def test_a_health_probe_ejects_or_brings_back_at_once() -> None:
    replicas = _set()
    a = replicas.replicas[0]
    replicas.mark_health(a, False, "GET /health: 503")
    assert replicas.statuses()[0].last_error == "GET /health: 503"
    assert not replicas.statuses()[0].healthy
    replicas.mark_health(a, True)
    status = replicas.statuses()[0]
    assert status.healthy
    assert status.failures == 0
    assert status.last_error is None


def test_release_is_counted_once_and_abandon_changes_nothing_else() -> None:
    replicas = _set()
    a = replicas.replicas[0]
    lease = replicas.acquire(a)
    replicas.release(lease, ServerUnavailableError("down", status_code=503))
    replicas.release(lease)
    replicas.abandon(lease)
    assert a.in_flight == 0
    assert a.failures == 1
    other = replicas.acquire(replicas.replicas[1])
    replicas.abandon(other)
    assert replicas.replicas[1].in_flight == 0
    assert replicas.statuses()[1].failures == 0


# --- sessions -------------------------------------------------------------------------------------------


def test_a_session_stays_on_one_replica_whatever_the_load() -> None:
    replicas = _set()
    first = replicas.choose("conversation-1")
    leases = [replicas.acquire(first) for _ in range(5)]
    assert all(replicas.choose("conversation-1") is first for _ in range(5))
    for lease in leases:
        replicas.release(lease)


def test_sessions_spread_over_replicas_and_only_those_of_an_ejected_replica_move() -> None:
    clock = Clock()
    replicas = _set(clock)
    sessions = [f"s{i}" for i in range(300)]
    before = {s: replicas.choose(s) for s in sessions}
    counts = {r.url: sum(1 for chosen in before.values() if chosen is r) for r in replicas.replicas}
    assert all(60 < n < 140 for n in counts.values()), counts
    b = replicas.replicas[1]
    replicas.release(replicas.acquire(b), APIConnectionError("refused", connect_failed=True))
    after = {s: replicas.choose(s) for s in sessions}
    for session in sessions:
        if before[session] is b:
            assert after[session] is not b
        else:
            assert after[session] is before[session]
    clock.now += 10
    assert {s: replicas.choose(s) for s in sessions} == before  # b healthy again: its sessions come back


def test_the_session_hash_is_the_same_in_every_process() -> None:
    # Not Python's salted hash(): another process (another client of the same replicas) routes a session alike.
    script = "from tests.unit.test_replicas import _set\nprint([_set().choose(f's{i}').index for i in range(40)])"
    runs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(runs) == 1
    assert runs.pop().strip() == str([_set().choose(f"s{i}").index for i in range(40)])


# --- the retry plan across replicas ---------------------------------------------------------------------


def _drive(flow: Flow[str]) -> tuple[str, list[float]]:
    """The flow's result and its waits (a failover's Sleep of 0 s, which records the retry, is no wait)."""
    sleeps: list[float] = []
    try:
        effect = next(flow)
        while True:
            assert isinstance(effect, Sleep)
            assert effect.cause is not None
            assert effect.attempt >= 1
            if effect.seconds:
                sleeps.append(effect.seconds)
            effect = flow.send(None)
    except StopIteration as stop:
        return stop.value, sleeps


def _context(policy: RetryPolicy, clock: Clock | None = None) -> Context:
    config = make_config(list(URLS), retry=policy)
    replicas = _set(clock)
    return Context(config, replicas.replicas[0].endpoint, random.Random(0), replicas=replicas)


def _attempt(outcomes: dict[str, list[BaseException | str]], seen: list[str]) -> Callable[[Context], Flow[str]]:
    def attempt(ctx: Context) -> Flow[str]:
        seen.append(ctx.url)
        outcome = outcomes[ctx.url].pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome
        yield

    return attempt


def test_a_refused_replica_is_failed_over_at_once_without_a_wait() -> None:
    seen: list[str] = []
    refused = APIConnectionError("refused", connect_failed=True)
    attempt = _attempt({"http://a:1": [refused], "http://b:2": ["ok"]}, seen)
    ctx = _context(RetryPolicy(max_attempts=4, initial_delay=5.0))
    result, sleeps = _drive(retrying(ctx, "t", call_times(Timeout(), "admin"), attempt))
    assert (result, sleeps, seen) == ("ok", [], ["http://a:1", "http://b:2"])


def test_a_refused_replica_fails_over_even_when_the_policy_does_not_retry_refusals() -> None:
    seen: list[str] = []
    refused = APIConnectionError("refused", connect_failed=True)
    attempt = _attempt({"http://a:1": [refused], "http://b:2": ["ok"]}, seen)
    ctx = _context(RetryPolicy(retry_refused=False))
    result, _ = _drive(retrying(ctx, "t", call_times(Timeout(), "admin"), attempt))
    assert result == "ok"


def test_max_attempts_counts_attempts_on_all_replicas() -> None:
    seen: list[str] = []
    down = ServerUnavailableError("down", status_code=503)
    attempt = _attempt({url: [down] * 3 for url in URLS}, seen)
    ctx = _context(RetryPolicy(max_attempts=2, initial_delay=0.0))
    with pytest.raises(ServerUnavailableError):
        _drive(retrying(ctx, "t", call_times(Timeout(), "admin"), attempt))
    assert seen == ["http://a:1", "http://b:2"]


def test_the_callers_errors_are_never_failed_over() -> None:
    seen: list[str] = []
    invalid = InputValidationError("bad", status_code=422)
    attempt = _attempt({"http://a:1": [invalid], "http://b:2": ["ok"]}, seen)
    with pytest.raises(InputValidationError):
        _drive(retrying(_context(RetryPolicy()), "t", call_times(Timeout(), "admin"), attempt))
    assert seen == ["http://a:1"]


def test_when_every_replica_is_down_the_policy_backoff_applies() -> None:
    seen: list[str] = []
    refused = APIConnectionError("refused", connect_failed=True)
    attempt = _attempt({"http://a:1": [refused, "ok"], "http://b:2": [refused], "http://c:3": [refused]}, seen)
    ctx = _context(RetryPolicy(max_attempts=4, initial_delay=0.5, jitter=0))
    result, sleeps = _drive(retrying(ctx, "t", call_times(Timeout(), "admin"), attempt))
    assert result == "ok"
    assert seen == ["http://a:1", "http://b:2", "http://c:3", "http://a:1"]
    assert sleeps == [2.0]  # no wait while another replica was up; then the policy's third backoff


def test_an_incomplete_generation_waits_its_backoff_then_goes_elsewhere() -> None:
    seen: list[str] = []
    cut = IncompleteGenerationError("cut", status_code=500)
    attempt = _attempt({"http://a:1": [cut], "http://b:2": ["ok"]}, seen)
    ctx = _context(RetryPolicy(initial_delay=0.25, jitter=0))
    result, sleeps = _drive(retrying(ctx, "t", call_times(Timeout(), "admin"), attempt))
    assert (result, sleeps, seen) == ("ok", [0.25], ["http://a:1", "http://b:2"])


def test_every_attempt_releases_its_lease() -> None:
    seen: list[str] = []
    refused = APIConnectionError("refused", connect_failed=True)
    attempt = _attempt({"http://a:1": [refused], "http://b:2": ["ok"]}, seen)
    ctx = _context(RetryPolicy())
    _drive(retrying(ctx, "t", call_times(Timeout(), "admin"), attempt))
    assert ctx.replicas is not None
    assert [r.in_flight for r in ctx.replicas.replicas] == [0, 0, 0]
    assert [s.requests for s in ctx.replicas.statuses()] == [1, 1, 0]


# --- settings -------------------------------------------------------------------------------------------


def test_one_url_in_a_list_is_exactly_one_url() -> None:
    config = make_config(["http://a:1/"])
    assert config.replica_urls == ()
    assert config.base_url == "http://a:1"
    with ZephyrClient(["http://a:1"]) as client:
        assert client._ctx.replicas is None


def test_several_urls_are_normalized_and_each_gets_its_endpoint() -> None:
    config = make_config(["http://a:1/v1", "https://b:2/"])
    assert config.replica_urls == ("http://a:1", "https://b:2")
    replicas = replica_set(config, None)
    assert len({id(r.endpoint) for r in replicas.replicas}) == 2


@pytest.mark.parametrize(
    ("urls", "message"),
    [
        ([], "empty list"),
        (["http://a:1", 3], r"base_url\[1\]: base_url must be a URL string"),
        (["http://a:1", "ftp://b"], r"base_url\[1\]: base_url must be an http"),
        (["http://a:1", "http://a:1/"], r"base_url\[1\] \('http://a:1'\) repeats base_url\[0\]"),
        (("http://a:1", "http://b:x"), r"base_url\[1\]: base_url is not a valid URL"),
    ],
)
def test_invalid_lists_name_the_bad_entry(urls: list[object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make_config(urls)


def test_passwords_in_urls_are_never_shown() -> None:
    with pytest.raises(ConfigurationError) as raised:
        make_config(["http://u:hunter22@a:1", "http://u:hunter22@a:1"])
    assert "hunter22" not in str(raised.value)
    with pytest.raises(ConfigurationError) as raised:
        make_config(["http://a:1", "gopher://u:sekrit99@b"])
    assert "sekrit99" not in str(raised.value)
    with ZephyrClient(["http://u:pw1234@a:1", "http://v:pw5678@b:2"]) as client:
        assert "pw1234" not in client.base_url
        assert "pw5678" not in repr(client)
        assert [e.url for e in client.endpoints] == ["http://u:***@a:1", "http://v:***@b:2"]


def test_the_environment_gives_several_urls_comma_separated() -> None:
    settings = settings_from_env({"ZEPHYR_TGI_URL": "http://a:1, http://b:2"})
    assert settings["base_url"] == ["http://a:1", "http://b:2"]
    assert settings_from_env({"ZEPHYR_TGI_URL": "http://a:1"})["base_url"] == "http://a:1"


def test_derived_clients_share_the_replicas() -> None:
    with ZephyrClient(list(URLS)) as client:
        derived = client.with_options(timeout=3.0)
        assert derived._ctx.replicas is client._ctx.replicas
        assert [e.url for e in derived.endpoints] == list(URLS)


def test_a_conversation_keeps_its_session_id_through_json_and_checks_a_given_one() -> None:
    from zephyr_tgi import Conversation

    with ZephyrClient("http://a:1") as client:
        first, second = Conversation(client), Conversation(client)
        assert first.session_id != second.session_id
        assert Conversation.from_json(first.to_json(), client).session_id == first.session_id
        assert Conversation(client, session_id="user-42:chat.1").session_id == "user-42:chat.1"
        for bad in ("", "has space", "x" * 129, "new\nline"):
            with pytest.raises(ConfigurationError, match="session_id must be"):
                Conversation(client, session_id=bad)
