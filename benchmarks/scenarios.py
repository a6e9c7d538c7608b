"""The measured scenarios: zephyr_tgi against bare huggingface_hub and a raw httpx2 loop (the floor)."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
from huggingface_hub import AsyncInferenceClient, InferenceClient

from benchmarks.harness import Measurement, interleaved, measure, reset_stats, rss_bytes, server_stats
from zephyr_tgi import AsyncZephyrClient, Conversation, GenerationResult, ZephyrClient, render_prompt

QUESTION = "Tell me about GPTQ quantisation."
# What zephyr_tgi sends for QUESTION (the card's empty system block); the others send the same bytes.
PROMPT = render_prompt([{"role": "system", "content": ""}, {"role": "user", "content": QUESTION}])
# huggingface_hub's documented opt-out of sending the saved HF token; zephyr_tgi does the same.
HUB_OPTIONS: dict[str, Any] = {"headers": {"authorization": None}}


def _hub_sync(url: str) -> InferenceClient:
    return InferenceClient(url, **HUB_OPTIONS)


def _floor_client() -> httpx2.Client:
    """The floor's client: a plain httpx2.Client (no event hooks, no retries), as lean as a request gets."""
    return httpx2.Client(timeout=None)


def nonstream(url: str, *, requests: int, rounds: int) -> dict[str, Any]:
    """Non-streaming chat with a short answer: client CPU per request."""
    ours, hub, session = ZephyrClient(url), _hub_sync(url), _floor_client()
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
    ours, hub, session = ZephyrClient(url), _hub_sync(url), _floor_client()
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

    contenders: dict[str, Callable[[], Measurement]] = {
        "zephyr_tgi": lambda: measure("zephyr_tgi", units, ours_run),
        "huggingface_hub": lambda: measure("huggingface_hub", units, hub_run),
        "httpx2 floor": lambda: measure("httpx2 floor", units, raw_run),
    }
    for contender in contenders.values():  # warm up connections and lazy imports
        contender()
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
    """Seconds to import, in a fresh interpreter each time (median of `runs`).

    Both packages are measured as installed: pip compiles an installed package's bytecode, and so it did for
    huggingface_hub, but this checkout of zephyr_tgi is an editable install, whose bytecode exists only once
    some interpreter wrote it, and never where PYTHONDONTWRITEBYTECODE is set (as on this project's machines).
    It is compiled first, so no fresh interpreter compiles zephyr_tgi from source.
    """
    import compileall

    import zephyr_tgi

    compileall.compile_dir(str(Path(zephyr_tgi.__file__).parent), quiet=1)
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


def memory(url: str, *, requests: int, budget_s: float = 240.0) -> dict[str, Any]:
    """RSS growth of this process over `requests` requests (9 in 10 chat, 1 in 10 chat_stream), after warm-up.

    Stops early (and says so in `requests`) if `budget_s` seconds pass first.
    """
    client = ZephyrClient(url)
    for _ in range(300):
        client.chat(QUESTION, max_new_tokens=8)
        list(client.chat_stream(QUESTION, max_new_tokens=8))
    import gc

    gc.collect()
    before = rss_bytes()
    deadline = time.monotonic() + budget_s
    done = 0
    for index in range(requests):
        if index % 100 == 0 and time.monotonic() > deadline:
            break
        if index % 10 == 9:
            list(client.chat_stream(QUESTION, max_new_tokens=8))
        else:
            client.chat(QUESTION, max_new_tokens=8)
        done += 1
    gc.collect()
    after = rss_bytes()
    return {
        "requests": done,
        "rss_before_mb": before / 2**20,
        "rss_after_mb": after / 2**20,
        "growth_mb": (after - before) / 2**20,
    }


def _turn_text(turn: int) -> str:
    """A user turn of about 30 tokens."""
    return (
        f"Turn {turn}: in two sentences, tell me one more thing about GPTQ quantisation of Zephyr-7B, "
        "for instance about group size, act-order or the VRAM it needs."
    )


def _tokenize_count(url: str) -> int:
    return int(server_stats(url)["requests_by_route"].get("/tokenize", 0))


def _conversation_once(
    client: ZephyrClient, *, turns: int, answer_tokens: int, url: str, per_ask: bool
) -> dict[str, Any]:
    """One conversation of `turns` asks: client CPU and wall time of each, and the /tokenize calls made (per ask
    when `per_ask`, else in all; the server's counter is read between asks, outside the timed part)."""
    conversation = Conversation(client)
    cpu_ms: list[float] = []
    wall_ms: list[float] = []
    tokenize_calls: list[int] = []
    dropped: list[int] = []
    start = before = _tokenize_count(url)
    for turn in range(1, turns + 1):
        text = _turn_text(turn)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        conversation.ask(text, max_new_tokens=answer_tokens)
        cpu_ms.append(1e3 * (time.process_time() - cpu0))
        wall_ms.append(1e3 * (time.perf_counter() - wall0))
        if per_ask:
            after = _tokenize_count(url)
            tokenize_calls.append(after - before)
            before = after
        dropped.append(conversation.dropped)
    if not per_ask:
        tokenize_calls = [_tokenize_count(url) - start]
    return {"cpu_ms": cpu_ms, "wall_ms": wall_ms, "tokenize_calls": tokenize_calls, "dropped": dropped}


