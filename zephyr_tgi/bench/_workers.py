"""Spreading one load level over worker processes, when one process cannot generate the load alone.

Each worker runs its share of the users (or of the request rate) with its own `AsyncZephyrClient` and
event loop; the parent starts them together, shows their summed progress and merges their records. Times are
`time.perf_counter()`, which on Linux and macOS is the system-wide monotonic clock, so records from different
processes share one time line.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import queue
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

from .._engines import EngineSetting
from .._errors import ConfigurationError
from ._metrics import SLO, RequestRecord, StepResult, summarize
from ._profiles import Bounds, Concurrent, Constant, Poisson
from ._prompts import BenchPrompt
from ._runner import Progress, ProgressCallback, _label, _Level, _with_progress, _work

__all__ = ["run_step_in_processes", "split_profile"]

_START_TIMEOUT = 120.0
_PROGRESS_EVERY = 0.5
# Per worker: tokens received, requests finished, errors, requests in flight.
_COUNTERS = 4


def split_profile(profile: Concurrent | Constant | Poisson, processes: int) -> list[Concurrent | Constant | Poisson]:
    """One profile per worker, adding up to `profile`: users shared out, rates divided.

    N Poisson processes of rate r/N add up to one of rate r; their seeds differ so they do not move in step.
    """
    if isinstance(profile, Concurrent):
        if profile.users < processes:
            raise ConfigurationError(f"{profile.users} users cannot be shared by {processes} worker processes")
        share, extra = divmod(profile.users, processes)
        return [Concurrent(users=share + (1 if i < extra else 0)) for i in range(processes)]
    if isinstance(profile, Constant):
        return [Constant(rate=profile.rate / processes) for _ in range(processes)]
    return [Poisson(rate=profile.rate / processes, seed=profile.seed * 1000 + i) for i in range(processes)]


def _split_bounds(bounds: Bounds, processes: int, index: int) -> Bounds:
    if bounds.max_requests is None:
        return bounds
    share, extra = divmod(bounds.max_requests, processes)
    return bounds.model_copy(update={"max_requests": max(share + (1 if index < extra else 0), 1)})


def _worker(
    index: int,
    url: str,
    api_key: str | None,
    engine: EngineSetting,
    prompts: list[dict[str, Any]],
    profile: dict[str, Any],
    bounds: dict[str, Any],
    start: Any,
    stop: Any,
    counters: Any,
    results: Any,
) -> None:
    """A worker process: wait for the start, run its share, send back its records as plain tuples."""
    # Ctrl-C reaches the whole process group; the parent decides, and tells the workers through `stop`.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        records, cpu = asyncio.run(
            _worker_main(index, url, api_key, engine, prompts, profile, bounds, start, stop, counters)
        )
        rows = [(r.started, r.input_tokens, r.token_times, r.ended, r.error) for r in records]
        results.put((index, rows, cpu, None))
    except BaseException as exc:  # reported to the parent, which raises it there
        results.put((index, [], 0.0, f"{type(exc).__name__}: {exc}"))


async def _worker_main(
    index: int,
    url: str,
    api_key: str | None,
    engine: EngineSetting,
    prompts_data: list[dict[str, Any]],
    profile_data: dict[str, Any],
    bounds_data: dict[str, Any],
    start: Any,
    stop: Any,
    counters: Any,
) -> tuple[list[RequestRecord], float]:
    """The records of this worker's share, and the CPU seconds it spent generating it."""
    from pydantic import TypeAdapter

    from ._runner import open_clients

    prompts = [BenchPrompt.model_validate(p) for p in prompts_data]
    profile: Concurrent | Constant | Poisson = TypeAdapter(Concurrent | Constant | Poisson).validate_python(
        profile_data
    )
    bounds = Bounds.model_validate(bounds_data)
    users = profile.users if isinstance(profile, Concurrent) else bounds.max_in_flight
    async with open_clients(url, users, api_key=api_key, engine=engine) as clients:
        for client in clients:
            await client.info()
        await asyncio.to_thread(start.wait, _START_TIMEOUT)
        level = _Level(prompts, bounds, time.perf_counter, stop=stop.is_set)
        base = index * _COUNTERS

        def publish(update: Progress) -> None:
            counters[base] = level.tokens + sum(len(r.token_times) for r in level.records if r.ended is None)
            counters[base + 1] = update.requests_done
            counters[base + 2] = update.errors
            counters[base + 3] = update.in_flight

        cpu = time.process_time()
        await _with_progress(level, "", _work(clients, level, profile, bounds), publish)
        return level.records, time.process_time() - cpu


