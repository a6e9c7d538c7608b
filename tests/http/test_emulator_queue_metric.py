"""The emulator's `/metrics` reports its performance model's real queue, in each engine's names, over HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from zephyr_tgi import MetricsSummary, ZephyrClient
from zephyr_tgi._engines import EngineName
from zephyr_tgi.testing import TGIEmulator
from zephyr_tgi.testing._performance import PerformanceModel

# Each request reserves 3,000+ of the batch's 4,096 tokens: one runs at a time, the others queue.
BATCH = PerformanceModel(max_batch_total_tokens=4096, decode_step_base=0.01)
REQUESTS = 4


def _fill(server: TGIEmulator, engine: str) -> list[threading.Thread]:
    body: dict[str, Any]
    if engine == "tgi":
        path, body = "/generate", {"inputs": "Tell me a story", "parameters": {"max_new_tokens": 3000}}
    else:
        path, body = "/v1/completions", {"model": "zephyr", "prompt": "Tell me a story", "max_tokens": 3000}
    threads = [
        threading.Thread(target=lambda: httpx.post(server.url + path, json=body, timeout=30)) for _ in range(REQUESTS)
    ]
    for thread in threads:
        thread.start()
    return threads


def _poll(client: ZephyrClient, done: Callable[[MetricsSummary], bool]) -> MetricsSummary:
    give_up = time.monotonic() + 10
    summary = client.metrics_summary()
    while not done(summary) and time.monotonic() < give_up:
        time.sleep(0.01)
        summary = client.metrics_summary()
    return summary


@pytest.mark.parametrize("engine", ["tgi", "vllm", "sglang"])
def test_metrics_report_the_requests_waiting_for_a_batch_slot(engine: EngineName) -> None:
    with TGIEmulator(engine=engine, performance=BATCH) as server, ZephyrClient(server.url, engine=engine) as client:
        idle = client.metrics_summary()
        assert (idle.requests_waiting, idle.requests_running) == (0, 0)
        threads = _fill(server, engine)
        busy = _poll(client, lambda s: s.requests_waiting == REQUESTS - 1)
        assert (busy.requests_waiting, busy.requests_running) == (REQUESTS - 1, 1)
        seen = {busy.requests_waiting}

        def drained_yet(summary: MetricsSummary) -> bool:
            seen.add(summary.requests_waiting)
            return summary.requests_waiting == 0

        drained = _poll(client, drained_yet)
        for thread in threads:
            thread.join(timeout=30)
        assert drained.requests_waiting == 0
        assert seen >= {REQUESTS - 1, 0}  # it went down as the batch took them, not a constant
        assert client.metrics_summary().requests_running == 0


def test_without_a_performance_model_nothing_queues() -> None:
    # token_latency keeps requests in flight; with no batch model each one runs at once.
    with TGIEmulator(engine="tgi", token_latency=0.05) as server, ZephyrClient(server.url, engine="tgi") as client:
        body = {"inputs": "Hi", "parameters": {"max_new_tokens": 20}}
        threads = [
            threading.Thread(target=lambda: httpx.post(server.url + "/generate", json=body, timeout=30))
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        summary = _poll(client, lambda s: s.requests_running == 3)
        for thread in threads:
            thread.join(timeout=30)
        assert (summary.requests_waiting, summary.requests_running) == (0, 3)
