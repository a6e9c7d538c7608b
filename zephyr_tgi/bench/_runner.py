"""The load generator: drives `AsyncZephyrClient.chat_stream` at a profile's pace and times every token."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from pydantic import BaseModel, ConfigDict

from .._engines import EngineSetting, check_engine_setting
from .._errors import ConfigurationError, ZephyrTGIError
from ._metrics import SLO, RequestRecord, StepResult, summarize
from ._profiles import Bounds, Concurrent, Constant, Poisson, Profile, Sweep
from ._prompts import BenchPrompt

if TYPE_CHECKING:
    from .. import AsyncZephyrClient

__all__ = [
    "USERS_PER_CLIENT",
    "Clients",
    "LoadResult",
    "Progress",
    "ProgressCallback",
    "open_clients",
    "peak_users",
    "run_load",
    "run_step",
]

_PROGRESS_EVERY = 0.5
# httpx2's pool holds at most 100 connections per client: more concurrent streams on one client would queue
# inside it, unseen, and read as server latency. Users are spread so that no client carries more than this.
USERS_PER_CLIENT = 64

Clients = Union["AsyncZephyrClient", Sequence["AsyncZephyrClient"]]
"""One client, or several for the same server that the users are spread over (see `open_clients`)."""


def peak_users(profile: Profile, bounds: Bounds) -> int:
    """The most requests a profile has under way at once (what `open_clients` should be sized for)."""
    if isinstance(profile, Concurrent):
        return profile.users
    if isinstance(profile, Sweep):
        return profile.max_users
    return bounds.max_in_flight


def _as_list(clients: Clients) -> list[AsyncZephyrClient]:
    chosen = [clients] if not isinstance(clients, Sequence) else list(clients)
    if not chosen:
        raise ConfigurationError("a load test needs at least one client")
    return chosen


@contextlib.asynccontextmanager
async def open_clients(
    url: str, users: int, *, api_key: str | None = None, engine: EngineSetting = "auto"
) -> AsyncIterator[list[AsyncZephyrClient]]:
    """Enough clients for `users` concurrent users (at most `USERS_PER_CLIENT` each), closed on exit.

    `engine` is the engine serving `url` ("auto" identifies it once per client, before the first measured
    request: `run_step` reads the limits first).

    They make one attempt per request (a retry would hide an error and add its wait to the latency) and do
    not count prompts against the context window first (that would add a request to each measured one).

    Args:
        url: The server's base URL.
        users: The concurrent users the clients must carry.
        api_key: The server's api key, if it has one.
        engine: The engine serving `url`, or "auto" to identify it once per client before the measured requests.

    Yields:
        The clients (use it as `async with open_clients(url, users) as clients:`).
    """
    from .. import AsyncZephyrClient
    from .._retry import RetryPolicy

    count = max(-(-users // USERS_PER_CLIENT), 1)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                AsyncZephyrClient(url, api_key=api_key, retry=RetryPolicy.never(), budget="off", engine=engine)
            )
            for _ in range(count)
        ]
        yield clients


@dataclass(frozen=True, slots=True)
class Progress:
    """A live view of the load level running now (sent to the progress callback twice a second).

    Args:
        label: The load level (e.g. "8 users").
        elapsed: Seconds since the level started.
        requests_done: Requests finished, failed ones included.
        in_flight: Requests under way.
        errors: Requests failed.
        tokens_per_second: Output tokens/s so far.
    """

    label: str
    elapsed: float
    requests_done: int
    in_flight: int
    errors: int
    tokens_per_second: float


ProgressCallback = Callable[[Progress], None]


class LoadResult(BaseModel):
    """Every load level of one profile against one server, and what they say about its capacity.

    `saturation_users` is the last user count whose step still grew throughput before the sweep saw latency
    climb while throughput stalled (None when the sweep never saturated, or for other profiles);
    `users_meeting_slo` is the largest user count whose step met the SLO (None when none did).

    Attributes:
        url: The server's base URL.
        engine: The engine the clients spoke to ("tgi", "vllm", "sglang"); None before it was known.
        profile: How requests were sent.
        bounds: When each level ended.
        slo: The latency target.
        steps: Every level's measurements, in order.
        saturation_users: See above.
        users_meeting_slo: See above.
        interrupted: Whether the run was cut short (Ctrl-C).
    """

    model_config = ConfigDict(frozen=True)

    url: str
    engine: str | None = None  # the engine the client spoke to ("tgi", "vllm", "sglang")
    profile: Profile
    bounds: Bounds
    slo: SLO
    steps: list[StepResult]
    saturation_users: int | None = None
    users_meeting_slo: int | None = None
    interrupted: bool = False

    @property
    def best_step(self) -> StepResult | None:
        """The step with the highest output tokens/s among those meeting the SLO."""
        meeting = [step for step in self.steps if step.meets_slo]
        return max(meeting, key=lambda step: step.output_tokens_per_second, default=None)


class _Level:
    """The shared state of one load level: records, the prompt cycle, the bounds and the live counters."""

    def __init__(
        self,
        prompts: Sequence[BenchPrompt],
        bounds: Bounds,
        clock: Callable[[], float],
        stop: Callable[[], bool] | None = None,
    ) -> None:
        self.records: list[RequestRecord] = []
        self._stop = stop
        self._prompts = itertools.cycle(prompts)
        self._bounds = bounds
        self._clock = clock
        self.started = clock()
        self.deadline = None if bounds.max_seconds is None else self.started + bounds.max_seconds
        self.tokens = 0
        self.in_flight = 0

    def may_start(self) -> bool:
        if self._stop is not None and self._stop():
            return False
        limit = self._bounds.max_requests
        if limit is not None and len(self.records) >= limit:
            return False
        return self.deadline is None or self._clock() < self.deadline

    def next_record(self) -> tuple[BenchPrompt, RequestRecord]:
        prompt = next(self._prompts)
        record = RequestRecord(started=self._clock(), input_tokens=prompt.input_tokens or 0)
        self.records.append(record)
        return prompt, record

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(self.deadline - self._clock(), 0.0)


async def _request(client: AsyncZephyrClient, prompt: BenchPrompt, record: RequestRecord, level: _Level) -> None:
    """One streamed chat, each token's arrival time recorded; errors are recorded by class, not raised."""
    clock = time.perf_counter
    level.in_flight += 1
    try:
        async for chunk in client.chat_stream(
            prompt.content, system=prompt.system, max_new_tokens=prompt.max_new_tokens
        ):
            record.token_times.append(clock())
            if chunk.result is not None and chunk.result.input_length:
                record.input_tokens = chunk.result.input_length
        level.tokens += len(record.token_times)
        record.ended = clock()
    except ZephyrTGIError as exc:
        record.error = type(exc).__name__
        record.ended = clock()
    finally:
        level.in_flight -= 1


