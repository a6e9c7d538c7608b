"""Reports of a load test or a branch comparison: a markdown table, JSON, PNG plots and a line of advice."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._errors import ConfigurationError
from ._metrics import Distribution, StepResult
from ._runner import LoadResult
from ._variants import VariantComparison

__all__ = ["advice", "comparison_markdown", "load_markdown", "plot_comparison", "plot_load", "write_reports"]


def _ms(distribution: Distribution | None, field: str) -> str:
    return "-" if distribution is None else f"{getattr(distribution, field) * 1000:.1f}"


def step_table(steps: Sequence[StepResult]) -> str:
    """One markdown row per load level."""
    header = (
        "| load | requests | errors | out tok/s | tok/s/user | req/s | goodput req/s | TTFT p50 ms | TTFT p99 ms "
        "| ITL p50 ms | ITL p99 ms | TPOT p50 ms | latency p50 s | client CPU | SLO |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    rows = []
    for step in steps:
        per_user = step.tokens_per_second_per_user
        latency = step.latency
        rows.append(
            f"| {step.label}{' (interrupted)' if step.interrupted else ''} | {step.requests} "
            f"| {step.requests - step.successful} | {step.output_tokens_per_second:.0f} "
            f"| {'-' if per_user is None else f'{per_user.median:.1f}'} | {step.requests_per_second:.2f} "
            f"| {step.goodput:.2f} | {_ms(step.ttft, 'median')} | {_ms(step.ttft, 'p99')} | {_ms(step.itl, 'median')} "
            f"| {_ms(step.itl, 'p99')} | {_ms(step.tpot, 'median')} "
            f"| {'-' if latency is None else f'{latency.median:.2f}'} | {_share(step)} "
            f"| {'yes' if step.meets_slo else 'no'} |"
        )
    return header + "\n".join(rows) + "\n"


def _share(step: StepResult) -> str:
    share = step.client_cpu_share
    return "-" if share is None else f"{share:.0%}"


# Above this share of its CPU the generator's own work may be what limits the numbers.
CLIENT_BOUND_SHARE = 0.8


def _client_bound_note(steps: Sequence[StepResult]) -> str | None:
    busy = [s for s in steps if (s.client_cpu_share or 0) > CLIENT_BOUND_SHARE]
    if not busy:
        return None
    worst = max(busy, key=lambda s: s.client_cpu_share or 0)
    return (
        f"Warning: the load generator used {worst.client_cpu_share:.0%} of its CPU at {worst.label}: at that load "
        "the numbers may measure the client, not the server; share the load with more processes (--processes)."
    )


def _slo_text(result: LoadResult) -> str:
    slo = result.slo
    return f"TTFT p99 <= {slo.ttft_p99 * 1000:g} ms, ITL p99 <= {slo.itl_p99 * 1000:g} ms"


def load_markdown(result: LoadResult, *, title: str | None = None) -> str:
    """A load test as markdown: what ran, the table, and the answer to "how many users meet the SLO".

    Args:
        result: The load test.
        title: The section's heading; default the server's URL.
    """
    lines = [f"## {title or result.url}", "", f"Profile `{result.profile.kind}`, SLO: {_slo_text(result)}.", ""]
    lines.append(step_table(result.steps))
    if result.users_meeting_slo is not None:
        lines.append(f"Concurrent users meeting the SLO: **{result.users_meeting_slo}**.")
    elif any(step.users is not None for step in result.steps):
        lines.append("No load level met the SLO.")
    if result.saturation_users is not None:
        lines.append(f"Saturation: throughput stopped growing beyond {result.saturation_users} users.")
    if result.interrupted:
        lines.append("The run was interrupted; the last level holds what was measured until then.")
    note = _client_bound_note(result.steps)
    if note is not None:
        lines.append(note)
    return "\n".join(lines).rstrip() + "\n"


# Branches whose peak throughput is within this share of the best one's count as equally fast.
SAME_SPEED = 0.05


def advice(comparison: VariantComparison) -> str:
    """One line: the branch that serves the most users within the SLO.

    Among branches serving as many users at about the same speed (peak throughput within 5%), the larger one
    wins: more bits and smaller groups are the model card's higher-quality branches.

    Args:
        comparison: The branch comparison.
    """
    measured = [(o, o.result) for o in comparison.outcomes if o.result is not None]
    if not measured:
        return "No branch was measured: see the reasons above."
    most_users = max(result.users_meeting_slo or 0 for _, result in measured)
    serving = [(o, r) for o, r in measured if (r.users_meeting_slo or 0) == most_users]
    fastest = max(_peak(r) for _, r in serving)
    close = [(o, r) for o, r in serving if _peak(r) >= (1 - SAME_SPEED) * fastest]
    outcome, result = max(close, key=lambda pair: (pair[0].plan.needs_gb, _peak(pair[1])))
    if not most_users:
        return f"No branch met the SLO at any load; {outcome.plan.variant} came closest ({_peak(result):.0f} tok/s)."
    return (
        f"Use {outcome.plan.variant}: it serves {result.users_meeting_slo} concurrent users within the SLO "
        f"({_slo_text(result)}), at up to {_peak(result):.0f} output tokens/s."
    )


def _peak(result: LoadResult) -> float:
    return max((step.output_tokens_per_second for step in result.steps), default=0.0)


def comparison_markdown(comparison: VariantComparison) -> str:
    """The branch comparison: a summary table, then each branch's load table.

    Args:
        comparison: The branch comparison.
    """
    lines = ["# Branch comparison", ""]
    free = "unknown" if comparison.free_gb is None else f"{comparison.free_gb:.2f} GB"
    lines += [f"Engine `{comparison.engine}`, free GPU memory {free}.", ""]
    lines += [
        "| branch | needs GB | status | users meeting SLO | saturates at users | peak out tok/s |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for outcome in comparison.outcomes:
        result = outcome.result
        if result is None:
            status = outcome.error or outcome.plan.reason if outcome.plan.fits else outcome.plan.reason
            lines.append(f"| {outcome.plan.variant} | {outcome.plan.needs_gb} | {status} | - | - | - |")
            continue
        status = "interrupted" if result.interrupted else "measured"
        lines.append(
            f"| {outcome.plan.variant} | {outcome.plan.needs_gb} | {status} | {result.users_meeting_slo or 0} "
            f"| {result.saturation_users or '-'} | {_peak(result):.0f} |"
        )
    lines += ["", advice(comparison), ""]
    for outcome in comparison.outcomes:
        if outcome.result is not None:
            lines.append(load_markdown(outcome.result, title=outcome.plan.variant))
    return "\n".join(lines).rstrip() + "\n"


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigurationError(
            "plots need matplotlib: pip install 'zephyr-tgi[bench]' (or pass --no-plots)"
        ) from None
    return plt


def _series(result: LoadResult) -> tuple[list[float], list[float]]:
    steps = [s for s in result.steps if s.ttft is not None]
    return [s.output_tokens_per_second for s in steps], [s.ttft.p99 * 1000 for s in steps if s.ttft is not None]


def plot_load(result: LoadResult, path: Path, *, label: str | None = None) -> Path:
    """Throughput against TTFT p99, one point per load level, annotated with the users."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    _throughput_axes(axes, [(label or result.url, result)], result)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _throughput_axes(axes: Any, results: Sequence[tuple[str, LoadResult]], reference: LoadResult) -> None:
    for name, result in results:
        throughput, ttft = _series(result)
        axes.plot(throughput, ttft, marker="o", label=name)
        for step, x, y in zip([s for s in result.steps if s.ttft is not None], throughput, ttft, strict=False):
            if step.users is not None:
                axes.annotate(str(step.users), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axes.axhline(reference.slo.ttft_p99 * 1000, color="grey", linestyle="--", linewidth=1, label="TTFT SLO")
    axes.set_xlabel("output tokens/s")
    axes.set_ylabel("TTFT p99 (ms)")
    axes.set_yscale("log")
    axes.set_title("Throughput vs latency (labels: concurrent users)")
    axes.legend(fontsize=8)


def plot_comparison(comparison: VariantComparison, directory: Path) -> list[Path]:
    """Two PNGs: throughput vs latency per branch, and users meeting the SLO per branch."""
    measured = [(o.plan.variant, o.result) for o in comparison.outcomes if o.result is not None]
    if not measured:
        return []
    plt = _pyplot()
    paths = []
    figure, axes = plt.subplots(figsize=(7, 4.5))
    _throughput_axes(axes, measured, measured[0][1])
    figure.tight_layout()
    paths.append(directory / "throughput_vs_latency.png")
    figure.savefig(paths[-1], dpi=110)
    plt.close(figure)
    figure, axes = plt.subplots(figsize=(7, 4.5))
    names = [name for name, _ in measured]
    axes.barh(names, [result.users_meeting_slo or 0 for _, result in measured])
    axes.set_xlabel("concurrent users meeting the SLO")
    axes.set_title(f"Users within the SLO ({_slo_text(measured[0][1])})")
    figure.tight_layout()
    paths.append(directory / "users_meeting_slo.png")
    figure.savefig(paths[-1], dpi=110)
    plt.close(figure)
    return paths


def write_reports(report: LoadResult | VariantComparison, directory: str | Path, *, plots: bool = True) -> list[Path]:
    """Write results.json, report.md and (with matplotlib) the PNG plots into `directory`.

    Args:
        report: A load test or a branch comparison.
        directory: Where the files go (created if missing).
        plots: Also draw the PNG plots (needs matplotlib).

    Returns:
        The files written.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json", out / "report.md"]
    written[0].write_text(report.model_dump_json(indent=2), encoding="utf-8")
    if isinstance(report, VariantComparison):
        written[1].write_text(comparison_markdown(report), encoding="utf-8")
        if plots:
            written += plot_comparison(report, out)
    else:
        written[1].write_text(load_markdown(report), encoding="utf-8")
        if plots and any(step.ttft is not None for step in report.steps):
            written.append(plot_load(report, out / "throughput_vs_latency.png"))
    return written