def _at(values: list[list[float]], turn: int, window: int) -> dict[str, float]:
    """The value at `turn` (median over runs) and the median over the `window` turns ending there."""
    at_turn = statistics.median(run[turn - 1] for run in values)
    around = statistics.median(x for run in values for x in run[turn - window : turn])
    return {"at_turn": at_turn, "window_median": around}


def conversation(
    url: str, tokenizer_path: str, *, turns: int, answer_tokens: int, runs: int, budget_s: float = 90.0
) -> dict[str, Any]:
    """A long Conversation against an emulator with a small window, with the local tokenizer and with /tokenize.

    Each ask is measured alone (this process's CPU time; the emulator runs in another process), so the figures
    at turn 10 (history still fits) and at the last turn (the window long full, old turns dropped) compare the
    cost of an ask as the history grows.
    """
    from zephyr_tgi import ZephyrTokenizer

    tokenizer = ZephyrTokenizer.from_file(tokenizer_path)
    limits = server_info_limits(url)
    result: dict[str, Any] = {"turns": turns, "answer_tokens": answer_tokens, "runs": runs, **limits}
    for mode in ("local tokenizer", "server /tokenize"):
        runs_data: list[dict[str, Any]] = []
        local = mode == "local tokenizer"
        deadline = time.monotonic() + budget_s / 2
        with ZephyrClient(url, tokenizer=tokenizer if local else None) as client:
            client.chat("warm up", max_new_tokens=2)
            for index in range(runs):
                if index and time.monotonic() > deadline:
                    break
                runs_data.append(
                    _conversation_once(client, turns=turns, answer_tokens=answer_tokens, url=url, per_ask=not local)
                )
        cpu = [r["cpu_ms"] for r in runs_data]
        wall = [r["wall_ms"] for r in runs_data]
        calls = [c for r in runs_data for c in r["tokenize_calls"]]
        result[mode] = {
            "runs": len(runs_data),
            "cpu_ms_turn_10": _at(cpu, 10, 5),
            f"cpu_ms_turn_{turns}": _at(cpu, turns, 10),
            "wall_ms_turn_10": _at(wall, 10, 5),
            f"wall_ms_turn_{turns}": _at(wall, turns, 10),
            "tokenize_calls": sum(calls),
            "tokenize_per_ask_max": max(calls) if not local else None,
            "tokenize_per_ask_mean": sum(calls) / (turns * len(runs_data)),
            "first_turn_dropping": next((i + 1 for i, d in enumerate(runs_data[0]["dropped"]) if d), None),
            "messages_dropped_at_last_turn": runs_data[0]["dropped"][-1],
            "cpu_ms_per_turn_run0": [round(x, 3) for x in cpu[0]],
        }
    return result


def server_info_limits(url: str) -> dict[str, int]:
    """The window the server reports in /info."""
    info = json.loads(httpx2.get(f"{url}/info", timeout=10).text)
    return {"max_input_tokens": int(info["max_input_tokens"]), "max_total_tokens": int(info["max_total_tokens"])}


# Run in a fresh interpreter by `hostile()`: its RSS is this client's alone, and its peak is reset just before the
# call (writing 5 to /proc/self/clear_refs), so VmHWM afterwards is the peak of the call itself.
_HOSTILE_CHILD = """
import json, sys, time
from pathlib import Path
from zephyr_tgi import ZephyrClient, ZephyrTGIError

def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise RuntimeError(key)

url, what = sys.argv[1], sys.argv[2]
client = ZephyrClient(url)
client.info()
Path("/proc/self/clear_refs").write_text("5")
rss_before = status("VmRSS")
t0 = time.perf_counter()
error = None
try:
    if what == "error_page":
        client.chat("hello", max_new_tokens=8)
    else:
        for _ in client.generate_stream("hello", max_new_tokens=8):
            pass
except ZephyrTGIError as exc:
    error = f"{type(exc).__name__}: {str(exc)[:200]}"
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "error": error, "rss_before": rss_before,
                  "peak": status("VmHWM"), "rss_after": status("VmRSS")}))
"""


def hostile(url: str, *, runs: int) -> dict[str, Any]:
    """A 50 MB 502 error page and a 40 MB SSE line, each met by a fresh client process: peak RSS growth, time."""
    result: dict[str, Any] = {}
    for what in ("error_page", "long_line"):
        samples = []
        for _ in range(runs):
            completed = subprocess.run(
                [sys.executable, "-c", _HOSTILE_CHILD, url, what],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )
            samples.append(json.loads(completed.stdout.strip().splitlines()[-1]))
        result[what] = {
            "seconds": statistics.median(s["seconds"] for s in samples),
            "peak_growth_mb": statistics.median((s["peak"] - s["rss_before"]) / 2**20 for s in samples),
            "rss_growth_mb": statistics.median((s["rss_after"] - s["rss_before"]) / 2**20 for s in samples),
            "error": samples[0]["error"],
            "runs": samples,
        }
    return result