async def _closed_loop(clients: list[AsyncZephyrClient], level: _Level, users: int) -> None:
    async def user(client: AsyncZephyrClient) -> None:
        while level.may_start():
            prompt, record = level.next_record()
            await _request(client, prompt, record, level)

    tasks = [asyncio.ensure_future(user(clients[i % len(clients)])) for i in range(users)]
    await _gather_with_drain(tasks, level)


async def _open_loop(clients: list[AsyncZephyrClient], level: _Level, gaps: Callable[[], float], cap: int) -> None:
    tasks: set[asyncio.Future[None]] = set()
    slots = asyncio.Semaphore(cap)
    next_at = level.started
    loop = asyncio.get_running_loop()

    async def one(prompt: BenchPrompt, record: RequestRecord) -> None:
        try:
            await _request(clients[len(level.records) % len(clients)], prompt, record, level)
        finally:
            slots.release()

    while True:
        next_at += gaps()
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if not level.may_start():
            break
        # A saturated server holds requests longer than the rate allows; the cap keeps memory bounded.
        await slots.acquire()
        prompt, record = level.next_record()
        task = loop.create_task(one(prompt, record))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await _gather_with_drain(list(tasks), level)


async def _gather_with_drain(tasks: Sequence[asyncio.Future[None]], level: _Level) -> None:
    """Wait for the tasks; past the level's deadline allow `drain_seconds` more, then cancel the rest."""
    if not tasks:
        return
    try:
        remaining = level.remaining()
        timeout = None if remaining is None else remaining + level._bounds.drain_seconds
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        raise


