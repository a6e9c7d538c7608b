"""Several replicas behind one client, over real HTTP: several emulators in this process, and emulator
processes killed for real. Every test runs with the sync and the async client (`kind`)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator

import pytest

from tests.http.conftest import Twin, generation_requests
from tests.http.test_emulator_cli import Emulator
from zephyr_tgi import (
    APIConnectionError,
    AsyncConversation,
    AsyncZephyrClient,
    Conversation,
    InputValidationError,
    RetryPolicy,
    ServerUnavailableError,
    Timeout,
    ZephyrClient,
    ZephyrTGIError,
)
from zephyr_tgi.testing import TGIEmulator

# A wait long enough to notice: a failover that slept its backoff shows in the elapsed time.
SLOW_BACKOFF = RetryPolicy(max_attempts=4, initial_delay=2.0, max_delay=2.0, jitter=0)


@pytest.fixture
def replicas() -> Iterator[list[TGIEmulator]]:
    """Three fresh emulators on ephemeral loopback ports."""
    servers = [TGIEmulator(engine="tgi").start() for _ in range(3)]
    yield servers
    for server in servers:
        server.stop()


def _urls(servers: list[TGIEmulator]) -> list[str]:
    return [server.url for server in servers]


def _generations(servers: list[TGIEmulator]) -> list[int]:
    return [len(generation_requests(server)) for server in servers]


async def _gather(
    twin: Twin, count: int, *, concurrency: int, meanwhile: tuple[int, Callable[[], object]] | None = None
) -> list[object]:
    """`count` chats with at most `concurrency` in flight; their results or errors. `meanwhile=(n, action)`
    runs `action` (in a thread) once `n` chats have finished, while the others are running or waiting."""
    gate = asyncio.Semaphore(concurrency)
    finished = 0

    async def one(index: int) -> object:
        nonlocal finished
        async with gate:
            try:
                outcome: object = await twin.call("chat", f"Hi {index}")
            except ZephyrTGIError as exc:
                outcome = exc
        finished += 1
        if meanwhile is not None and finished == meanwhile[0]:
            await asyncio.to_thread(meanwhile[1])
        return outcome

    return await asyncio.gather(*(one(i) for i in range(count)))


# --- one URL stays exactly what it was ------------------------------------------------------------------


async def test_one_url_sends_no_probe_and_no_extra_request(kind: str, emulator: TGIEmulator) -> None:
    twin = Twin(kind, [emulator.url])
    await twin.call("chat", "Hi")
    await twin.call("chat", "Hi again")
    await twin.close()
    paths = [r.path for r in emulator.stats.requests]
    assert paths == ["/info", "/generate", "/generate"]
    assert twin.client._ctx.replicas is None


# --- spreading the load -----------------------------------------------------------------------------------


async def test_calls_one_after_another_take_turns(kind: str, replicas: list[TGIEmulator]) -> None:
    twin = Twin(kind, _urls(replicas), engine="tgi")
    for index in range(9):
        await twin.call("generate", f"prompt {index}")
    await twin.close()
    assert _generations(replicas) == [3, 3, 3]
    # each replica's limits were read from its own /info
    assert [sum(r.path == "/info" for r in s.stats.requests) for s in replicas] == [1, 1, 1]


async def test_load_goes_to_the_replicas_with_fewest_requests_in_flight(kind: str) -> None:
    slow = TGIEmulator(token_latency=0.05).start()  # ~20 tokens of reply: about a second per request
    fast = [TGIEmulator().start() for _ in range(2)]
    try:
        twin = Twin(kind, [slow.url, *(s.url for s in fast)], engine="tgi")
        results = await _gather(twin, 24, concurrency=3)
        endpoints = twin.client.endpoints
        await twin.close()
    finally:
        for server in (slow, *fast):
            server.stop()
    assert all(not isinstance(r, Exception) for r in results)
    on_slow, *on_fast = _generations([slow, *fast])
    assert on_slow + sum(on_fast) == 24
    # While the slow replica holds its request, the next ones go to the fast replicas, which free up sooner.
    assert on_slow <= 4
    assert all(n >= 8 for n in on_fast), (on_slow, on_fast)
    assert [e.in_flight for e in endpoints] == [0, 0, 0]
    assert sum(e.requests for e in endpoints) == 24  # attempts: each replica's /info was part of its first


# --- a replica that goes away, or is unhealthy ------------------------------------------------------------


async def test_a_replica_killed_mid_run_loses_nothing(kind: str) -> None:
    servers = [TGIEmulator(token_latency=0.01).start() for _ in range(3)]
    try:
        twin = Twin(kind, _urls(servers), engine="tgi")
        # After 6 chats, while 4 run: its listener and open connections are closed.
        results = await _gather(twin, 30, concurrency=4, meanwhile=(6, servers[1].stop))
        served_before_it_died = len(generation_requests(servers[1]))
        endpoints = twin.client.endpoints
        await twin.close()
    finally:
        for server in servers:
            server.stop()
    errors = [r for r in results if isinstance(r, Exception)]
    assert errors == []
    assert len(results) == 30
    assert served_before_it_died >= 2
    assert not endpoints[1].healthy
    assert endpoints[1].last_error is not None
    assert endpoints[0].healthy
    assert endpoints[2].healthy


async def test_a_refused_connection_fails_over_at_once(kind: str, replicas: list[TGIEmulator]) -> None:
    replicas[0].stop()
    twin = Twin(kind, _urls(replicas), engine="tgi", retry=SLOW_BACKOFF)
    started = time.monotonic()
    result = await twin.call("chat", "Hi")
    elapsed = time.monotonic() - started
    endpoints = twin.client.endpoints
    await twin.close()
    assert result.text
    assert elapsed < 1.0  # no 2 s backoff
    assert not endpoints[0].healthy
    assert "APIConnectionError" in (endpoints[0].last_error or "")
    # The error names the replica that refused, not the client's whole list (X-Request-Id and telemetry
    # re-stamp each request: they must keep where it goes).
    assert f"to {replicas[0].url}:" in (endpoints[0].last_error or "")
    assert replicas[1].url not in (endpoints[0].last_error or "")


async def test_a_503_from_a_replica_fails_over_at_once(kind: str, replicas: list[TGIEmulator]) -> None:
    replicas[0].set_faults(proxy_unavailable_for=60.0)  # a proxy in front of it answers 503
    twin = Twin(kind, _urls(replicas), engine="tgi", retry=SLOW_BACKOFF)
    started = time.monotonic()
    results = [await twin.call("chat", f"Hi {i}") for i in range(4)]
    elapsed = time.monotonic() - started
    await twin.close()
    assert all(r.text for r in results)
    assert elapsed < 1.5
    assert _generations(replicas)[1:] == [2, 2]  # the ejected replica is skipped after its first 503


async def test_an_unhealthy_replica_is_skipped_after_a_health_check(kind: str, replicas: list[TGIEmulator]) -> None:
    replicas[2].set_faults(unavailable_for=60.0)  # GET /health answers 503
    twin = Twin(kind, _urls(replicas), engine="tgi")
    assert await twin.call("health") is True  # two of three are healthy
    endpoints = twin.client.endpoints
    assert [e.healthy for e in endpoints] == [True, True, False]
    assert "503" in (endpoints[2].last_error or "") or "Unavailable" in (endpoints[2].last_error or "")
    for index in range(4):
        await twin.call("generate", f"prompt {index}")
    assert _generations(replicas) == [2, 2, 0]
    replicas[2].set_faults(unavailable_for=0.0)
    assert await twin.call("health") is True
    assert twin.client.endpoints[2].healthy  # a 200 brings it back at once
    await twin.close()


async def test_health_is_false_only_when_every_replica_is_down(kind: str, replicas: list[TGIEmulator]) -> None:
    for server in replicas:
        server.set_faults(unavailable_for=60.0)
    twin = Twin(kind, _urls(replicas))
    assert await twin.call("health") is False
    assert [e.healthy for e in twin.client.endpoints] == [False, False, False]
    await twin.close()


async def test_wait_until_ready_returns_once_one_replica_is_healthy(kind: str, replicas: list[TGIEmulator]) -> None:
    replicas[0].stop()
    replicas[1].set_faults(unavailable_for=60.0)
    twin = Twin(kind, _urls(replicas), engine="tgi")
    info = await twin.call("wait_until_ready", timeout=5.0, interval=0.05)
    endpoints = twin.client.endpoints
    await twin.close()
    assert info.max_total_tokens == 4096
    assert [e.healthy for e in endpoints] == [False, False, True]


async def test_the_callers_error_is_not_failed_over(kind: str, replicas: list[TGIEmulator]) -> None:
    invalid = {
        "status": 422,
        "body": '{"error":"Input validation error: bad","error_type":"validation"}',
        "content_type": "application/json",
    }
    for server in replicas:
        server.set_faults(scripted_responses=[invalid])
    twin = Twin(kind, _urls(replicas), engine="tgi")
    with pytest.raises(InputValidationError):
        await twin.call("generate", "Hi")
    await twin.close()
    assert sum(_generations(replicas)) == 1


async def test_every_replica_down_raises_within_the_deadline(kind: str, replicas: list[TGIEmulator]) -> None:
    for server in replicas:
        server.set_faults(proxy_unavailable_for=60.0)
    twin = Twin(
        kind,
        _urls(replicas),
        engine="tgi",
        timeout=Timeout(deadline=0.8),
        retry=RetryPolicy(max_attempts=100, initial_delay=0.1, max_delay=0.2),
    )
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError):
        await twin.call("chat", "Hi")
    elapsed = time.monotonic() - started
    await twin.close()
    assert elapsed < 1.5


async def test_max_attempts_counts_attempts_on_every_replica(kind: str, replicas: list[TGIEmulator]) -> None:
    for server in replicas:
        server.set_faults(proxy_unavailable_for=60.0)
    twin = Twin(kind, _urls(replicas), engine="tgi", retry=RetryPolicy(max_attempts=2, initial_delay=0.01))
    with pytest.raises(ServerUnavailableError):
        await twin.call("generate", "Hi")
    await twin.close()
    paths = [r.path for s in replicas for r in s.stats.requests]
    assert [p for p in paths if p != "/metrics"] == ["/info", "/info"]  # each attempt failed at its first step
    assert paths.count("/metrics") == 1  # the call's one read of a load signal (it failed too: no attempt)


# --- streams ----------------------------------------------------------------------------------------------


async def test_a_stream_fails_over_before_its_first_token(kind: str, replicas: list[TGIEmulator]) -> None:
    replicas[0].set_faults(drop_before_first_byte_next=1)
    twin = Twin(kind, _urls(replicas), engine="tgi", retry=SLOW_BACKOFF)  # idle: the first replica goes first
    started = time.monotonic()
    chunks = await twin.stream("chat_stream", "Hi")
    elapsed = time.monotonic() - started
    await twin.close()
    assert chunks[-1].result is not None
    assert elapsed < 1.0
    streams = [sum(r.path == "/generate_stream" for r in s.stats.requests) for s in replicas]
    assert streams == [1, 1, 0]


async def test_a_stream_cut_after_a_token_is_never_retried_anywhere(kind: str, replicas: list[TGIEmulator]) -> None:
    for server in replicas:
        server.set_faults(drop_mid_stream_next=1, drop_after_tokens=2)
    twin = Twin(kind, _urls(replicas), engine="tgi")
    chunks, error = await twin.stream_until_error("chat_stream", "Hi")
    endpoints = twin.client.endpoints
    await twin.close()
    assert isinstance(error, APIConnectionError)
    assert 1 <= len(chunks) <= 2
    streams = [sum(r.path == "/generate_stream" for r in s.stats.requests) for s in replicas]
    assert sum(streams) == 1
    assert [e.in_flight for e in endpoints] == [0, 0, 0]
    assert endpoints[streams.index(1)].failures == 1


async def test_a_stream_counts_in_flight_until_it_ends(kind: str, replicas: list[TGIEmulator]) -> None:
    twin = Twin(kind, _urls(replicas), engine="tgi")
    client = twin.client
    if isinstance(client, ZephyrClient):
        stream = client.chat_stream("Hi")
        first = next(stream)
        during = [e.in_flight for e in client.endpoints]
        rest = list(stream)
    else:
        assert isinstance(client, AsyncZephyrClient)
        astream = client.chat_stream("Hi")
        first = await astream.__anext__()
        during = [e.in_flight for e in client.endpoints]
        rest = [chunk async for chunk in astream]
    after = [e.in_flight for e in client.endpoints]
    await twin.close()
    assert first.text is not None
    assert rest[-1].result is not None
    assert sorted(during) == [0, 0, 1]
    assert after == [0, 0, 0]


async def test_a_chat_completion_stream_fails_over_before_its_first_event(
    kind: str, replicas: list[TGIEmulator]
) -> None:
    replicas[0].set_faults(drop_before_first_byte_next=1)
    twin = Twin(kind, _urls(replicas), engine="tgi", retry=SLOW_BACKOFF)
    chunks = await twin.stream("chat_completion", "Hi", stream=True, max_tokens=8)
    endpoints = twin.client.endpoints
    await twin.close()
    assert any(choice.finish_reason for chunk in chunks for choice in chunk.choices)
    streams = [sum(r.path == "/v1/chat/completions" for r in s.stats.requests) for s in replicas]
    assert streams == [1, 1, 0]
    assert [e.in_flight for e in endpoints] == [0, 0, 0]


async def test_a_batch_spreads_over_the_replicas(kind: str) -> None:
    # Requests of about the same length (a few ms per token): balancing by in-flight counts shares them evenly.
    servers = [TGIEmulator(token_latency=0.005).start() for _ in range(3)]
    try:
        twin = Twin(kind, _urls(servers), engine="tgi")
        questions = [f"question {i}" for i in range(18)]
        outcomes = await twin.call("batch_chat", questions, concurrency=6, progress=False)
        endpoints = twin.client.endpoints
        await twin.close()
    finally:
        for server in servers:
            server.stop()
    assert all(not isinstance(o, Exception) for o in outcomes)
    assert sum(_generations(servers)) == 18
    assert all(n >= 4 for n in _generations(servers)), _generations(servers)
    assert max(e.in_flight for e in endpoints) == 0
    assert max(s.stats.max_in_flight for s in servers) <= 3


# --- conversations stick ----------------------------------------------------------------------------------


async def _ask(conversation: Conversation | AsyncConversation, text: str) -> str:
    if isinstance(conversation, AsyncConversation):
        return (await conversation.ask(text)).text
    return (await asyncio.to_thread(conversation.ask, text)).text


def _conversation(twin: Twin) -> Conversation | AsyncConversation:
    client = twin.client
    return Conversation(client) if isinstance(client, ZephyrClient) else AsyncConversation(client)


async def test_a_conversation_stays_on_one_replica_and_sends_its_session_id(
    kind: str, replicas: list[TGIEmulator]
) -> None:
    twin = Twin(kind, _urls(replicas), engine="tgi")
    conversation = _conversation(twin)
    other = _conversation(twin)
    for turn in range(4):
        await _ask(conversation, f"turn {turn}")
        await twin.call("generate", f"unrelated {turn}")  # plain calls keep spreading meanwhile
    await _ask(other, "hello")
    await twin.close()
    sessions: dict[str, set[int]] = {}
    for index, server in enumerate(replicas):
        for request in generation_requests(server):
            session = request.headers.get("x-session-id")
            if session is not None:
                sessions.setdefault(session, set()).add(index)
    assert len(sessions[conversation.session_id]) == 1
    (home,) = sessions[conversation.session_id]
    assert sum(r.headers.get("x-session-id") == conversation.session_id for r in generation_requests(replicas[home]))
    assert other.session_id in sessions
    assert other.session_id != conversation.session_id
    assert sum(len(generation_requests(s)) for s in replicas) == 4 + 4 + 1


async def test_a_saved_conversation_comes_back_to_its_replica(kind: str, replicas: list[TGIEmulator]) -> None:
    twin = Twin(kind, _urls(replicas), engine="tgi")
    conversation = _conversation(twin)
    await _ask(conversation, "first")
    restored = type(conversation).from_json(conversation.to_json(), twin.client)  # type: ignore[arg-type]
    assert restored.session_id == conversation.session_id
    await _ask(restored, "second")
    await twin.close()
    homes = {i for i, s in enumerate(replicas) for r in generation_requests(s) if r.headers.get("x-session-id")}
    assert len(homes) == 1


async def test_a_conversation_moves_only_when_its_replica_dies(kind: str, replicas: list[TGIEmulator]) -> None:
    twin = Twin(kind, _urls(replicas), engine="tgi")
    conversation = _conversation(twin)
    await _ask(conversation, "first")
    (home,) = [i for i, s in enumerate(replicas) if generation_requests(s)]
    replicas[home].stop()
    answer = await _ask(conversation, "second")
    moved = [i for i, s in enumerate(replicas) if i != home and generation_requests(s)]
    await _ask(conversation, "third")
    await twin.close()
    assert answer
    assert len(moved) == 1
    assert len(generation_requests(replicas[moved[0]])) == 2  # it stays where it moved
    assert len(conversation.messages) == 6


async def test_a_single_url_conversation_sends_its_session_id_too(kind: str, emulator: TGIEmulator) -> None:
    twin = Twin(kind, emulator.url, engine="tgi")
    conversation = _conversation(twin)
    await _ask(conversation, "Hi")
    await twin.close()
    (request,) = generation_requests(emulator)
    assert request.headers["x-session-id"] == conversation.session_id


# --- endpoints ----------------------------------------------------------------------------------------------


async def test_endpoints_show_each_replicas_engine_and_limits(kind: str) -> None:
    small = TGIEmulator(max_input_tokens=500, max_total_tokens=1000).start()
    large = TGIEmulator(max_input_tokens=3000, max_total_tokens=4000).start()
    try:
        twin = Twin(kind, [small.url, large.url])
        before = twin.client.endpoints
        await twin.call("generate", "one")
        await twin.call("generate", "two")
        after = twin.client.endpoints
        await twin.close()
    finally:
        small.stop()
        large.stop()
    assert [(e.engine, e.limits) for e in before] == [(None, None), (None, None)]
    assert [e.engine for e in after] == ["tgi", "tgi"]
    assert [e.limits.max_total_tokens if e.limits else None for e in after] == [1000, 4000]
    assert [e.requests for e in after] == [1, 1]
    assert all(e.healthy and e.failures == 0 and e.in_flight == 0 for e in after)


async def test_engines_are_identified_per_replica(kind: str) -> None:
    servers = [TGIEmulator(engine="vllm").start(), TGIEmulator(engine="vllm").start()]
    try:
        twin = Twin(kind, _urls(servers))
        results = [await twin.call("chat", f"Hi {i}") for i in range(4)]
        endpoints = twin.client.endpoints
        engine = twin.client.engine
        await twin.close()
    finally:
        for server in servers:
            server.stop()
    assert all(r.text for r in results)
    assert [e.engine for e in endpoints] == ["vllm", "vllm"]
    assert engine == "vllm"


# --- real processes ---------------------------------------------------------------------------------------


@pytest.fixture
def processes() -> Iterator[list[Emulator]]:
    """Three `python -m zephyr_tgi.testing` processes, killed after the test."""
    started = [Emulator(["--port", "0", "--emulator-token-latency", "0.01"]) for _ in range(3)]
    yield started
    for process in started:
        if process.process.poll() is None:
            process.process.kill()
        process.process.wait(timeout=10)
        for stream in (process.process.stdout, process.process.stderr):
            if stream is not None:
                stream.close()


async def test_a_killed_emulator_process_loses_nothing(kind: str, processes: list[Emulator]) -> None:
    urls = [process.url() for process in processes]
    twin = Twin(kind, urls, engine="tgi", retry=RetryPolicy(max_attempts=4, initial_delay=0.05, max_delay=0.2))
    for index in range(3):  # every replica answers
        await twin.call("generate", f"warm {index}")

    def kill() -> None:
        processes[0].process.send_signal(signal.SIGKILL)
        processes[0].process.wait(timeout=10)

    results = await _gather(twin, 40, concurrency=4, meanwhile=(8, kill))
    endpoints = twin.client.endpoints
    await twin.close()
    assert [r for r in results if isinstance(r, Exception)] == []
    assert processes[0].process.returncode == -signal.SIGKILL
    assert endpoints[0].failures >= 1  # ejected, or tried again after its ejection and failed again
    assert endpoints[0].last_error is not None
    assert endpoints[1].healthy
    assert endpoints[2].healthy
