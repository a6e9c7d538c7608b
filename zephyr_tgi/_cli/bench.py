"""`zephyr-tgi bench`: load-test one server, or launch and compare GPTQ branches (docs/bench.md).

Heavy imports (the client, the bench package, matplotlib) happen when the command runs.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from zephyr_tgi import AsyncZephyrClient
    from zephyr_tgi._engines import EngineName
    from zephyr_tgi.bench import BenchPrompt, LoadResult, Progress, VariantComparison

__all__ = ["bench"]

_PROFILES = ("sweep", "concurrent", "constant", "poisson")
_ENGINES = ("tgi", "vllm", "sglang")


class _Status:
    """The progress line on stderr: rewritten in place on a terminal, one line every few seconds otherwise."""

    def __init__(self, quiet: bool) -> None:
        self._quiet = quiet
        self._tty = sys.stderr.isatty()
        self._context = ""
        self._last_line = 0.0
        self._width = 0

    def context(self, text: str) -> None:
        self._context = text

    def event(self, text: str) -> None:
        if self._quiet:
            return
        self._clear()
        click.echo(text, err=True)

    def progress(self, update: Progress) -> None:
        if self._quiet:
            return
        line = (
            f"{self._context}{update.label}: {update.elapsed:5.1f}s, {update.requests_done} done, "
            f"{update.in_flight} in flight, {update.errors} errors, {update.tokens_per_second:7.0f} tok/s"
        )
        if self._tty:
            padding = " " * max(self._width - len(line), 0)
            click.echo("\r" + line + padding, nl=False, err=True)
            self._width = len(line)
        elif time.monotonic() - self._last_line >= 5:
            self._last_line = time.monotonic()
            click.echo(line, err=True)

    def _clear(self) -> None:
        if self._tty and self._width:
            click.echo("\r" + " " * self._width + "\r", nl=False, err=True)
            self._width = 0


def _one_url(values: Sequence[str]) -> str | None:
    """The one URL of `--url` (given once, or ZEPHYR_TGI_URL), or None.

    Raises:
        click.BadParameter: several URLs (`--url` repeated, or a comma-separated list): a load test through a
            client that spreads requests over replicas would measure its balancing and the sum of the servers,
            not a server; bench each replica on its own.
    """
    urls = [url.strip() for value in values for url in value.split(",") if url.strip()]
    if len(urls) > 1:
        from zephyr_tgi._client.core import display_url  # a password in a URL is not echoed

        shown = ", ".join(display_url(url) for url in urls)
        raise click.BadParameter(
            f"got {len(urls)} URLs ({shown}), but a load test measures one server: "
            "run one bench per replica (a client of several replicas would measure its balancing, not a server)",
            param_hint="'--url' / ZEPHYR_TGI_URL",
        )
    return urls[0] if urls else None


def _profile(kind: str, users: int | None, rate: float | None, max_users: int, seed: int) -> Any:
    from zephyr_tgi.bench import Concurrent, Constant, Poisson, Sweep

    if kind == "concurrent":
        return Concurrent(users=users or 8)
    if kind in ("constant", "poisson"):
        if rate is None:
            raise click.UsageError(f"--profile {kind} needs --rate REQUESTS_PER_SECOND")
        return Constant(rate=rate) if kind == "constant" else Poisson(rate=rate, seed=seed)
    return Sweep(start_users=users or 1, max_users=max_users)


def _prompt_source(
    prompts_file: Path | None, input_tokens: int, output_tokens: int, count: int
) -> Callable[[AsyncZephyrClient], Awaitable[Sequence[BenchPrompt]]]:
    from zephyr_tgi.bench import load_jsonl_prompts, synthetic_prompts

    async def source(client: AsyncZephyrClient) -> Sequence[BenchPrompt]:
        if prompts_file is not None:
            return load_jsonl_prompts(prompts_file, default_max_new_tokens=output_tokens)
        return await synthetic_prompts(client, input_tokens=input_tokens, output_tokens=output_tokens, count=count)

    return source


def _interrupted_exit(written: list[Path], status: _Status) -> None:
    status.event("interrupted: the results measured so far are saved")
    for path in written:
        click.echo(f"wrote {path}", err=True)
    click.get_current_context().exit(130)


@click.command("bench")
@click.option(
    "--url",
    envvar="ZEPHYR_TGI_URL",
    show_envvar=True,
    metavar="URL",
    multiple=True,
    callback=lambda _ctx, _param, value: _one_url(value),
    help="The server to measure (one: a load test measures one server).",
)
@click.option("--api-key", envvar="ZEPHYR_TGI_API_KEY", show_envvar=True, help="The server's api key.")
@click.option("--emulator", is_flag=True, help="Measure a built-in emulator with its performance model (no GPU).")
@click.option("--profile", "kind", type=click.Choice(_PROFILES), default="sweep", show_default=True)
@click.option("--users", type=click.IntRange(1, 4096), help="Users for concurrent (default 8); first sweep step.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="Requests/s for constant and poisson.")
@click.option("--max-users", type=click.IntRange(1, 4096), default=64, show_default=True, help="Sweep ceiling.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the poisson arrivals.")
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker processes sharing each load level, for loads one process cannot generate.",
)
@click.option("--max-requests", type=click.IntRange(1), default=100, show_default=True, help="Per load level.")
@click.option("--max-seconds", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True)
@click.option("--input-tokens", type=click.IntRange(1), default=256, show_default=True, help="Synthetic prompts.")
@click.option("--output-tokens", type=click.IntRange(1), default=128, show_default=True, help="max_new_tokens.")
@click.option("--prompt-count", type=click.IntRange(1, 1024), default=16, show_default=True)
@click.option(
    "--prompts", "prompts_file", type=click.Path(dir_okay=False, path_type=Path), help="JSONL prompts instead."
)
@click.option("--slo-ttft-ms", type=click.FloatRange(min=0, min_open=True), default=200.0, show_default=True)
@click.option("--slo-itl-ms", type=click.FloatRange(min=0, min_open=True), default=50.0, show_default=True)
@click.option("--variants", metavar="all|LIST", help="Launch and compare GPTQ branches (comma-separated) instead.")
@click.option(
    "--engine",
    type=click.Choice(_ENGINES),
    help="The engine: what --url serves (default: identified), --emulator's dialect and --variants' server (tgi).",
)
@click.option("--image", help="With --variants: the server image (e.g. the emulator image).")
@click.option("--gpus", default="all", show_default=True, help="With --variants: 'all', a count, ids, or 'none'.")
@click.option(
    "--free-gb", type=click.FloatRange(min=0), help="With --variants: free GPU memory, instead of nvidia-smi."
)
@click.option("--launcher-arg", "launcher_args", multiple=True, help="With --variants: an extra launcher flag.")
@click.option("--resume", is_flag=True, help="With --variants: keep branches already measured in OUT/results.json.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("bench-results"))
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots (no matplotlib needed).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON instead of a markdown table.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr (the files written are still listed).")
def bench(**options: Any) -> None:
    """Measure how many concurrent users a server (or each GPTQ branch) serves within a latency SLO.

    Against --url (or --emulator): runs the profile and writes OUT/results.json, OUT/report.md and plots.
    With --variants: launches each branch that fits the GPU's free memory through the launcher, warms it up,
    runs the profile, stops it, and compares the branches. Ctrl-C stops and keeps what was measured.
    """
    from zephyr_tgi.bench import SLO, Bounds

    status = _Status(options["quiet"])
    profile = _profile(options["kind"], options["users"], options["rate"], options["max_users"], options["seed"])
    bounds = Bounds(max_requests=options["max_requests"], max_seconds=options["max_seconds"])
    slo = SLO(ttft_p99=options["slo_ttft_ms"] / 1000, itl_p99=options["slo_itl_ms"] / 1000)
    source = _prompt_source(
        options["prompts_file"], options["input_tokens"], options["output_tokens"], options["prompt_count"]
    )
    if options["variants"]:
        _compare(options, profile, bounds, slo, source, status)
    else:
        _single(options, profile, bounds, slo, source, status)


def _single(options: dict[str, Any], profile: Any, bounds: Any, slo: Any, source: Any, status: _Status) -> None:
    from zephyr_tgi import ConfigurationError
    from zephyr_tgi.bench import load_markdown, run_load, write_reports
    from zephyr_tgi.bench._runner import open_clients, peak_users

    out: Path = options["out"]
    latest: list[LoadResult] = []

    engine = options["engine"]

    async def run(url: str) -> LoadResult:
        users = 1 if options["processes"] > 1 else peak_users(profile, bounds)
        async with open_clients(url, users, api_key=options["api_key"], engine=engine or "auto") as clients:
            status.event(f"building prompts against {url}")
            prompts = await source(clients[0])
            status.event(f"{len(prompts)} prompts; running the {profile.kind} profile")
            return await run_load(
                clients,
                prompts,
                profile,
                bounds=bounds,
                slo=slo,
                on_progress=status.progress,
                on_step=latest.append,
                processes=options["processes"],
                api_key=options["api_key"],
            )

    emulator = None
    if options["emulator"]:
        from zephyr_tgi.testing import PerformanceModel, TGIEmulator

        emulator = TGIEmulator(engine=engine or "tgi", performance=PerformanceModel()).start()
        url = emulator.url
    elif options["url"]:
        url = options["url"]
    else:
        raise ConfigurationError("no server to measure: pass --url, --emulator, or --variants")
    try:
        result = asyncio.run(run(url))
    except KeyboardInterrupt:
        written = write_reports(latest[-1], out, plots=not options["no_plots"]) if latest else []
        _interrupted_exit(written, status)
        return
    finally:
        if emulator is not None:
            emulator.stop()
    written = write_reports(result, out, plots=not options["no_plots"])
    if options["as_json"]:
        click.echo(result.model_dump_json(indent=2))
    else:
        click.echo(load_markdown(result), nl=False)
    for path in written:
        click.echo(f"wrote {path}", err=True)


def _gpus(text: str) -> Any:
    if text == "none":
        return None
    if text == "all":
        return "all"
    return int(text) if text.isdigit() else [part.strip() for part in text.split(",") if part.strip()]


def _compare(options: dict[str, Any], profile: Any, bounds: Any, slo: Any, source: Any, status: _Status) -> None:
    from zephyr_tgi.bench import (
        compare_variants,
        comparison_markdown,
        nvidia_smi_free_memory_gb,
        resolve_variants,
        tgi_server_factory,
        write_reports,
    )

    out: Path = options["out"]
    results = out / "results.json"
    if results.exists() and not options["resume"]:
        results.unlink()  # a fresh comparison; --resume keeps the branches measured before
    variants = resolve_variants(options["variants"])
    engine: EngineName = options["engine"] or "tgi"
    server_options: dict[str, Any] = {
        "engine": engine,
        "gpus": _gpus(options["gpus"]),
        "extra_args": tuple(options["launcher_args"]),
        "progress": False,
    }
    if options["image"]:
        server_options["image"] = options["image"]
    free_gb = options["free_gb"]
    probe = (lambda: free_gb) if free_gb is not None else nvidia_smi_free_memory_gb

    def event(text: str) -> None:
        status.context(text.split(":")[0] + " ")
        status.event(text)

    async def run() -> VariantComparison:
        return await compare_variants(
            variants,
            source,
            profile,
            server_factory=tgi_server_factory(**server_options),
            free_memory=probe,
            bounds=bounds,
            slo=slo,
            results_path=results,
            api_key=options["api_key"],
            on_progress=status.progress,
            on_event=event,
            processes=options["processes"],
            engine=engine,
        )

    from zephyr_tgi.bench._compare import load_comparison

    try:
        comparison = asyncio.run(run())
    except KeyboardInterrupt:
        saved = load_comparison(results)
        written = write_reports(saved, out, plots=not options["no_plots"]) if saved is not None else []
        _interrupted_exit(written, status)
        return
    written = write_reports(comparison, out, plots=not options["no_plots"])
    if options["as_json"]:
        click.echo(comparison.model_dump_json(indent=2))
    else:
        click.echo(comparison_markdown(comparison), nl=False)
    for path in written:
        click.echo(f"wrote {path}", err=True)