async def _with_progress(
    level: _Level, label: str, work: Awaitable[None], on_progress: ProgressCallback | None
) -> None:
    if on_progress is None:
        await work
        return

    async def ticker() -> None:
        last_tokens, last_time = 0, level.started
        while True:
            await asyncio.sleep(_PROGRESS_EVERY)
            now = time.perf_counter()
            # Tokens of finished requests plus those streaming now, so the rate is live.
            tokens = level.tokens + sum(len(r.token_times) for r in level.records if r.ended is None)
            rate = (tokens - last_tokens) / max(now - last_time, 1e-9)
            last_tokens, last_time = tokens, now
            done = sum(1 for r in level.records if r.ended is not None)
            errors = sum(1 for r in level.records if r.error is not None)
            on_progress(Progress(label, now - level.started, done, level.in_flight, errors, rate))

    task = asyncio.ensure_future(ticker())
    try:
        await work
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _work(
    clients: list[AsyncZephyrClient], level: _Level, profile: Concurrent | Constant | Poisson, bounds: Bounds
) -> Awaitable[None]:
    """The coroutine sending one level's requests at the profile's pace."""
    if isinstance(profile, Concurrent):
        return _closed_loop(clients, level, profile.users)
    rate = profile.rate
    if isinstance(profile, Constant):
        return _open_loop(clients, level, lambda: 1.0 / rate, bounds.max_in_flight)
    return _open_loop(clients, level, poisson_gaps(profile), bounds.max_in_flight)


def poisson_gaps(profile: Poisson) -> Callable[[], float]:
    """The seconds between one arrival and the next of a Poisson profile: exponential, and the same sequence
    for the same seed."""
    rng = random.Random(profile.seed)
    rate = profile.rate
    return lambda: rng.expovariate(rate)


def _label(profile: Concurrent | Constant | Poisson) -> str:
    if isinstance(profile, Concurrent):
        return f"{profile.users} user{'s' if profile.users != 1 else ''}"
    return f"{profile.kind} {profile.rate:g} req/s"


async def run_step(
    client: Clients,
    prompts: Sequence[BenchPrompt],
    profile: Concurrent | Constant | Poisson,
    *,
    bounds: Bounds | None = None,
    slo: SLO | None = None,
    on_progress: ProgressCallback | None = None,
    records: list[RequestRecord] | None = None,
) -> StepResult:
    """Run one load level and summarise it.

    Pass several clients for the same server (`open_clients`) above `USERS_PER_CLIENT` concurrent requests.

    Pass `records` (an empty list) to keep the raw records; when the task is cancelled (Ctrl-C) they hold
    what was measured until then.

    Args:
        client: A client for the server, or several for the same server (`open_clients`) above
            `USERS_PER_CLIENT` concurrent requests.
        prompts: The prompts, sent in turn (cycled when the load needs more).
        profile: How requests are sent: `Concurrent`, `Constant` or `Poisson` (a sweep is `run_load`'s).
        bounds: When the level ends; default `Bounds()`.
        slo: The latency target the step is judged by; default `SLO()`.
        on_progress: Called twice a second with the level's live counters.
        records: A list the raw request records are appended to.

    Returns:
        The level's metrics.
    """
    if not prompts:
        raise ConfigurationError("a load test needs at least one prompt")
    bounds = bounds or Bounds()
    slo = slo or SLO()
    clients = _as_list(client)
    # A client reads /info once before its first generation; doing it here keeps it off the first TTFT.
    for each in clients:
        await each.info()
    level = _Level(prompts, bounds, time.perf_counter)
    if records is not None:
        level.records = records
    label = _label(profile)
    # CPU of this whole process: an in-process emulator (as in tests) counts too, so it is an upper bound.
    cpu = time.process_time()
    await _with_progress(level, label, _work(clients, level, profile, bounds), on_progress)
    cpu = time.process_time() - cpu
    users = profile.users if isinstance(profile, Concurrent) else None
    rate_value = None if isinstance(profile, Concurrent) else profile.rate
    return summarize(level.records, slo, label=label, users=users, rate=rate_value, client_cpu_seconds=cpu)


