"""Benchmark plumbing: a TGI-speaking server in its own process, CPU/latency measurement, statistics."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

_LISTENING = re.compile(r"Listening on http://[^:]+:(\d+)")


@contextmanager
def emulator_process(*extra_args: str) -> Iterator[str]:
    """Start `python -m zephyr_tgi.testing` in a separate process (its CPU is not the client's) and yield its URL."""
    with listening_process("-m", "zephyr_tgi.testing", "--hostname", "127.0.0.1", "--port", "0", *extra_args) as url:
        yield url


@contextmanager
def raw_server(kind: str, *extra_args: str) -> Iterator[str]:
    """Start one of benchmarks/servers.py's raw servers in a separate process and yield its URL."""
    with listening_process("-m", "benchmarks.servers", kind, *extra_args) as url:
        yield url


@contextmanager
def listening_process(*python_args: str) -> Iterator[str]:
    """Run `python *python_args` until it prints `Listening on http://host:PORT`; yield that URL; stop it."""
    process = subprocess.Popen(
        [sys.executable, *python_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        url = None
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"{python_args} exited with {process.wait()} before listening")
            match = _LISTENING.search(line)
            if match:
                url = f"http://127.0.0.1:{match.group(1)}"
        if url is None:
            raise RuntimeError(f"{python_args} did not start within 30 s")
        # Drain its output in the background so a full pipe never blocks it.
        threading.Thread(target=lambda: [None for _ in process.stdout or ()], daemon=True).start()
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def reset_stats(url: str) -> None:
    """Clear the emulator's counters (admin route)."""
    httpx2.post(f"{url}/__emulator__/reset", timeout=10)


def server_stats(url: str) -> dict[str, Any]:
    """The emulator's counters (admin route), e.g. max_in_flight."""
    data: dict[str, Any] = json.loads(httpx2.get(f"{url}/__emulator__/stats", timeout=10).text)
    data.pop("requests", None)
    return data


@dataclass
class Measurement:
    """CPU seconds of this process and wall-clock latencies of the calls of one run."""

    name: str
    units: int  # requests or tokens the CPU is divided by
    cpu_seconds: float
    wall_seconds: float
    latencies: list[float] = field(default_factory=list)

    @property
    def cpu_us_per_unit(self) -> float:
        return 1e6 * self.cpu_seconds / self.units


def measure(name: str, units: int, run: Callable[[list[float]], None]) -> Measurement:
    """Run `run(latencies)` once, measuring this process's CPU time (all threads) and wall time."""
    latencies: list[float] = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    run(latencies)
    return Measurement(name, units, time.process_time() - cpu0, time.perf_counter() - wall0, latencies)


def median_run(runs: list[Measurement]) -> dict[str, Any]:
    """Summary over repeated runs: the median CPU per unit (robust to a noisy neighbour) and latency percentiles."""
    latencies = sorted(x for run in runs for x in run.latencies)

    def pct(q: float) -> float | None:
        if not latencies:
            return None
        return 1e3 * latencies[min(len(latencies) - 1, round(q * (len(latencies) - 1)))]

    return {
        "cpu_us_per_unit": statistics.median(run.cpu_us_per_unit for run in runs),
        "cpu_us_per_unit_runs": [round(run.cpu_us_per_unit, 2) for run in runs],
        "wall_s": statistics.median(run.wall_seconds for run in runs),
        "latency_ms": {"p50": pct(0.5), "p95": pct(0.95), "p99": pct(0.99)},
    }


def interleaved(
    contenders: dict[str, Callable[[], Measurement]], rounds: int, *, budget_s: float = 120.0
) -> dict[str, dict[str, Any]]:
    """Run the contenders in turn, `rounds` times, so drifting machine load hits them all alike.

    No new round starts once `budget_s` seconds have passed (one round always runs): a loaded machine makes
    the run shorter, not endless. Each summary says how many rounds it is the median of.
    """
    runs: dict[str, list[Measurement]] = {name: [] for name in contenders}
    deadline = time.monotonic() + budget_s
    for index in range(rounds):
        if index and time.monotonic() > deadline:
            break
        for name, run in contenders.items():
            runs[name].append(run())
    summaries = {name: median_run(measured) for name, measured in runs.items()}
    for summary in summaries.values():
        summary["rounds"] = len(runs[next(iter(runs))])
    return summaries


def rss_bytes() -> int:
    """This process's resident set size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: how busy the machine was (other processes skew CPU figures)."""
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
