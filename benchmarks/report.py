"""Benchmark reports: JSON, a markdown table (also spliced into docs/benchmarks.md) and a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

START, END = "<!-- results:start -->", "<!-- results:end -->"
CONTENDERS = ("zephyr_tgi", "huggingface_hub", "httpx2 floor")
CPU_SCENARIOS = {
    "nonstream": "non-streaming chat (µs CPU / request)",
    "stream": "streaming, one event per write (µs CPU / token)",
    "stream_batched": "streaming, many events per write (µs CPU / token)",
    "async_streams": "concurrent async streams (µs CPU / token)",
    "batch_chat": "batch_chat (µs CPU / request)",
}


def markdown(report: dict[str, Any]) -> str:
    """The results as markdown tables."""
    results, sizes = report["results"], report["sizes"]
    lines = [
        f"Run of {report['when']} on {report['machine']['platform']}, Python {report['machine']['python']}, "
        f"{report['machine']['cpus']} CPUs{' (quick sizes)' if report['quick'] else ''}, load average "
        f"{_load(report)} (before / after; other processes share the CPUs, so absolute figures vary, the "
        f"interleaved ratios much less). Medians over up to {sizes['rounds']} interleaved rounds (streams: over "
        f"{sizes['stream_rounds']} and {sizes['batched_stream_rounds']} rounds of one stream each); the servers "
        f"run in other processes and their CPU is not counted. The whole run took {report['wall_seconds']:.0f} s.",
        "",
        "| target | limit | measured | met |",
        "| --- | --- | --- | --- |",
        *(
            f"| {t['target']} | {t['limit']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |"
            for t in report["targets"]
        ),
        "",
        "| scenario | " + " | ".join(CONTENDERS) + " | zephyr_tgi p50 / p95 / p99 latency (ms) |",
        "| --- | " + " | ".join("---" for _ in CONTENDERS) + " | --- |",
    ]
    for key, label in CPU_SCENARIOS.items():
        row = results[key]
        cells = " | ".join(f"{row[name]['cpu_us_per_unit']:.1f}" for name in CONTENDERS)
        lat = row["zephyr_tgi"]["latency_ms"]
        latency = " / ".join("-" if lat[q] is None else f"{lat[q]:.1f}" for q in ("p50", "p95", "p99"))
        lines.append(f"| {label} | {cells} | {latency} |")
    talk = results["conversation"]
    turns = talk["turns"]
    lines += [
        "",
        f"Conversation: {turns} turns of about 30 tokens ({talk['answer_tokens']}-token answers), window "
        f"{talk['max_input_tokens']} / {talk['max_total_tokens']}; client CPU per `ask` (median of the runs at that "
        "turn, and over the turns just before it).",
        "",
        "| tokenizer | CPU at turn 10 (ms) | median turns 6-10 | "
        f"CPU at turn {turns} (ms) | median turns {turns - 9}-{turns} | wall per ask, turn {turns} (ms) | "
        "/tokenize per ask (max, mean) | first turn dropping history |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for mode in ("local tokenizer", "server /tokenize"):
        data = talk[mode]
        early, late = data["cpu_ms_turn_10"], data[f"cpu_ms_turn_{turns}"]
        calls = "-" if data["tokenize_per_ask_max"] is None else f"{data['tokenize_per_ask_max']}"
        lines.append(
            f"| {mode} | {early['at_turn']:.2f} | {early['window_median']:.2f} | {late['at_turn']:.2f} | "
            f"{late['window_median']:.2f} | {data[f'wall_ms_turn_{turns}']['window_median']:.1f} | "
            f"{calls}, {data['tokenize_per_ask_mean']:.2f} | {data['first_turn_dropping']} |"
        )
    hostile = results["hostile"]
    lines += [
        "",
        "Hostile servers (a fresh client process each, peak RSS reset just before the call):",
        "",
        "| server sends | time to the error (s) | peak RSS growth (MB) | error |",
        "| --- | --- | --- | --- |",
        *(
            f"| {label} | {hostile[key]['seconds']:.2f} | {hostile[key]['peak_growth_mb']:.1f} | "
            f"`{(hostile[key]['error'] or 'none')[:70]}` |"
            for key, label in (("error_page", "a 50 MB 502 HTML page"), ("long_line", "a 40 MB SSE `data:` line"))
        ),
    ]
    memory = results["memory"]
    lines += [
        "",
        f"Memory: RSS {memory['rss_before_mb']:.1f} MB after warm-up, {memory['rss_after_mb']:.1f} MB after "
        f"{memory['requests']:,} more requests ({memory['growth_mb']:+.2f} MB).",
        "",
        "| import | median (ms) |",
        "| --- | --- |",
        *(f"| `{label}` | {row['median_ms']:.1f} |" for label, row in results["import_time"].items()),
        "",
        "batch_chat: requests in flight as the server counted them: "
        + ", ".join(f"{name} {results['batch_chat'][name]['server_max_in_flight']}" for name in CONTENDERS)
        + f" (concurrency {sizes['batch_concurrency']}).",
    ]
    return "\n".join(lines) + "\n"


def _load(report: dict[str, Any]) -> str:
    loads = report.get("load_average_before_after")
    if not loads:
        return "unknown"
    return " / ".join(f"{pair[0]:.1f}" for pair in loads)


def plot(report: dict[str, Any], path: Path) -> None:
    """Bars of CPU per unit, relative to the httpx2 floor, per scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    keys = list(CPU_SCENARIOS)
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.26
    for offset, name in enumerate(CONTENDERS):
        values = [results[k][name]["cpu_us_per_unit"] / results[k]["httpx2 floor"]["cpu_us_per_unit"] for k in keys]
        bars = ax.bar([i + (offset - 1) * width for i in range(len(keys))], values, width, label=name)
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks(range(len(keys)), [CPU_SCENARIOS[k].split(" (")[0] for k in keys], fontsize=9)
    ax.set_ylabel("client CPU, relative to raw httpx2")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_title("Client CPU per request / token (lower is better)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_reports(report: dict[str, Any], out: Path, *, docs: Path | None) -> None:
    """Write results.json, results.md and results.png under `out`; splice the table into `docs`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = markdown(report)
    (out / "results.md").write_text(table, encoding="utf-8")
    plot(report, out / "results.png")
    if docs is not None and docs.is_file():
        text = docs.read_text(encoding="utf-8")
        if START in text and END in text:
            head, rest = text.split(START, 1)
            tail = rest.split(END, 1)[1]
            docs.write_text(f"{head}{START}\n{table}{END}{tail}", encoding="utf-8")