def saturated(previous: StepResult, current: StepResult, sweep: Sweep) -> bool:
    """Latency climbed while throughput stopped growing (the sweep's early stop)."""
    if previous.ttft is None or current.ttft is None:
        return current.successful == 0
    gain = current.output_tokens_per_second / max(previous.output_tokens_per_second, 1e-9) - 1
    load_growth = (current.users or 1) / (previous.users or 1) - 1
    growth = current.ttft.median / max(previous.ttft.median, 1e-9)
    return gain < sweep.min_throughput_gain * load_growth and growth > sweep.latency_growth


async def run_load(
    client: Clients,
    prompts: Sequence[BenchPrompt],
    profile: Profile,
    *,
    bounds: Bounds | None = None,
    slo: SLO | None = None,
    on_progress: ProgressCallback | None = None,
    on_step: Callable[[LoadResult], None] | None = None,
    processes: int = 1,
    api_key: str | None = None,
) -> LoadResult:
    """Run a profile against the client's server; a sweep runs one step per user count.

    With `processes` > 1 each step is shared by that many worker processes, each with its own client for
    `client.base_url` (and `api_key`), for loads one process cannot generate alone (see docs/bench.md).

    `on_step` receives the result so far after every step (to save it: an interrupted run keeps what it
    measured). On cancellation (Ctrl-C) the step under way is summarised from what it measured, marked
    `interrupted`, passed to `on_step`, and the cancellation propagates.

    Args:
        client: A client for the server, or several for the same server (`open_clients`) above
            `USERS_PER_CLIENT` concurrent requests.
        prompts: The prompts, sent in turn (cycled when the load needs more).
        profile: How requests are sent: `Concurrent`, `Constant`, `Poisson` or `Sweep`.
        bounds: When each load level ends; default `Bounds()`.
        slo: The latency target the steps are judged by; default `SLO()`.
        on_progress: Called twice a second with the level running now.
        on_step: Called with the result so far after every step.
        processes: Worker processes sharing each load level.
        api_key: The api key of the worker processes' clients (with `processes` > 1).

    Returns:
        Every step's metrics, and the users meeting the SLO and the saturation point they show.

    Raises:
        ConfigurationError: no prompts, or a load the worker `processes` cannot share.
    """
    bounds = bounds or Bounds()
    slo = slo or SLO()
    clients = _as_list(client)
    levels: list[Concurrent | Constant | Poisson]
    levels = [Concurrent(users=n) for n in profile.levels()] if isinstance(profile, Sweep) else [profile]
    steps: list[StepResult] = []
    saturation: int | None = None

    def result(interrupted: bool = False) -> LoadResult:
        meeting = [s.users for s in steps if s.meets_slo and s.users is not None]
        engine = clients[0].engine
        return LoadResult(
            url=clients[0].base_url,
            engine=None if engine == "auto" else engine,
            profile=profile,
            bounds=bounds,
            slo=slo,
            steps=list(steps),
            saturation_users=saturation,
            users_meeting_slo=max(meeting, default=None),
            interrupted=interrupted,
        )

    for level in levels:
        records: list[RequestRecord] = []
        try:
            if processes > 1:
                from ._workers import run_step_in_processes

                await clients[0].info()  # fail here, in the parent, when the server is not there
                step = await run_step_in_processes(
                    clients[0].base_url, prompts, level, processes=processes, api_key=api_key, bounds=bounds, slo=slo,
                    on_progress=on_progress, records=records, engine=check_engine_setting(clients[0].engine),
                )  # fmt: skip
            else:
                step = await run_step(
                    clients, prompts, level, bounds=bounds, slo=slo, on_progress=on_progress, records=records
                )
        except asyncio.CancelledError:
            label = _label(level)
            users = level.users if isinstance(level, Concurrent) else None
            rate = None if isinstance(level, Concurrent) else level.rate
            if any(r.ended is not None for r in records):
                steps.append(summarize(records, slo, label=label, users=users, rate=rate, interrupted=True))
            if on_step is not None:
                on_step(result(interrupted=True))
            raise
        steps.append(step)
        if isinstance(profile, Sweep) and len(steps) >= 2 and saturated(steps[-2], step, profile):
            saturation = steps[-2].users
            if on_step is not None:
                on_step(result())
            break
        if on_step is not None:
            on_step(result())
    return result()