async def run_step_in_processes(
    url: str,
    prompts: Sequence[BenchPrompt],
    profile: Concurrent | Constant | Poisson,
    *,
    processes: int,
    api_key: str | None = None,
    bounds: Bounds | None = None,
    slo: SLO | None = None,
    on_progress: ProgressCallback | None = None,
    records: list[RequestRecord] | None = None,
    engine: EngineSetting = "auto",
) -> StepResult:
    """Like `run_step`, with the load shared by `processes` worker processes (each with its own client).

    `engine` is the engine serving `url` (the parent's client already knows it: the workers need not ask).

    Cancelling (Ctrl-C) tells the workers to start no more requests; they finish the ones under way (within
    the bounds' `drain_seconds`) and send what they measured into `records` before the cancellation
    propagates.
    """
    if processes < 1:
        raise ConfigurationError(f"processes must be >= 1, got {processes}")
    if not prompts:
        raise ConfigurationError("a load test needs at least one prompt")
    bounds = bounds or Bounds()
    slo = slo or SLO()
    shares = split_profile(profile, processes)
    # spawn, not fork: the parent may run threads (an emulator, the event loop's executor).
    context = multiprocessing.get_context("spawn")
    # Every worker, and the parent, meet here once the workers have imported, connected and read /info.
    start = context.Barrier(processes + 1)
    stop = context.Event()
    counters = context.Array("q", processes * _COUNTERS, lock=False)
    results = context.Queue()
    prompts_data = [p.model_dump() for p in prompts]
    workers = [
        context.Process(
            target=_worker,
            args=(
                i,
                url,
                api_key,
                engine,
                prompts_data,
                shares[i].model_dump(),
                _split_bounds(bounds, processes, i).model_dump(),
                start,
                stop,
                counters,
                results,
            ),
            name=f"zephyr-tgi-bench-{i}",
            daemon=True,
        )
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    collected: dict[int, tuple[list[tuple[Any, ...]], float, str | None]] = {}
    try:
        try:
            await asyncio.to_thread(start.wait, _START_TIMEOUT)
        except threading.BrokenBarrierError:
            dead = sum(1 for worker in workers if not worker.is_alive())
            raise ConfigurationError(
                f"the {processes} bench worker processes did not all start ({dead} exited, the others waited "
                f"up to {_START_TIMEOUT:g} s); workers are spawned, so a script calling this needs an "
                "`if __name__ == '__main__':` guard"
            ) from None
        started = time.perf_counter()
        last_tokens, last_time = 0, started
        while len(collected) < processes:
            try:
                index, rows, cpu, error = await asyncio.to_thread(results.get, True, _PROGRESS_EVERY)
                collected[index] = (rows, cpu, error)
            except queue.Empty:
                pass
            if not any(w.is_alive() for w in workers) and results.empty() and len(collected) < processes:
                raise ConfigurationError("a bench worker process died without reporting its results")
            if on_progress is not None:
                now = time.perf_counter()
                tokens = sum(counters[i * _COUNTERS] for i in range(processes))
                rate = (tokens - last_tokens) / max(now - last_time, 1e-9)
                last_tokens, last_time = tokens, now
                on_progress(
                    Progress(
                        f"{_label(profile)} in {processes} processes",
                        now - started,
                        sum(counters[i * _COUNTERS + 1] for i in range(processes)),
                        sum(counters[i * _COUNTERS + 3] for i in range(processes)),
                        sum(counters[i * _COUNTERS + 2] for i in range(processes)),
                        rate,
                    )
                )
    except asyncio.CancelledError:
        stop.set()
        deadline = time.monotonic() + bounds.drain_seconds + 10
        while len(collected) < processes and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                index, rows, cpu, error = await asyncio.shield(asyncio.to_thread(results.get, True, 1.0))
                collected[index] = (rows, cpu, error)
        if records is not None:
            records.extend(_records(collected))
        raise
    finally:
        start.abort()  # a worker still waiting at the barrier stops waiting
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.terminate()
    errors = [error for _rows, _cpu, error in collected.values() if error is not None]
    if errors:
        raise ConfigurationError(f"a bench worker process failed: {errors[0]}")
    merged = _records(collected)
    if records is not None:
        records.extend(merged)
    return summarize(
        merged,
        slo,
        label=_label(profile),
        users=_users(profile),
        rate=_rate(profile),
        processes=processes,
        client_cpu_seconds=sum(cpu for _rows, cpu, _error in collected.values()),
    )


def _records(collected: dict[int, tuple[list[tuple[Any, ...]], float, str | None]]) -> list[RequestRecord]:
    return [
        RequestRecord(started=row[0], input_tokens=row[1], token_times=list(row[2]), ended=row[3], error=row[4])
        for rows, _cpu, _error in collected.values()
        for row in rows
    ]


def _users(profile: Concurrent | Constant | Poisson) -> int | None:
    return profile.users if isinstance(profile, Concurrent) else None


def _rate(profile: Concurrent | Constant | Poisson) -> float | None:
    return None if isinstance(profile, Concurrent) else profile.rate
