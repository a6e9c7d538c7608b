"""The measured scenarios: zephyr_tgi against bare huggingface_hub and a raw httpx2 loop (the floor)."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx2
from huggingface_hub import AsyncInferenceClient, InferenceClient, get_session

from benchmarks.harness import Measurement, interleaved, measure, reset_stats, rss_bytes, server_stats
from zephyr_tgi import AsyncZephyrClient, GenerationResult, ZephyrClient, render_prompt

QUESTION = "Tell me about GPTQ quantisation."
# What zephyr_tgi sends for QUESTION (the card's empty system block); the others send the same bytes.
PROMPT = render_prompt([{"role": "system", "content": ""}, {"role": "user", "content": QUESTION}])
# huggingface_hub's documented opt-out of sending the saved HF token; zephyr_tgi does the same.
HUB_OPTIONS: dict[str, Any] = {"headers": {"authorization": None}}


def _hub_sync(url: str) -> InferenceClient:
    return InferenceClient(url, **HUB_OPTIONS)


def nonstream(url: str, *, requests: int, rounds: int) -> dict[str, Any]:
    """Non-streaming chat with a short answer: client CPU per request."""
    ours, hub, session = ZephyrClient(url), _hub_sync(url), get_session()
    params = {"max_new_tokens": 16, "details": True, "stop": ["</s>"]}

    def timed(call: Callable[[], object]) -> Callable[[list[float]], None]:
        def run(latencies: list[float]) -> None:
            for _ in range(requests):
                start = time.perf_counter()
                call()
                latencies.append(time.perf_counter() - start)

        return run

    contenders: dict[str, Callable[[], Measurement]] = {
        "zephyr_tgi": lambda: measure("zephyr_tgi", requests, timed(lambda: ours.chat(QUESTION, max_new_tokens=16))),
        "huggingface_hub": lambda: measure(
            "huggingface_hub",
            requests,
            timed(
                lambda: hub.text_generation(
                    PROMPT, model=f"{url}/generate", details=True, max_new_tokens=16, stop=["</s>"]
                )
            ),
        ),
        "httpx2 floor": lambda: measure(
            "httpx2 floor",
            requests,
            timed(lambda: session.post(f"{url}/generate", json={"inputs": PROMPT, "parameters": params}).json()),
        ),
    }
    for contender in contenders.values():  # warm up connections and lazy imports
        contender()
    return interleaved(contenders, rounds)


def stream(url: str, *, streams: int, tokens: int, rounds: int) -> dict[str, Any]:
    """Streaming `tokens` tokens: client CPU per token."""
    ours, hub, session = ZephyrClient(url), _hub_sync(url), get_session()
    payload = {"inputs": PROMPT, "parameters": {"max_new_tokens": tokens, "details": True, "stop": ["</s>"]}}
    units = streams * tokens

    def ours_run(latencies: list[float]) -> None:
        for _ in range(streams):
            start = time.perf_counter()
            count = sum(1 for _ in ours.generate_stream(PROMPT, max_new_tokens=tokens))
            latencies.append(time.perf_counter() - start)
            assert count == tokens, count

    def hub_run(latencies: list[float]) -> None:
        for _ in range(streams):
            start = time.perf_counter()
            events = hub.text_generation(
                PROMPT, model=f"{url}/generate_stream", stream=True, details=True, max_new_tokens=tokens, stop=["</s>"]
            )
            count = sum(1 for _ in events)
            latencies.append(time.perf_counter() - start)
            assert count == tokens, count

    def raw_run(latencies: list[float]) -> None:
        for _ in range(streams):
            start = time.perf_counter()
            count = 0
            with session.stream("POST", f"{url}/generate_stream", json=payload) as response:
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        json.loads(line[5:])
                        count += 1
            latencies.append(time.perf_counter() - start)
            assert count == tokens, count

    contenders = {
        "zephyr_tgi": lambda: measure("zephyr_tgi", units, ours_run),
        "huggingface_hub": lambda: measure("huggingface_hub", units, hub_run),
        "httpx2 floor": lambda: measure("httpx2 floor", units, raw_run),
    }
    return interleaved(contenders, rounds)


async def _gather_streams(concurrency: int, one: Any) -> list[float]:
    latencies: list[float] = []

    async def timed() -> None:
        start = time.perf_counter()
        await one()
        latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(timed() for _ in range(concurrency)))
    return latencies


def async_streams(url: str, *, concurrency: int, tokens: int, rounds: int) -> dict[str, Any]:
    """`concurrency` simultaneous async streams of `tokens` tokens: client CPU per token."""
    payload = {"inputs": PROMPT, "parameters": {"max_new_tokens": tokens, "details": True, "stop": ["</s>"]}}
    units = concurrency * tokens

    async def ours() -> list[float]:
        async with AsyncZephyrClient(url) as client:

            async def one() -> None:
                count = 0
                async for _ in client.generate_stream(PROMPT, max_new_tokens=tokens):
                    count += 1
                assert count == tokens, count

            return await _gather_streams(concurrency, one)

    async def hub() -> list[float]:
        async with AsyncInferenceClient(url, **HUB_OPTIONS) as client:

            async def one() -> None:
                count = 0
                events = await client.text_generation(
                    PROMPT,
                    model=f"{url}/generate_stream",
                    stream=True,
                    details=True,
                    max_new_tokens=tokens,
                    stop=["</s>"],
                )
                async for _ in events:
                    count += 1
                assert count == tokens, count

            return await _gather_streams(concurrency, one)

    async def raw() -> list[float]:
        async with httpx2.AsyncClient(timeout=None) as client:

            async def one() -> None:
                count = 0
                async with client.stream("POST", f"{url}/generate_stream", json=payload) as response:
                    async for line in response.aiter_lines():
                        if line.startswith("data:"):
                            json.loads(line[5:])
                            count += 1
                assert count == tokens, count

            return await _gather_streams(concurrency, one)

    def run(name: str, body: Any) -> Measurement:
        return measure(name, units, lambda latencies: latencies.extend(asyncio.run(body())))

    contenders = {
        "zephyr_tgi": lambda: run("zephyr_tgi", ours),
        "huggingface_hub": lambda: run("huggingface_hub", hub),
        "httpx2 floor": lambda: run("httpx2 floor", raw),
    }
    return interleaved(contenders, rounds)


def batch(url: str, *, prompts: int, concurrency: int, rounds: int) -> dict[str, Any]:
    """`batch_chat` of many prompts against hand-written bounded fan-outs; the server counts what is in flight."""
    questions = [f"{QUESTION} ({i})" for i in range(prompts)]
    rendered = [render_prompt([{"role": "system", "content": ""}, {"role": "user", "content": q}]) for q in questions]
    params = {"max_new_tokens": 16, "details": True, "stop": ["</s>"]}
    observed: dict[str, int] = {}

    async def ours() -> None:
        async with AsyncZephyrClient(url) as client:
            results = await client.batch_chat(questions, concurrency=concurrency, progress=False, max_new_tokens=16)
        assert all(isinstance(r, GenerationResult) for r in results)

    async def hub() -> None:
        limit = asyncio.Semaphore(concurrency)
        async with AsyncInferenceClient(url, **HUB_OPTIONS) as client:

            async def one(prompt: str) -> Any:
                async with limit:
                    return await client.text_generation(prompt, model=f"{url}/generate", **params)

            await asyncio.gather(*(one(p) for p in rendered))

    async def raw() -> None:
        limit = asyncio.Semaphore(concurrency)
        async with httpx2.AsyncClient(timeout=None) as client:

            async def one(prompt: str) -> Any:
                async with limit:
                    response = await client.post(f"{url}/generate", json={"inputs": prompt, "parameters": params})
                    return response.json()

            await asyncio.gather(*(one(p) for p in rendered))

    def run(name: str, body: Any) -> Measurement:
        reset_stats(url)
        measured = measure(name, prompts, lambda _: asyncio.run(body()))
        observed[name] = int(server_stats(url)["max_in_flight"])
        return measured

    summary = interleaved(
        {
            "zephyr_tgi": lambda: run("zephyr_tgi", ours),
            "huggingface_hub": lambda: run("huggingface_hub", hub),
            "httpx2 floor": lambda: run("httpx2 floor", raw),
        },
        rounds,
    )
    for name, result in summary.items():
        result["server_max_in_flight"] = observed[name]
    return summary


def import_time(*, runs: int) -> dict[str, Any]:
    """Seconds to import, in a fresh interpreter each time (median of `runs`)."""
    statements = {
        "import zephyr_tgi": "import zephyr_tgi",
        "import huggingface_hub": "import huggingface_hub",
        "from zephyr_tgi import ZephyrClient (+ first client)": (
            "from zephyr_tgi import ZephyrClient; ZephyrClient('http://127.0.0.1:9')"
        ),
        "from huggingface_hub import InferenceClient (+ first client)": (
            "from huggingface_hub import InferenceClient; InferenceClient('http://127.0.0.1:9')"
        ),
    }
    code = "import time; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"
    result: dict[str, Any] = {}
    for label, stmt in statements.items():
        samples = [
            float(
                subprocess.run(
                    [sys.executable, "-c", code.format(stmt=stmt)], capture_output=True, text=True, check=True
                ).stdout
            )
            for _ in range(runs)
        ]
        result[label] = {"median_ms": 1e3 * statistics.median(samples), "runs_ms": [round(1e3 * s, 2) for s in samples]}
    return result


def memory(url: str, *, requests: int) -> dict[str, Any]:
    """RSS growth of this process over `requests` requests (9 in 10 chat, 1 in 10 chat_stream), after warm-up."""
    client = ZephyrClient(url)
    for _ in range(300):
        client.chat(QUESTION, max_new_tokens=8)
        list(client.chat_stream(QUESTION, max_new_tokens=8))
    import gc

    gc.collect()
    before = rss_bytes()
    for index in range(requests):
        if index % 10 == 9:
            list(client.chat_stream(QUESTION, max_new_tokens=8))
        else:
            client.chat(QUESTION, max_new_tokens=8)
    gc.collect()
    after = rss_bytes()
    return {
        "requests": requests,
        "rss_before_mb": before / 2**20,
        "rss_after_mb": after / 2**20,
        "growth_mb": (after - before) / 2**20,
    }
