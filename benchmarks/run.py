"""`make bench`: client overhead of zephyr_tgi against bare huggingface_hub and raw httpx2, in one run.

The TGI-speaking servers (benchmarks/servers.py's canned TGI and zephyr_tgi's emulator) run in their own
processes, so only the client's CPU counts.
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
from benchmarks.harness import emulator_process, load_average, raw_server
from benchmarks.report import write_reports

ROOT = Path(__file__).resolve().parents[1]
# Real TGI sends one event per token, tens of milliseconds apart; a short per-token delay makes the emulator
# do the same (one read per token) without making the run long.
PACED = ("--emulator-token-latency", "0.0005")
# The raw SSE server's gap between writes: each write arrives alone, in its own read.
PACE = "0.0005"


def _tokenizer_model() -> str:
    """Zephyr's (Mistral-7B-v0.1's) SentencePiece model, as mistral_common ships it (a dev dependency)."""
    import mistral_common

    path = Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"
    if not path.is_file():
        raise SystemExit(f"no tokenizer model at {path}")
    return str(path)


FULL = {
    "requests": 400,
    # Streams run one per contender per round, contenders alternating stream by stream (a drift of the machine's
    # speed then hits all of them alike): many short rounds, not a few long ones.
    "stream_rounds": 60,
    "batched_stream_rounds": 240,
    "tokens": 256,
    "events_per_write": 64,
    "concurrency": 128,
    "batch": 1000,
    "batch_concurrency": 16,
    "memory_requests": 10_000,
    "conversation_turns": 120,
    "conversation_runs": 2,
    "hostile_runs": 3,
    "import_runs": 15,
    "rounds": 5,
}
QUICK = {
    "requests": 60,
    "stream_rounds": 3,
    "batched_stream_rounds": 6,
    "tokens": 64,
    "events_per_write": 64,
    "concurrency": 16,
    "batch": 100,
    "batch_concurrency": 8,
    "memory_requests": 500,
    "conversation_turns": 30,
    "conversation_runs": 1,
    "hostile_runs": 1,
    "import_runs": 3,
    "rounds": 2,
}
# The conversation's window (small, so it fills within a few turns) and answer length.
CONVERSATION_WINDOW = ("--max-input-tokens", "1024", "--max-total-tokens", "1536")
CONVERSATION_ANSWER_TOKENS = 30
# Limits of the targets (issue 9 and the ones before it).
NONSTREAM_VS_HUB = 0.80
STREAM_VS_FLOOR = 1.00
ASYNC_VS_FLOOR = 2.00
IMPORT_GAP_MS = 50.0
RSS_GROWTH_MB = 5.0
ASK_CPU_MS = 2.0
ASK_GROWTH = 1.25  # CPU per ask at the last turn over turn 10: flat, give or take noise
ERROR_PAGE_MB = 20.0
LONG_LINE_S = 1.0


def ratio(results: dict[str, Any], ours: str, other: str) -> float:
    return float(results[ours]["cpu_us_per_unit"] / results[other]["cpu_us_per_unit"])


def _row(target: str, limit: str, measured: str, met: bool) -> dict[str, Any]:
    return {"target": target, "limit": limit, "measured": measured, "met": bool(met)}


def evaluate(results: dict[str, Any], sizes: dict[str, int]) -> list[dict[str, Any]]:
    """Each target with the measured value and whether it is met."""
    imports = results["import_time"]
    import_gap = imports["import zephyr_tgi"]["median_ms"] - imports["import huggingface_hub"]["median_ms"]
    ours_first = imports["from zephyr_tgi import ZephyrClient (+ first client)"]["median_ms"]
    hub_first = imports["from huggingface_hub import InferenceClient (+ first client)"]["median_ms"]
    batch = results["batch_chat"]["zephyr_tgi"]
    nonstream = ratio(results["nonstream"], "zephyr_tgi", "huggingface_hub")
    floor_vs_hub = ratio(results["nonstream"], "httpx2 floor", "huggingface_hub")
    per_packet = ratio(results["stream"], "zephyr_tgi", "httpx2 floor")
    batched = ratio(results["stream_batched"], "zephyr_tgi", "httpx2 floor")
    concurrent = ratio(results["async_streams"], "zephyr_tgi", "httpx2 floor")
    turns = sizes["conversation_turns"]
    talk = results["conversation"]
    rows = [
        _row(
            "non-streaming chat: client CPU per request vs bare huggingface_hub `text_generation`",
            f"<= {NONSTREAM_VS_HUB:.2f}x",
            f"{nonstream:.2f}x (raw httpx2 floor: {floor_vs_hub:.2f}x)",
            nonstream <= NONSTREAM_VS_HUB,
        ),
        _row(
            f"streaming {sizes['tokens']} tokens, one event per write: CPU per token vs the httpx2 floor",
            f"<= {STREAM_VS_FLOOR:.2f}x",
            f"{per_packet:.2f}x",
            per_packet <= STREAM_VS_FLOOR,
        ),
        _row(
            f"streaming {sizes['tokens']} tokens, {sizes['events_per_write']} events per write: CPU per token vs "
            "the httpx2 floor",
            f"<= {STREAM_VS_FLOOR:.2f}x",
            f"{batched:.2f}x",
            batched <= STREAM_VS_FLOOR,
        ),
        _row(
            "`from zephyr_tgi import ZephyrClient; ZephyrClient(url)` vs the same with `InferenceClient` "
            "(fresh process, median)",
            "<= 1.00x",
            f"{ours_first:.0f} ms vs {hub_first:.0f} ms ({ours_first / hub_first:.2f}x)",
            ours_first <= hub_first,
        ),
        _row(
            "import zephyr_tgi vs import huggingface_hub",
            f"<= +{IMPORT_GAP_MS:.0f} ms",
            f"{import_gap:+.1f} ms",
            import_gap <= IMPORT_GAP_MS,
        ),
        _row(
            f"{sizes['concurrency']} concurrent async streams: CPU per token vs the httpx2 floor",
            f"<= {ASYNC_VS_FLOOR:.1f}x",
            f"{concurrent:.2f}x",
            concurrent <= ASYNC_VS_FLOOR,
        ),
        _row(
            f"RSS growth over {results['memory']['requests']:,} requests",
            f"< {RSS_GROWTH_MB:.0f} MB",
            f"{results['memory']['growth_mb']:.2f} MB",
            results["memory"]["growth_mb"] < RSS_GROWTH_MB
            and results["memory"]["requests"] == sizes["memory_requests"],
        ),
        _row(
            f"batch_chat of {sizes['batch']} keeps `concurrency` in flight (server-side)",
            f"== {sizes['batch_concurrency']}",
            str(batch["server_max_in_flight"]),
            batch["server_max_in_flight"] == sizes["batch_concurrency"],
        ),
    ]
    for mode in ("local tokenizer", "server /tokenize"):
        data = talk[mode]
        early = data["cpu_ms_turn_10"]["window_median"]
        late = data[f"cpu_ms_turn_{turns}"]["window_median"]
        if mode == "local tokenizer":
            rows.append(
                _row(
                    f"Conversation, local tokenizer: client CPU per ask at turn {turns}",
                    f"< {ASK_CPU_MS:.0f} ms",
                    f"{late:.2f} ms (turn 10: {early:.2f} ms)",
                    late < ASK_CPU_MS,
                )
            )
        rows.append(
            _row(
                f"Conversation, {mode}: CPU per ask at turn {turns} vs turn 10 (not growing with the history)",
                f"<= {ASK_GROWTH:.2f}x",
                f"{late / early:.2f}x ({early:.2f} → {late:.2f} ms)",
                late / early <= ASK_GROWTH,
            )
        )
    server = talk["server /tokenize"]
    rows.append(
        _row(
            "Conversation, server tokenizer: /tokenize requests per ask",
            "<= 1",
            f"max {server['tokenize_per_ask_max']}, mean {server['tokenize_per_ask_mean']:.2f}",
            server["tokenize_per_ask_max"] <= 1,
        )
    )
    page, line = results["hostile"]["error_page"], results["hostile"]["long_line"]
    rows += [
        _row(
            "a 50 MB 502 error page: peak RSS growth of the client process",
            f"< {ERROR_PAGE_MB:.0f} MB",
            f"{page['peak_growth_mb']:.1f} MB",
            page["peak_growth_mb"] < ERROR_PAGE_MB and (page["error"] or "").startswith("ServerUnavailableError"),
        ),
        _row(
            "a 40 MB SSE line: time to end the stream with a typed error",
            f"< {LONG_LINE_S:.1f} s",
            f"{line['seconds']:.2f} s (peak RSS +{line['peak_growth_mb']:.0f} MB)",
            line["seconds"] < LONG_LINE_S and (line["error"] or "").startswith("MalformedResponseError"),
        ),
    ]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the harness")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    started = time.time()
    load_before = load_average()
    results: dict[str, Any] = {}

    def step(name: str, fn: Any, *fn_args: Any, **fn_kwargs: Any) -> None:
        print(f"- {name} ...", flush=True)
        t0 = time.perf_counter()
        results[name] = fn(*fn_args, **fn_kwargs)
        print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)

    # A long scripted answer, so every emulator stream really runs to max_new_tokens.
    replies = Path(tempfile.mkdtemp()) / "replies.json"
    long_answer = " ".join(f"word{i % 97}" for i in range(4 * sizes["tokens"]))
    replies.write_text(json.dumps({scenarios.PROMPT: long_answer}), encoding="utf-8")
    server_args = ("--emulator-replies", str(replies))
    tokenizer_model = _tokenizer_model()
    rounds = sizes["rounds"]

    # Canned TGI answers for all three contenders (a server that costs next to nothing keeps the run short on a
    # busy machine); streams one event per write, then many per write.
    with raw_server("tgi", "--events-per-write", "1", "--pace", PACE) as canned:
        step("nonstream", scenarios.nonstream, canned, requests=sizes["requests"], rounds=rounds)
        step("stream", scenarios.stream, canned, streams=1, tokens=sizes["tokens"], rounds=sizes["stream_rounds"])
        step("memory", scenarios.memory, canned, requests=sizes["memory_requests"])
    with raw_server("tgi", "--events-per-write", str(sizes["events_per_write"]), "--pace", PACE) as batched:
        step(
            "stream_batched",
            scenarios.stream,
            batched,
            streams=1,
            tokens=sizes["tokens"],
            rounds=sizes["batched_stream_rounds"],
        )
    with emulator_process(*server_args, *PACED) as paced:
        step(
            "async_streams",
            scenarios.async_streams,
            paced,
            concurrency=sizes["concurrency"],
            tokens=sizes["tokens"],
            rounds=max(2, rounds - 2),
        )
        step(
            "batch_chat",
            scenarios.batch,
            paced,
            prompts=sizes["batch"],
            concurrency=sizes["batch_concurrency"],
            rounds=max(1, rounds - 3),
        )
    with emulator_process(*CONVERSATION_WINDOW, "--tokenizer-model", tokenizer_model) as small_window:
        step(
            "conversation",
            scenarios.conversation,
            small_window,
            tokenizer_model,
            turns=sizes["conversation_turns"],
            answer_tokens=CONVERSATION_ANSWER_TOKENS,
            runs=sizes["conversation_runs"],
        )
    with raw_server("hostile") as hostile:
        step("hostile", scenarios.hostile, hostile, runs=sizes["hostile_runs"])
    step("import_time", scenarios.import_time, runs=sizes["import_runs"])

    targets = evaluate(results, sizes)
    report = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": __import__("os").cpu_count(),
        },
        "load_average_before_after": [load_before, load_average()],
        "wall_seconds": round(time.time() - started, 1),
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
