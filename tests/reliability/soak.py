"""The fault-injection soak: many requests through every client path against a TGI emulator that misbehaves.

    python -m tests.reliability.soak --requests 1000 [--scenarios a,b] [--container] [--no-in-process]
                                     [--json out.json] [--markdown out.md]

A *scenario* is a set of emulator faults plus client settings (a short read timeout for slow tokens, a retry
policy long enough to ride out a loading server, ...). Each scenario sends N requests in waves, spread over the
five paths `chat`, `chat_stream`, `batch_chat`, `async_chat` and `async_chat_stream`, to an in-process
`TGIEmulator` or (`--container`) to the `zephyr-tgi-emulator` image, whose faults are set through
`POST /__emulator__/faults`.

Every request has its own prompt, so the emulator (deterministic) tells exactly what it must answer: the oracle
is `expected_reply(prompt)` cut the way TGI's stopping criteria cut it (max_new_tokens, stop sequences), minus
the trailing stop sequence the client removes. It is computed from the emulator's public functions, not from
the client under test; the `baseline` scenario proves it right (every request `exact`).

Outcomes: `exact`, `typed_error:<ZephyrTGIError subclass>`, or a violation:
- `wrong_text`: a result whose text is not the expected text;
- `spliced_or_duplicated`: a stream whose chunks do not join to its result, or whose text before an error is not a
  prefix of the expected text (what a retried stream would show);
- `foreign_exception:<type>`: an exception outside the zephyr_tgi hierarchy escaped;
- `retry_after_token`: a stream was retried after it had yielded a chunk (see below);
- `unlogged_retry`: the server saw more requests for a prompt than the attempts the client logged;
- `stream_ended_without_result`: a stream stopped without its final chunk and without an error;
- `not_seen_by_server`: an exact answer for a prompt the emulator's log does not hold (keeps the check above from
  passing vacuously);
- `hang`: a request outlived the hard cap (the client's own timeouts should always end it first).

How a retry after a token is detected. The emulator's request log (kept per wave, well below its 1,000-entry
memory) counts the HTTP requests each prompt caused. The client logs every retry on the `zephyr_tgi` logger (its
contract); a handler attributes each retry record to the request that made it through a context variable and
numbers it on a global sequence, on which the moment a stream yields its first chunk is numbered too. A retry
after the first chunk shows as a retry numbered after it; a retry that was not logged shows as more requests at
the emulator than 1 + logged retries (refused connections never reach it, so an honest client can only be
under-counted, never over-counted). `batch_chat` runs on the client's own threads, so only its text is checked.

Bounded: each scenario has a wall-clock cap (`--scenario-timeout`), every request a hard cap, loops are bounded
in count, and only 127.0.0.1 is contacted. Containers are labelled `org.zephyr-tgi.test=1` and always removed.
Exit status: 0 when clean, 1 on any violation or a container left behind, 2 when a scenario was cut by its cap
or did not exercise its fault.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import itertools
import json
import logging
import math
import platform
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import httpx2

from zephyr_tgi import (
    AsyncZephyrClient,
    GenerationResult,
    RetryPolicy,
    SamplingParams,
    Timeout,
    ZephyrClient,
    ZephyrTGIError,
)
from zephyr_tgi.testing import BuiltinTokenizer, Faults, TGIEmulator, expected_reply, render_zephyr_prompt

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

__all__ = [
    "PATHS",
    "SCENARIOS",
    "Scenario",
    "ScenarioReport",
    "SoakReport",
    "expected_text",
    "main",
    "render_markdown",
    "render_text",
    "run_soak",
]

PATHS = ("chat", "chat_stream", "batch_chat", "async_chat", "async_chat_stream")
STREAM_PATHS = frozenset({"chat_stream", "async_chat_stream"})
GENERATION_ROUTES = frozenset({"/generate", "/generate_stream"})
EMULATOR_IMAGE = "zephyr-tgi-emulator:latest"
TEST_LABEL = "org.zephyr-tgi.test"
RUN_LABEL = "org.zephyr-tgi.soak-run"
MAX_WAVE = 100  # requests per wave: with retries this stays well below the 1,000 requests the emulator keeps
BATCH_GROUP = 8  # conversations per batch_chat call
REQUEST_CAP = 60.0  # seconds after which a request counts as a hang
READY_TIMEOUT = 60.0
CONTAINER_FLAGS = ("--max-input-tokens", "3696", "--max-total-tokens", "4096", "--usage-stats", "off")

_T = TypeVar("_T")
_TOKENIZER = BuiltinTokenizer()
_SEQUENCE = itertools.count(1)  # one global order for retry records and first chunks (next() is atomic in CPython)


# --- requests and their expected text -------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """How a request limits its answer: the whole reply, a token budget, or the first sentence."""

    max_new_tokens: int | None = None
    stop: tuple[str, ...] = ()

    def params(self) -> SamplingParams:
        """The sampling options the request is sent with (greedy, so the emulator's text is the reply)."""
        return SamplingParams(max_new_tokens=self.max_new_tokens, stop=self.stop)


VARIANTS = (Variant(), Variant(max_new_tokens=9), Variant(stop=(".",)))


def expected_text(prompt: str, variant: Variant) -> str:
    """The text a client must return for `prompt`: the emulator's reply cut like TGI's stopping criteria.

    TGI checks, after each token: the token budget, then EOS, then the stop sequences; the client then drops a
    trailing stop sequence (the longest first). EOS is special, so it never shows in the text.
    """
    generated = ""
    for count, span in enumerate(_TOKENIZER.encode(expected_reply(prompt)), start=1):
        generated += span.text
        if variant.max_new_tokens is not None and count >= variant.max_new_tokens:
            break
        if any(generated.endswith(stop) for stop in variant.stop):
            break
    for stop in sorted((*variant.stop, "</s>"), key=len, reverse=True):
        if generated.endswith(stop):
            return generated[: -len(stop)]
    return generated


@dataclass
class SoakRequest:
    """One request of a wave and what happened to it."""

    index: int
    path: str
    content: str
    variant: Variant
    prompt: str
    expected: str
    chunks: list[str] = field(default_factory=list)
    first_chunk_at: int | None = None
    retries: list[tuple[int, str, str]] = field(default_factory=list)  # (sequence, description, error type)
    result_text: str | None = None
    error: BaseException | None = None
    finished: bool = False
    hung: bool = False
    server_requests: int | None = None  # how many generation requests the emulator saw for this prompt
    label: str = ""
    violations: list[str] = field(default_factory=list)

    @property
    def stream(self) -> bool:
        """Whether this request goes through a streaming path."""
        return self.path in STREAM_PATHS

    @property
    def attributed(self) -> bool:
        """Whether its retries are attributed to it (batch_chat retries on the client's own threads)."""
        return self.path != "batch_chat"

    def generation_retries(self) -> list[tuple[int, str, str]]:
        """Retries of the generation call itself (not of the /info or /tokenize the client makes first)."""
        return [retry for retry in self.retries if retry[1] in ("POST /generate", "POST /generate_stream")]


def _make_requests(scenario: str, mode: str, nonce: str, wave: int, first_index: int, count: int) -> list[SoakRequest]:
    requests = []
    for offset in range(count):
        index = first_index + offset
        path = PATHS[index % len(PATHS)]
        variant = VARIANTS[(index // len(PATHS)) % len(VARIANTS)]
        content = f"soak {scenario} {mode} {nonce} wave {wave} request {index}: tell me about rivers"
        prompt = render_zephyr_prompt([("system", ""), ("user", content)])
        requests.append(SoakRequest(index, path, content, variant, prompt, expected_text(prompt, variant)))
    return requests


# --- attributing retries ----------------------------------------------------------------------------------

_CURRENT: contextvars.ContextVar[SoakRequest | None] = contextvars.ContextVar("soak_request", default=None)


class _RetryRecorder(logging.Handler):
    """Counts the client's retry log records, attributing each to the request whose context made it."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self._counts_lock = threading.Lock()
        self.by_error: Counter[str] = Counter()
        self.total = 0

    def emit(self, record: logging.LogRecord) -> None:
        if not isinstance(record.msg, str) or not record.msg.startswith("retrying "):
            return
        if not isinstance(record.args, tuple) or len(record.args) < 5:
            return
        description, error_type = str(record.args[0]), str(record.args[4])
        sequence = next(_SEQUENCE)
        with self._counts_lock:
            self.total += 1
            self.by_error[error_type] += 1
        request = _CURRENT.get()
        if request is not None:
            request.retries.append((sequence, description, error_type))


@contextlib.contextmanager
def _recording_retries() -> Iterator[_RetryRecorder]:
    logger = logging.getLogger("zephyr_tgi")
    recorder = _RetryRecorder()
    previous_level = logger.level
    logger.addHandler(recorder)
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        yield recorder
    finally:
        logger.removeHandler(recorder)
        logger.setLevel(previous_level)


# --- scenarios ----------------------------------------------------------------------------------------------

WaveFaults = Callable[[int, int], dict[str, Any]]
DEFAULT_TIMEOUT = Timeout(connect=5.0, read=10.0, write=10.0, deadline=30.0)
FAST_RETRY = RetryPolicy(max_attempts=4, initial_delay=0.01, max_delay=0.1)


def _no_faults(wave: int, size: int) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class ServerSpec:
    """What the emulator is started with (constructor arguments, or the container's command-line flags)."""

    max_concurrent_requests: int = 128
    token_latency: float = 0.0
    refuse_for: float = 0.0
    proxy_unavailable_for: float = 0.0


@dataclass(frozen=True)
class Scenario:
    """Emulator faults plus client settings, and the evidence that proves the fault was exercised."""

    name: str
    summary: str
    faults: WaveFaults = _no_faults
    server: ServerSpec = ServerSpec()
    timeout: Timeout = DEFAULT_TIMEOUT
    retry: RetryPolicy = FAST_RETRY
    concurrency: int = 8
    min_waves: int = 1
    fresh_server_per_wave: bool = False
    kill_mid_wave: bool = False
    container_only: bool = False
    evidence: tuple[str, ...] = ()
    """Evidence counters that must all be > 0 for the scenario to count as exercised."""


def _cycle(options: Sequence[_T], wave: int) -> _T:
    return options[wave % len(options)]


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("baseline", "no faults: every request must be exact", concurrency=8),
    Scenario(
        "loading_phase",
        "a fresh server refuses connections for 0.3 s, then a proxy answers 503 for 0.5 s; 8 attempts ride it out",
        server=ServerSpec(refuse_for=0.3, proxy_unavailable_for=0.5),
        retry=RetryPolicy(max_attempts=8, initial_delay=0.05, max_delay=0.4),
        concurrency=16,
        fresh_server_per_wave=True,
        evidence=("retry:APIConnectionError", "retry:ServerUnavailableError"),
    ),
    Scenario(
        "overload_burst",
        "max_concurrent_requests=4 with 12 requests in flight (429, in-band on streams), plus overload_next bursts",
        faults=lambda wave, size: {"overload_next": max(1, size // 5), "token_latency": 0.002},
        server=ServerSpec(max_concurrent_requests=4),
        retry=RetryPolicy(max_attempts=6, initial_delay=0.02, max_delay=0.3),
        concurrency=12,
        evidence=("overloaded", "retry:OverloadedError"),
    ),
    Scenario(
        "reset_before_first_byte",
        "a quarter of the requests are read, then the connection is reset without an answer",
        faults=lambda wave, size: {"drop_before_first_byte_next": max(1, size // 4)},
        evidence=("retry:APIConnectionError",),
    ),
    Scenario(
        "stream_cut_midway",
        "a third of the streams are reset after 1, 3 or 0 tokens (0: retried, else raised)",
        faults=lambda wave, size: {
            "drop_mid_stream_next": max(1, size // 3),
            "drop_after_tokens": _cycle((1, 3, 0), wave),
        },
        min_waves=3,
        evidence=("partial_streams", "retry:APIConnectionError"),
    ),
    Scenario(
        "in_band_error",
        "in-band errors: overloaded as first event (retried), generation / incomplete after 2 tokens (raised); "
        "from the fourth wave on they also hit non-streaming requests",
        faults=lambda wave, size: {
            "stream_error_next": max(1, size // 3),
            "stream_error_type": _cycle(("overloaded", "generation", "incomplete_generation_stream"), wave),
            "stream_error_after_tokens": _cycle((0, 2, 2), wave),
            # Which requests reach the server first is up to the scheduler; in the first three waves only streams
            # may take the faults, so that every run (CI's small one too) sees in-band errors mid-stream.
            "stream_error_streams_only": wave < 3,
        },
        min_waves=3,
        evidence=("retry:OverloadedError", "partial_streams", "typed_error:GenerationError"),
    ),
    Scenario(
        "slow_tokens",
        "0.4 s per token against a 0.2 s read timeout: APITimeoutError after 2 attempts",
        faults=lambda wave, size: {"token_latency": 0.4},
        server=ServerSpec(max_concurrent_requests=10_000),
        timeout=Timeout(connect=5.0, read=0.2, write=5.0, deadline=10.0),
        retry=RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.05),
        concurrency=16,
        evidence=("typed_error:APITimeoutError",),
    ),
    Scenario(
        "container_killed",
        "tokens every 40 ms, 48 requests in flight; the container is killed (SIGKILL) once streams are under way",
        server=ServerSpec(token_latency=0.04),
        timeout=Timeout(connect=5.0, read=5.0, write=5.0, deadline=20.0),
        concurrency=48,
        fresh_server_per_wave=True,
        kill_mid_wave=True,
        container_only=True,
        evidence=("in_flight_at_kill", "typed_error:APIConnectionError"),
    ),
)
SCENARIO_NAMES = tuple(scenario.name for scenario in SCENARIOS)


# --- the servers ------------------------------------------------------------------------------------------


@dataclass
class GroundTruth:
    """What the emulator saw during a wave."""

    by_prompt: Counter[str]
    generation_requests: int
    overloaded: int
    max_in_flight: int
    complete: bool  # False if its request log overflowed (then the per-prompt counts are not used)


def _truth_from_json(stats: Mapping[str, Any]) -> GroundTruth:
    by_prompt: Counter[str] = Counter()
    requests = stats.get("requests") or []
    for recorded in requests:
        body = recorded.get("json")
        if recorded.get("path") in GENERATION_ROUTES and isinstance(body, dict) and isinstance(body.get("inputs"), str):
            by_prompt[body["inputs"]] += 1
    return GroundTruth(
        by_prompt=by_prompt,
        generation_requests=sum(by_prompt.values()),
        overloaded=int(stats.get("overloaded_total", 0)),
        max_in_flight=int(stats.get("max_in_flight", 0)),
        complete=int(stats.get("requests_total", 0)) <= len(requests),
    )


class Target(Protocol):
    """A running emulator the soak can steer."""

    url: str

    def prepare_wave(self, faults: Mapping[str, Any]) -> None:
        """Forget faults, stats and the request log, then set this wave's faults."""

    def ground_truth(self) -> GroundTruth:
        """What the emulator saw since `prepare_wave`."""

    def kill(self) -> None:
        """Kill the server abruptly (containers only)."""

    def close(self) -> None:
        """Stop and remove the server."""


class InProcessTarget:
    """A `TGIEmulator` in this process."""

    def __init__(self, spec: ServerSpec) -> None:
        faults = Faults(refuse_connections_for=spec.refuse_for, proxy_unavailable_for=spec.proxy_unavailable_for)
        self._emulator = TGIEmulator(
            max_concurrent_requests=spec.max_concurrent_requests, token_latency=spec.token_latency, faults=faults
        ).start()
        self.url = self._emulator.url
        self._fresh = True

    def prepare_wave(self, faults: Mapping[str, Any]) -> None:
        if not self._fresh:  # a fresh server keeps its loading phase
            self._emulator.reset()
        self._fresh = False
        if faults:
            self._emulator.set_faults(**faults)

    def ground_truth(self) -> GroundTruth:
        return _truth_from_json(self._emulator.stats.to_json())

    def kill(self) -> None:
        raise NotImplementedError("only a container can be killed")

    def close(self) -> None:
        self._emulator.stop()


class ContainerTarget:
    """The `zephyr-tgi-emulator` image, published on 127.0.0.1 with a port docker assigns, steered over HTTP."""

    def __init__(self, docker_client: DockerClient, image: str, spec: ServerSpec, *, run_id: str, wait: bool) -> None:
        flags = [*CONTAINER_FLAGS, "--max-concurrent-requests", str(spec.max_concurrent_requests)]
        if spec.token_latency:
            flags += ["--emulator-token-latency", str(spec.token_latency)]
        if spec.refuse_for:
            flags += ["--emulator-refuse-for", str(spec.refuse_for)]
        if spec.proxy_unavailable_for:
            flags += ["--emulator-proxy-unavailable-for", str(spec.proxy_unavailable_for)]
        # ("127.0.0.1", None): loopback only, on a host port docker picks (read back below).
        ports: dict[str, Any] = {"80/tcp": ("127.0.0.1", None)}
        self._container: Container = docker_client.containers.create(
            image,
            command=flags,
            detach=True,
            init=True,
            labels={TEST_LABEL: "1", RUN_LABEL: run_id},
            ports=ports,
        )
        self._fresh = True
        self._admin = httpx2.Client(timeout=10.0)
        try:
            self._container.start()
            self.url = f"http://127.0.0.1:{self._host_port()}"
            if wait:
                self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _host_port(self) -> int:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            self._container.reload()
            bindings = (self._container.attrs["NetworkSettings"]["Ports"] or {}).get("80/tcp") or []
            for binding in bindings:
                if binding.get("HostIp") == "127.0.0.1" and binding.get("HostPort"):
                    return int(binding["HostPort"])
            if self._container.status in ("exited", "dead"):
                break
            time.sleep(0.02)
        raise RuntimeError(f"docker published no 127.0.0.1 port for the emulator: {self._logs()}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx2.HTTPError):
                if self._admin.get(f"{self.url}/health").status_code == 200:
                    return
            self._container.reload()
            if self._container.status in ("exited", "dead"):
                break
            time.sleep(0.05)
        raise RuntimeError(f"the emulator container did not become healthy: {self._logs()}")

    def _logs(self) -> str:
        with contextlib.suppress(Exception):  # the container may be gone
            return bytes(self._container.logs(stdout=True, stderr=True)).decode("utf-8", "replace")[-2000:]
        return "(no logs)"

    def prepare_wave(self, faults: Mapping[str, Any]) -> None:
        if not self._fresh:
            self._admin.post(f"{self.url}/__emulator__/reset").raise_for_status()
        self._fresh = False
        if faults:
            self._admin.post(f"{self.url}/__emulator__/faults", json=dict(faults)).raise_for_status()

    def ground_truth(self) -> GroundTruth:
        response = self._admin.get(f"{self.url}/__emulator__/stats")
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return _truth_from_json(stats)

    def kill(self) -> None:
        self._container.kill()

    def close(self) -> None:
        import docker.errors

        self._admin.close()
        with contextlib.suppress(docker.errors.NotFound):
            self._container.remove(force=True, v=True)


TargetFactory = Callable[[ServerSpec, bool], Target]


# --- running requests -------------------------------------------------------------------------------------


@dataclass
class _Wave:
    """Shared state of the requests of one wave."""

    sync_client: ZephyrClient
    async_client: AsyncZephyrClient
    slots: asyncio.Semaphore
    lock: threading.Lock = field(default_factory=threading.Lock)
    streams_started: int = 0
    in_flight: int = 0
    done: int = 0
    kill_after_streams: int | None = None
    kill_now: threading.Event = field(default_factory=threading.Event)

    def check_kill(self) -> None:
        """Signal the killer once enough streams have yielded a chunk and a request has finished."""
        if self.kill_after_streams is not None and self.streams_started >= self.kill_after_streams and self.done:
            self.kill_now.set()


def _in_daemon_thread(fn: Callable[[], _T]) -> asyncio.Future[_T]:
    """Run a blocking call on a daemon thread (a hung call cannot block the interpreter's exit)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()
    context = contextvars.copy_context()

    def settle(value: _T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)  # type: ignore[arg-type]

    def run() -> None:
        try:
            value = context.run(fn)
        except BaseException as exc:  # handed to the awaiting coroutine, which classifies it
            with contextlib.suppress(RuntimeError):  # the loop is gone after a hang was reported
                loop.call_soon_threadsafe(settle, None, exc)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, value, None)

    threading.Thread(target=run, name="soak-sync", daemon=True).start()
    return future


def _note_chunk(wave: _Wave, request: SoakRequest, text: str, result: GenerationResult | None) -> None:
    if request.first_chunk_at is None:
        request.first_chunk_at = next(_SEQUENCE)
        with wave.lock:
            wave.streams_started += 1
            wave.check_kill()
    request.chunks.append(text)
    if result is not None:
        request.result_text = result.text


def _sync_call(wave: _Wave, request: SoakRequest) -> None:
    token = _CURRENT.set(request)
    try:
        if request.path == "chat":
            request.result_text = wave.sync_client.chat(request.content, params=request.variant.params()).text
        else:
            for chunk in wave.sync_client.chat_stream(request.content, params=request.variant.params()):
                _note_chunk(wave, request, chunk.text, chunk.result)
    finally:
        _CURRENT.reset(token)


async def _async_call(wave: _Wave, request: SoakRequest) -> None:
    token = _CURRENT.set(request)
    try:
        if request.path == "async_chat":
            result = await wave.async_client.chat(request.content, params=request.variant.params())
            request.result_text = result.text
        else:
            async for chunk in wave.async_client.chat_stream(request.content, params=request.variant.params()):
                _note_chunk(wave, request, chunk.text, chunk.result)
    finally:
        _CURRENT.reset(token)


def _batch_call(wave: _Wave, group: list[SoakRequest]) -> None:
    outcomes = wave.sync_client.batch_chat(
        [request.content for request in group], params=group[0].variant.params(), concurrency=4, progress=False
    )
    if len(outcomes) != len(group):
        raise AssertionError(f"batch_chat returned {len(outcomes)} outcomes for {len(group)} conversations")
    for request, outcome in zip(group, outcomes, strict=True):
        if isinstance(outcome, GenerationResult):
            request.result_text = outcome.text
        else:
            request.error = outcome


async def _guarded(wave: _Wave, requests: list[SoakRequest], call: Callable[[], Awaitable[None]]) -> None:
    """One unit of work under the wave's concurrency limit and the hard cap; records errors and hangs."""
    async with wave.slots:
        with wave.lock:
            wave.in_flight += 1
        try:
            await asyncio.wait_for(call(), REQUEST_CAP)
        except TimeoutError:
            for request in requests:
                request.hung = True
        except BaseException as exc:  # classified later: typed, or a foreign exception (a violation)
            if isinstance(exc, asyncio.CancelledError):
                raise
            for request in requests:
                request.error = exc
        finally:
            with wave.lock:
                wave.in_flight -= 1
                wave.done += 1
                wave.check_kill()
            for request in requests:
                request.finished = True


def _units(wave: _Wave, requests: list[SoakRequest]) -> list[Awaitable[None]]:
    units: list[Awaitable[None]] = []
    batches: dict[Variant, list[SoakRequest]] = {}
    for request in requests:
        if request.path == "batch_chat":
            batches.setdefault(request.variant, []).append(request)
        elif request.path in ("chat", "chat_stream"):
            units.append(_guarded(wave, [request], partial(_in_daemon_thread, partial(_sync_call, wave, request))))
        else:
            units.append(_guarded(wave, [request], partial(_async_call, wave, request)))
    for grouped in batches.values():
        for start in range(0, len(grouped), BATCH_GROUP):
            group = grouped[start : start + BATCH_GROUP]
            units.append(_guarded(wave, group, partial(_in_daemon_thread, partial(_batch_call, wave, group))))
    return units


# --- classifying ------------------------------------------------------------------------------------------


def classify(request: SoakRequest) -> None:
    """Set the request's outcome label and its violations (see the module docstring)."""
    violations: list[str] = []
    joined = "".join(request.chunks)
    if request.hung:
        label = "hang"
        violations.append("hang")
    elif request.error is not None:
        if isinstance(request.error, ZephyrTGIError):
            label = f"typed_error:{type(request.error).__name__}"
        else:
            label = f"foreign_exception:{type(request.error).__name__}"
            violations.append(label)
        if request.stream and not request.expected.startswith(joined):
            violations.append("spliced_or_duplicated")
    elif request.result_text is None:
        label = "stream_ended_without_result"
        violations.append(label)
    else:
        if request.stream and joined != request.result_text:
            violations.append("spliced_or_duplicated")
        if request.result_text == request.expected:
            label = "exact"
        else:
            label = "wrong_text"
            violations.append("wrong_text")
    if request.attributed and label == "exact" and request.server_requests == 0:
        violations.append("not_seen_by_server")  # an answer the server never generated (or a broken log)
    if request.attributed:
        retries = request.generation_retries()
        if request.first_chunk_at is not None and any(seq > request.first_chunk_at for seq, _, _ in retries):
            violations.append("retry_after_token")
        if request.server_requests is not None and request.server_requests > len(retries) + 1:
            violations.append("retry_after_token" if request.first_chunk_at is not None else "unlogged_retry")
    request.label = label
    request.violations = list(dict.fromkeys(violations))


# --- reports ----------------------------------------------------------------------------------------------


@dataclass
class ScenarioReport:
    """The outcomes of one scenario in one mode."""

    name: str
    mode: str
    summary: str
    requested: int
    outcomes: Counter[str] = field(default_factory=Counter)
    by_path: dict[str, Counter[str]] = field(default_factory=dict)
    violations: Counter[str] = field(default_factory=Counter)
    evidence: Counter[str] = field(default_factory=Counter)
    required_evidence: tuple[str, ...] = ()
    examples: list[dict[str, Any]] = field(default_factory=list)
    waves: int = 0
    seconds: float = 0.0
    cut_by_cap: bool = False
    error: str | None = None

    @property
    def completed(self) -> int:
        """Requests that ran (all of them unless the wall-clock cap cut the scenario)."""
        return sum(self.outcomes.values())

    @property
    def exercised(self) -> bool:
        """Whether every piece of evidence of the scenario's fault was seen."""
        return all(self.evidence[name] > 0 for name in self.required_evidence)

    @property
    def ok(self) -> bool:
        """No violation, every request ran, and the fault was exercised."""
        return (
            not self.violations
            and not self.cut_by_cap
            and self.error is None
            and self.completed == self.requested
            and self.exercised
        )

    def add(self, request: SoakRequest) -> None:
        """Count one classified request."""
        self.outcomes[request.label] += 1
        self.by_path.setdefault(request.path, Counter())[request.label] += 1
        for violation in request.violations:
            self.violations[violation.split(":", 1)[0]] += 1
        if request.violations and len(self.examples) < 20:
            self.examples.append(
                {
                    "path": request.path,
                    "request": request.index,
                    "label": request.label,
                    "violations": request.violations,
                    "text": "".join(request.chunks) if request.stream else request.result_text,
                    "expected": request.expected,
                    "error": repr(request.error) if request.error is not None else None,
                    "retries": [f"{description}: {error}" for _, description, error in request.retries],
                    "server_requests": request.server_requests,
                }
            )
        if request.stream and request.first_chunk_at is not None:
            if request.error is not None:
                self.evidence["partial_streams"] += 1
            if request.generation_retries():
                self.evidence["streams_retried_before_first_token"] += 1
        if request.label.startswith("typed_error:"):
            self.evidence[request.label] += 1

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "name": self.name,
            "mode": self.mode,
            "summary": self.summary,
            "requested": self.requested,
            "completed": self.completed,
            "outcomes": dict(sorted(self.outcomes.items())),
            "by_path": {path: dict(sorted(counts.items())) for path, counts in sorted(self.by_path.items())},
            "violations": dict(sorted(self.violations.items())),
            "evidence": dict(sorted(self.evidence.items())),
            "required_evidence": list(self.required_evidence),
            "exercised": self.exercised,
            "waves": self.waves,
            "seconds": round(self.seconds, 2),
            "cut_by_cap": self.cut_by_cap,
            "error": self.error,
            "ok": self.ok,
            "violation_examples": self.examples,
        }


@dataclass
class SoakReport:
    """Every scenario's report, and the containers left behind (must be none)."""

    requests_per_scenario: int
    scenarios: list[ScenarioReport] = field(default_factory=list)
    containers_left: list[str] = field(default_factory=list)
    started: str = ""
    seconds: float = 0.0

    @property
    def violations(self) -> int:
        """Violations over all scenarios."""
        return sum(sum(report.violations.values()) for report in self.scenarios)

    @property
    def exit_code(self) -> int:
        """0 clean; 1 violations or leftover containers; 2 a scenario incomplete or not exercised."""
        if self.violations or self.containers_left:
            return 1
        return 0 if all(report.ok for report in self.scenarios) else 2

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with the run's metadata."""
        return {
            "requests_per_scenario": self.requests_per_scenario,
            "started": self.started,
            "seconds": round(self.seconds, 1),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "commit": _git_commit(),
            "violations": self.violations,
            "containers_left": self.containers_left,
            "exit_code": self.exit_code,
            "scenarios": [report.to_json() for report in self.scenarios],
        }


def _git_commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
            cwd=Path(__file__).parent,
        )
        if done.returncode == 0:
            return done.stdout.strip()
    return None


def _error_columns(reports: Sequence[ScenarioReport]) -> list[str]:
    names = {label for report in reports for label in report.outcomes if label.startswith("typed_error:")}
    return sorted(names)


def _table(reports: Sequence[ScenarioReport]) -> tuple[list[str], list[list[str]]]:
    errors = _error_columns(reports)
    header = ["scenario", "mode", "requests", "exact", *(name.split(":", 1)[1] for name in errors)]
    header += ["violations", "retries", "overloaded", "partial streams", "exercised", "seconds"]
    rows = []
    for report in reports:
        violations = ", ".join(f"{name} {count}" for name, count in sorted(report.violations.items())) or "0"
        row = [report.name, report.mode, f"{report.completed}/{report.requested}", str(report.outcomes["exact"])]
        row += [str(report.outcomes[name]) for name in errors]
        row += [
            violations,
            str(report.evidence["retries"]),
            str(report.evidence["overloaded"]),
            str(report.evidence["partial_streams"]),
            "yes" if report.exercised else "NO",
            f"{report.seconds:.1f}",
        ]
        rows.append(row)
    return header, rows


def render_text(report: SoakReport) -> str:
    """The scenario table as aligned text."""
    header, rows = _table(report.scenarios)
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    verdict = "OK" if report.exit_code == 0 else f"FAILED (exit {report.exit_code})"
    left = f"; containers left behind: {report.containers_left}" if report.containers_left else ""
    lines.append(f"{report.violations} violation(s){left}; {report.seconds:.1f} s; {verdict}")
    for scenario in report.scenarios:
        if scenario.error:
            lines.append(f"{scenario.name} ({scenario.mode}) failed to run: {scenario.error}")
    return "\n".join(lines)


def render_markdown(report: SoakReport) -> str:
    """The scenario table as a markdown table, with the run's verdict."""
    header, rows = _table(report.scenarios)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    left = ", ".join(report.containers_left) or "none"
    lines += [
        "",
        f"{report.requests_per_scenario} requests per scenario, {report.violations} violation(s), containers left "
        f"behind: {left}, {report.seconds:.0f} s (commit {_git_commit() or 'unknown'}, Python "
        f"{platform.python_version()}, started {report.started}).",
    ]
    return "\n".join(lines) + "\n"


# --- running scenarios ------------------------------------------------------------------------------------


def _wave_sizes(total: int, min_waves: int) -> list[int]:
    waves = max(min_waves, math.ceil(total / MAX_WAVE))
    waves = min(waves, total) if total else 0
    base, extra = divmod(total, waves) if waves else (0, 0)
    return [base + (1 if index < extra else 0) for index in range(waves)]


async def _kill_when_streaming(target: Target, wave: _Wave, report: ScenarioReport) -> GroundTruth:
    """Kill the server once streams are under way and a request has finished (or after 3 s).

    Returns what the server saw until then: nothing can reach it afterwards.
    """
    await asyncio.to_thread(wave.kill_now.wait, 3.0)
    truth = await asyncio.to_thread(target.ground_truth)
    with wave.lock:
        report.evidence["in_flight_at_kill"] += wave.in_flight
    await asyncio.to_thread(target.kill)
    return truth


async def _run_wave(
    scenario: Scenario, target: Target, requests: list[SoakRequest], report: ScenarioReport, wave_index: int
) -> None:
    target.prepare_wave(scenario.faults(wave_index, len(requests)))
    sync_client = ZephyrClient(target.url, timeout=scenario.timeout, retry=scenario.retry)
    async_client = AsyncZephyrClient(target.url, timeout=scenario.timeout, retry=scenario.retry)
    wave = _Wave(sync_client, async_client, asyncio.Semaphore(scenario.concurrency))
    try:
        work = asyncio.gather(*_units(wave, requests))
        if scenario.kill_mid_wave:
            streams = sum(1 for request in requests if request.stream)
            wave.kill_after_streams = max(1, min(4, streams // 2))
            killer = asyncio.ensure_future(_kill_when_streaming(target, wave, report))
            await work
            truth = await killer
        else:
            await work
            truth = await asyncio.to_thread(target.ground_truth)
    finally:
        await async_client.close()
        sync_client.close()
    report.evidence["http_requests"] += truth.generation_requests
    report.evidence["overloaded"] += truth.overloaded
    report.evidence["max_in_flight"] = max(report.evidence["max_in_flight"], truth.max_in_flight)
    if not truth.complete:
        report.evidence["waves_with_overflowed_log"] += 1
    for request in requests:
        seen = truth.by_prompt.get(request.prompt, 0)
        # Before a kill the log is read a moment early: a count of 0 there proves nothing, a higher one does.
        if truth.complete and (seen or not scenario.kill_mid_wave):
            request.server_requests = seen
        classify(request)
        report.add(request)


async def _run_scenario(
    scenario: Scenario, mode: str, requests: int, make_target: TargetFactory, cap: float
) -> ScenarioReport:
    report = ScenarioReport(scenario.name, mode, scenario.summary, requests, required_evidence=scenario.evidence)
    started = time.monotonic()
    nonce = uuid.uuid4().hex[:8]
    shared: Target | None = None
    try:
        with _recording_retries() as recorder:
            first = 0
            for wave_index, size in enumerate(_wave_sizes(requests, scenario.min_waves)):
                if time.monotonic() - started > cap:
                    report.cut_by_cap = True
                    break
                wave_requests = _make_requests(scenario.name, mode, nonce, wave_index, first, size)
                first += size
                if scenario.fresh_server_per_wave:
                    target = await asyncio.to_thread(make_target, scenario.server, not scenario.server.refuse_for)
                    try:
                        await _run_wave(scenario, target, wave_requests, report, wave_index)
                    finally:
                        await asyncio.to_thread(target.close)
                else:
                    if shared is None:
                        shared = await asyncio.to_thread(make_target, scenario.server, True)
                    await _run_wave(scenario, shared, wave_requests, report, wave_index)
                report.waves += 1
            report.evidence["retries"] = recorder.total
            for error_type, count in recorder.by_error.items():
                report.evidence[f"retry:{error_type}"] = count
    except Exception as exc:  # a harness failure (docker, the emulator) is reported, not a client violation
        report.error = f"{type(exc).__name__}: {exc}"
    finally:
        if shared is not None:
            await asyncio.to_thread(shared.close)
        report.seconds = time.monotonic() - started
    return report


def _in_process_target(spec: ServerSpec, wait: bool) -> Target:
    return InProcessTarget(spec)


def _docker_client() -> DockerClient:
    import docker

    client = docker.from_env(timeout=60)
    client.ping()
    return client


def run_soak(
    requests: int,
    *,
    scenarios: Sequence[str] = SCENARIO_NAMES,
    in_process: bool = True,
    container: bool = False,
    image: str = EMULATOR_IMAGE,
    scenario_timeout: float | None = None,
    progress: Callable[[ScenarioReport], None] | None = None,
) -> SoakReport:
    """Run the chosen scenarios in process and/or against the emulator image; return the report.

    `container_killed` runs only against containers. `scenario_timeout` caps each scenario's wall-clock time
    (default: 60 s plus 0.5 s per request).
    """
    unknown = set(scenarios) - set(SCENARIO_NAMES)
    if unknown:
        raise ValueError(f"unknown scenario(s) {sorted(unknown)}; known: {', '.join(SCENARIO_NAMES)}")
    chosen = [scenario for scenario in SCENARIOS if scenario.name in scenarios]
    cap = scenario_timeout if scenario_timeout is not None else 60.0 + 0.5 * requests
    report = SoakReport(requests, started=time.strftime("%Y-%m-%d %H:%M:%S %z"))
    started = time.monotonic()

    def record(scenario_report: ScenarioReport) -> None:
        report.scenarios.append(scenario_report)
        if progress is not None:
            progress(scenario_report)

    if in_process:
        for scenario in chosen:
            if not scenario.container_only:
                record(asyncio.run(_run_scenario(scenario, "in-process", requests, _in_process_target, cap)))
    if container:
        docker_client = _docker_client()
        run_id = uuid.uuid4().hex[:12]

        def make_container(spec: ServerSpec, wait: bool) -> Target:
            return ContainerTarget(docker_client, image, spec, run_id=run_id, wait=wait)

        try:
            for scenario in chosen:
                record(asyncio.run(_run_scenario(scenario, "container", requests, make_container, cap)))
        finally:
            leftovers = docker_client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_id}"})
            report.containers_left = [str(leftover.name) for leftover in leftovers]
            for leftover in leftovers:  # remove them anyway; the report still says they were left
                leftover.remove(force=True, v=True)
            docker_client.close()
    report.seconds = time.monotonic() - started
    return report


# --- command line -----------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.reliability.soak",
        description="Fault-injection soak of the zephyr_tgi clients against the TGI emulator.",
    )
    parser.add_argument("--requests", type=int, default=1000, help="requests per scenario (default 1000)")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIO_NAMES),
        help=f"comma-separated scenarios (default all: {','.join(SCENARIO_NAMES)})",
    )
    parser.add_argument("--container", action="store_true", help="also run every scenario against the image")
    parser.add_argument("--no-in-process", action="store_true", help="skip the in-process emulator runs")
    parser.add_argument("--image", default=EMULATOR_IMAGE, help=f"emulator image (default {EMULATOR_IMAGE})")
    parser.add_argument("--scenario-timeout", type=float, help="wall-clock cap per scenario in seconds")
    parser.add_argument("--json", type=Path, help="write the full report as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the scenario table as markdown here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak from the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.requests < 1:
        print("--requests must be at least 1", file=sys.stderr)
        return 2
    scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]

    def progress(scenario: ScenarioReport) -> None:
        state = "ok" if scenario.ok else "FAILED"
        print(
            f"[soak] {scenario.name} ({scenario.mode}): {scenario.completed}/{scenario.requested} requests, "
            f"{sum(scenario.violations.values())} violation(s), {scenario.seconds:.1f} s, {state}",
            file=sys.stderr,
            flush=True,
        )

    try:
        report = run_soak(
            args.requests,
            scenarios=scenarios,
            in_process=not args.no_in_process,
            container=args.container,
            image=args.image,
            scenario_timeout=args.scenario_timeout,
            progress=progress,
        )
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(render_text(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(render_markdown(report), encoding="utf-8")
    return report.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
