"""`make bench` (part 2): can the load generator of `zephyr_tgi.bench` generate the load it claims to measure?

The target: 25,000 streamed tokens/s across 128 concurrent streams written one event per packet (what a large
GPU running Zephyr-7B at full batch produces). Measured against:

1. a cheap raw SSE server (`benchmarks/raw_sse_server.py`, its own process) writing as fast as the client reads:
   the most the generator can take in, with its CPU cost per token;
2. the same server paced to 25,000 tokens/s (one event per stream every 5.12 ms, each its own packet);
3. the TGI emulator (its own process) with a performance model of the same pace: where the emulator is the limit;
4. GuideLLM against the same emulator, when it is installed (`make guidellm-setup`), beside our numbers.

Each with one process and with worker processes. Writes benchmarks/results/generator.json and generator.md.

    python -m benchmarks.generator            # the full run (a few minutes)
    python -m benchmarks.generator --quick    # a small run to check the harness
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.harness import emulator_process
from zephyr_tgi import AsyncZephyrClient, RetryPolicy
from zephyr_tgi.bench import BenchPrompt, Bounds, Concurrent, StepResult, open_clients, run_step
from zephyr_tgi.bench._workers import run_step_in_processes

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TARGET_TOKENS_PER_SECOND = 25_000
STREAMS = 128
TICK = STREAMS / TARGET_TOKENS_PER_SECOND  # 5.12 ms: every stream gets one event per tick
GUIDELLM_CANDIDATES = (ROOT / ".venv-guidellm" / "bin" / "guidellm",)
_LISTENING = re.compile(r"Listening on (http://\S+)")


@contextmanager
def raw_server(tokens: int, tick: float) -> Iterator[str]:
    """The raw SSE server in its own process; yields its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.raw_sse_server", "--tokens", str(tokens), "--tick", str(tick)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        match = _LISTENING.search(process.stdout.readline())
        if match is None:
            raise RuntimeError(f"the raw SSE server did not start (exit {process.poll()})")
        yield match.group(1)
    finally:
        process.terminate()
        process.wait(timeout=10)


async def _measure(url: str, prompts: list[BenchPrompt], users: int, requests: int, processes: int) -> dict[str, Any]:
    """One load level; the client's CPU is what the generator measured of itself during the step."""
    bounds = Bounds(max_requests=requests, max_seconds=120)
    if processes == 1:
        async with open_clients(url, users) as clients:
            step = await run_step(clients, prompts, Concurrent(users=users), bounds=bounds)
    else:
        step = await run_step_in_processes(url, prompts, Concurrent(users=users), processes=processes, bounds=bounds)
    return _row(step, processes)


def _row(step: StepResult, processes: int) -> dict[str, Any]:
    tokens = step.output_tokens_mean * step.successful
    client_cpu = step.client_cpu_seconds or 0.0
    return {
        "processes": processes,
        "requests": step.requests,
        "errors": step.requests - step.successful,
        "tokens": int(tokens),
        "duration_s": round(step.duration, 2),
        "tokens_per_second": round(step.output_tokens_per_second),
        "client_cpu_s": round(client_cpu, 2),
        "client_cpu_us_per_token": round(1e6 * client_cpu / max(tokens, 1), 1),
        "client_cpu_share": None if step.client_cpu_share is None else round(step.client_cpu_share, 2),
        "ttft_p50_ms": None if step.ttft is None else round(step.ttft.median * 1000, 2),
        "itl_p50_ms": None if step.itl is None else round(step.itl.median * 1000, 3),
        "itl_p99_ms": None if step.itl is None else round(step.itl.p99 * 1000, 3),
    }


