"""`make bench`: client overhead of zephyr_tgi against bare huggingface_hub and raw httpx2, in one run.

The TGI-speaking server (zephyr_tgi's emulator) runs in its own process, so only the client's CPU counts.
Results go to benchmarks/results/ (JSON, markdown, PNG) and into docs/benchmarks.md.

    python -m benchmarks.run            # the full run
    python -m benchmarks.run --quick    # a small run to check the harness
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import scenarios
from benchmarks.harness import emulator_process
from benchmarks.report import write_reports

ROOT = Path(__file__).resolve().parents[1]
# Real TGI sends one event per token, tens of milliseconds apart; a short per-token delay makes the emulator
# do the same (one read per token) without making the run long.
PACED = ("--emulator-token-latency", "0.0005")

FULL = {
    "requests": 400,
    "streams": 12,
    "tokens": 256,
    "concurrency": 128,
    "batch": 1000,
    "batch_concurrency": 16,
    "memory_requests": 10_000,
    "import_runs": 15,
    "rounds": 5,
}
QUICK = {
    "requests": 60,
    "streams": 3,
    "tokens": 64,
    "concurrency": 16,
    "batch": 100,
    "batch_concurrency": 8,
    "memory_requests": 500,
    "import_runs": 3,
    "rounds": 2,
}


def ratio(results: dict[str, Any], ours: str, other: str) -> float:
    return float(results[ours]["cpu_us_per_unit"] / results[other]["cpu_us_per_unit"])


def evaluate(results: dict[str, Any], sizes: dict[str, int]) -> list[dict[str, Any]]:
    """Each target with the measured value and whether it is met."""
    imports = results["import_time"]
    import_gap = imports["import zephyr_tgi"]["median_ms"] - imports["import huggingface_hub"]["median_ms"]
    batch = results["batch_chat"]["zephyr_tgi"]
    return [
        {
            "target": "non-streaming chat: client CPU per request vs bare huggingface_hub",
            "limit": "<= 1.10x",
            "measured": f"{ratio(results['nonstream'], 'zephyr_tgi', 'huggingface_hub'):.2f}x",
            "met": ratio(results["nonstream"], "zephyr_tgi", "huggingface_hub") <= 1.10,
        },
        {
            "target": f"streaming {sizes['tokens']} tokens: client CPU per token vs the httpx2 floor",
            "limit": "<= 2.0x",
            "measured": f"{ratio(results['stream'], 'zephyr_tgi', 'httpx2 floor'):.2f}x",
            "met": ratio(results["stream"], "zephyr_tgi", "httpx2 floor") <= 2.0,
        },
        {
            "target": f"{sizes['concurrency']} concurrent async streams: CPU per token vs the httpx2 floor",
            "limit": "<= 2.0x",
            "measured": f"{ratio(results['async_streams'], 'zephyr_tgi', 'httpx2 floor'):.2f}x",
            "met": ratio(results["async_streams"], "zephyr_tgi", "httpx2 floor") <= 2.0,
        },
        {
            "target": "import zephyr_tgi vs import huggingface_hub",
            "limit": "<= +50 ms",
            "measured": f"{import_gap:+.1f} ms",
            "met": import_gap <= 50,
        },
        {
            "target": f"RSS growth over {sizes['memory_requests']:,} requests",
            "limit": "< 5 MB",
            "measured": f"{results['memory']['growth_mb']:.2f} MB",
            "met": results["memory"]["growth_mb"] < 5,
        },
        {
            "target": f"batch_chat of {sizes['batch']} keeps `concurrency` in flight (server-side)",
            "limit": f"== {sizes['batch_concurrency']}",
            "measured": str(batch["server_max_in_flight"]),
            "met": batch["server_max_in_flight"] == sizes["batch_concurrency"],
        },
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the harness")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    started = time.time()
    results: dict[str, Any] = {}

    def step(name: str, fn: Any, *fn_args: Any, **fn_kwargs: Any) -> None:
        print(f"- {name} ...", flush=True)
        t0 = time.perf_counter()
        results[name] = fn(*fn_args, **fn_kwargs)
        print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)

    # A long scripted answer, so every stream really runs to max_new_tokens.
    replies = Path(tempfile.mkdtemp()) / "replies.json"
    long_answer = " ".join(f"word{i % 97}" for i in range(4 * sizes["tokens"]))
    replies.write_text(json.dumps({scenarios.PROMPT: long_answer}), encoding="utf-8")
    server_args = ("--emulator-replies", str(replies))

    with emulator_process(*server_args) as fast, emulator_process(*server_args, *PACED) as paced:
        step("nonstream", scenarios.nonstream, fast, requests=sizes["requests"], rounds=sizes["rounds"])
        step(
            "stream", scenarios.stream, paced, streams=sizes["streams"], tokens=sizes["tokens"], rounds=sizes["rounds"]
        )
        step(
            "async_streams",
            scenarios.async_streams,
            paced,
            concurrency=sizes["concurrency"],
            tokens=sizes["tokens"],
            rounds=max(2, sizes["rounds"] - 2),
        )
        step(
            "batch_chat",
            scenarios.batch,
            paced,
            prompts=sizes["batch"],
            concurrency=sizes["batch_concurrency"],
            rounds=max(1, sizes["rounds"] - 3),
        )
        step("memory", scenarios.memory, fast, requests=sizes["memory_requests"])
    step("import_time", scenarios.import_time, runs=sizes["import_runs"])

    targets = evaluate(results, sizes)
    report = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": __import__("os").cpu_count(),
        },
        "sizes": sizes,
        "quick": args.quick,
        "results": results,
        "targets": targets,
    }
    write_reports(report, args.out, docs=None if args.no_docs else ROOT / "docs" / "benchmarks.md")
    print(json.dumps(targets, indent=2))
    return 0 if all(t["met"] for t in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