def _long_replies(prompts: list[BenchPrompt], words: int) -> dict[str, str]:
    """Emulator replies keyed by each prompt's user turn, long enough to keep a stream going."""
    return {p.content: " ".join(["river stone garden"] * (words // 3)) for p in prompts}


def guidellm_executable() -> str | None:
    configured = os.environ.get("GUIDELLM")
    if configured:
        return configured
    for candidate in GUIDELLM_CANDIDATES:
        if candidate.exists():
            return str(candidate)
    return shutil.which("guidellm")


def run_guidellm(executable: str, url: str, prompts: list[BenchPrompt], users: int, requests: int) -> dict[str, Any]:
    """GuideLLM's concurrent profile against `url` with the same prompts; its medians, as it reports them."""
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "prompts.jsonl"
        # GuideLLM goes through its dataset once: one row per request.
        data.write_text(
            "".join(json.dumps({"prompt": prompts[i % len(prompts)].content}) + "\n" for i in range(requests)),
            encoding="utf-8",
        )
        out = Path(scratch) / "guidellm.json"
        completed = subprocess.run(
            [executable, "run", "--backend", f"kind=openai_http,target={url}",
             "--profile", f"kind=concurrent,streams={users}", "--data", f"kind=json_file,path={data}",
             "--constraint", f"kind=max_requests,count={requests}", "--output", f"kind=json,path={out}",
             "--disable-progress", "--disable-console"],
            capture_output=True, text=True, timeout=600, cwd=scratch, check=False,
        )  # fmt: skip
        if completed.returncode != 0 or not out.exists():
            return {"error": (completed.stderr or completed.stdout)[-2000:]}
        metrics = json.loads(out.read_text(encoding="utf-8"))["benchmarks"][0]["metrics"]

    def median(name: str) -> float:
        return float(metrics[name]["successful"]["median"])

    return {
        "requests": metrics["request_totals"]["successful"],
        "tokens_per_second": round(float(metrics["output_tokens_per_second"]["successful"]["mean"])),
        "ttft_p50_ms": round(median("time_to_first_token_ms"), 2),
        "itl_p50_ms": round(median("inter_token_latency_ms"), 3),
        "tpot_p50_ms": round(median("time_per_output_token_ms"), 3),
    }


async def _ours_like_guidellm(url: str, prompts: list[BenchPrompt], users: int, requests: int) -> dict[str, Any]:
    async with AsyncZephyrClient(url, retry=RetryPolicy.never(), budget="off") as client:
        step = await run_step(client, prompts, Concurrent(users=users), bounds=Bounds(max_requests=requests))
    assert step.ttft is not None
    assert step.itl is not None
    assert step.tpot is not None
    return {
        "requests": step.successful,
        "tokens_per_second": round(step.output_tokens_per_second),
        "ttft_p50_ms": round(step.ttft.median * 1000, 2),
        "itl_p50_ms": round(step.itl.median * 1000, 3),
        "tpot_p50_ms": round(step.tpot.median * 1000, 3),
    }


def run(quick: bool) -> dict[str, Any]:
    tokens = 64 if quick else 256
    rounds = 1 if quick else 3  # requests per stream
    requests = STREAMS * rounds
    worker_counts = (1, 2) if quick else (1, 2, 4)
    prompts = [BenchPrompt(content=f"Stream {i}: tell a long story", max_new_tokens=tokens) for i in range(16)]
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "target_tokens_per_second": TARGET_TOKENS_PER_SECOND,
        "streams": STREAMS,
        "tokens_per_stream": tokens,
    }
    print(f"1/4 raw SSE server, unpaced, {STREAMS} streams", flush=True)
    results["raw_unpaced"] = []
    for processes in worker_counts:
        with raw_server(tokens, 0.0) as url:
            results["raw_unpaced"].append(asyncio.run(_measure(url, prompts, STREAMS, requests, processes)))
        print("   ", results["raw_unpaced"][-1], flush=True)
    print(f"2/4 raw SSE server paced to {TARGET_TOKENS_PER_SECOND} tokens/s", flush=True)
    results["raw_paced"] = []
    for processes in worker_counts:
        with raw_server(tokens, TICK) as url:
            results["raw_paced"].append(asyncio.run(_measure(url, prompts, STREAMS, requests, processes)))
        print("   ", results["raw_paced"][-1], flush=True)
    print("3/4 the emulator with a performance model of the same pace", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        replies = Path(scratch) / "replies.json"
        replies.write_text(json.dumps(_long_replies(prompts, tokens)), encoding="utf-8")
        emulator_args = (
            "--emulator-replies", str(replies), "--emulator-prefill-base", "0", "--emulator-prefill-per-token", "0",
            "--emulator-decode-step", str(TICK), "--emulator-decode-step-per-sequence", "0",
            "--max-batch-total-tokens", "2000000", "--max-concurrent-requests", "512",
        )  # fmt: skip
        results["emulator_paced"] = []
        for processes in worker_counts[:2]:
            with emulator_process(*emulator_args) as url:
                results["emulator_paced"].append(asyncio.run(_measure(url, prompts, STREAMS, requests, processes)))
            print("   ", results["emulator_paced"][-1], flush=True)
        print("4/4 GuideLLM against the emulator (default performance model), beside ours", flush=True)
        results["guidellm"] = compare_with_guidellm(replies, prompts, quick)
        print("   ", results["guidellm"], flush=True)
    return results


def compare_with_guidellm(replies: Path, prompts: list[BenchPrompt], quick: bool) -> dict[str, Any]:
    executable = guidellm_executable()
    if executable is None:
        return {"installed": False, "note": "GuideLLM is not installed: `make guidellm-setup` installs it"}
    users, requests = (4, 16) if quick else (8, 64)
    short = [p.model_copy(update={"max_new_tokens": 64}) for p in prompts]
    args = ("--emulator-performance", "--emulator-replies", str(replies))
    with emulator_process(*args) as url:
        ours = asyncio.run(_ours_like_guidellm(url, short, users, requests))
    with emulator_process(*args) as url:
        theirs = run_guidellm(executable, url, short, users, requests)
    version = subprocess.run([executable, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return {"installed": True, "version": version, "users": users, "zephyr_tgi": ours, "guidellm": theirs}


def markdown(results: dict[str, Any]) -> str:
    target = results["target_tokens_per_second"]
    lines = [
        "# Load generator capacity",
        "",
        f"Machine: {results['machine']['cpus']} CPUs, Python {results['machine']['python']}. "
        f"{results['streams']} concurrent streams of {results['tokens_per_stream']} tokens, one event per packet; "
        f"target {target:,} tokens/s. The server runs in its own process on the same machine.",
        "",
        "| server | processes | tokens/s | of target | client CPU µs/token | client CPU busy | ITL p50 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, name in (("raw_unpaced", "raw SSE, unpaced"), ("raw_paced", "raw SSE, paced to target"),
                      ("emulator_paced", "emulator, paced to target")):  # fmt: skip
        for row in results[key]:
            lines.append(
                f"| {name} | {row['processes']} | {row['tokens_per_second']:,} | "
                f"{100 * row['tokens_per_second'] / target:.0f}% | {row['client_cpu_us_per_token']} | "
                f"{row['client_cpu_share']:.0%} | "
                f"{row['itl_p50_ms']} | {row['errors']} |"
            )
    best = max(results["raw_unpaced"], key=lambda r: r["tokens_per_second"])
    costs = sorted(r["client_cpu_us_per_token"] for r in results["raw_unpaced"])
    per_core = 1e6 / costs[len(costs) // 2]
    lines += [
        "",
        f"Best: {best['tokens_per_second']:,} tokens/s with {best['processes']} process(es). The generator spends "
        f"{costs[0]}-{costs[-1]} µs of CPU per token (median {costs[len(costs) // 2]}), so one core takes in about "
        f"{per_core:,.0f} tokens/s and {target:,} tokens/s needs about {target / per_core:.1f} cores for the "
        "client alone, besides the server's.",
        "",
    ]
    guide = results["guidellm"]
    if not guide.get("installed"):
        lines.append(guide["note"])
    elif "error" in guide["guidellm"]:
        lines.append(f"GuideLLM {guide['version']} failed: {guide['guidellm']['error'][:300]}")
    else:
        lines += [
            f"## Against GuideLLM {guide['version']} (emulator, default performance model, {guide['users']} users)",
            "",
            "| tool | requests | output tokens/s | TTFT p50 ms | ITL p50 ms | TPOT p50 ms |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name in ("zephyr_tgi", "guidellm"):
            row = guide[name]
            lines.append(
                f"| {name} | {row['requests']} | {row['tokens_per_second']} | {row['ttft_p50_ms']} | "
                f"{row['itl_p50_ms']} | {row['tpot_p50_ms']} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a small run to check the harness")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    results = run(args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "generator-quick" if args.quick else "generator"
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (args.out / f"{name}.md").write_text(markdown(results), encoding="utf-8")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
