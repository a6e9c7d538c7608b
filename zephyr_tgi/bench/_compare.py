"""Compare GPTQ branches: for each that fits, launch it, warm it up, run the profile, stop it, save."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._engines import EngineName
from .._errors import ZephyrTGIError
from .._launcher.variants import VariantInfo
from ._metrics import SLO
from ._profiles import Bounds, Profile
from ._prompts import BenchPrompt
from ._runner import LoadResult, ProgressCallback, open_clients, peak_users, run_load
from ._variants import (
    FreeMemoryProbe,
    ServerFactory,
    VariantComparison,
    VariantOutcome,
    nvidia_smi_free_memory_gb,
    plan_variants,
)

if TYPE_CHECKING:
    from .. import AsyncZephyrClient

__all__ = ["PromptSource", "compare_variants", "tgi_server_factory"]

PromptSource = Callable[["AsyncZephyrClient"], Awaitable[Sequence[BenchPrompt]]]
"""Builds the prompts once a server is up (synthetic prompts count tokens with its tokenizer)."""

_WARMUP_REQUESTS = 2


def tgi_server_factory(**server_options: Any) -> ServerFactory:
    """Launch each branch with `TGIServer(variant, **server_options)` (image, gpus, extra_args, ...).

    Args:
        **server_options: `TGIServer` arguments other than the variant.

    Returns:
        A factory for `compare_variants(server_factory=...)`.
    """

    @contextlib.contextmanager
    def launch(info: VariantInfo) -> Iterator[str]:
        from .._launcher.server import TGIServer

        with TGIServer(info.branch, **server_options) as server:
            yield server.url

    return launch


async def _warm_up(client: AsyncZephyrClient, prompts: Sequence[BenchPrompt]) -> None:
    """A couple of short generations, so the first measured request does not pay for cold caches."""
    for prompt in list(prompts)[:_WARMUP_REQUESTS]:
        async for _chunk in client.chat_stream(prompt.content, system=prompt.system, max_new_tokens=8):
            pass


def load_comparison(path: Path) -> VariantComparison | None:
    """The comparison saved at `path` (None when there is none yet)."""
    if not path.exists():
        return None
    return VariantComparison.model_validate_json(path.read_text(encoding="utf-8"))


def save_comparison(path: Path, comparison: VariantComparison) -> None:
    """Write atomically, so an interruption mid-write cannot lose the earlier branches."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(comparison.model_dump_json(indent=2), encoding="utf-8")
    partial.replace(path)


async def compare_variants(
    variants: Sequence[VariantInfo],
    prompts: PromptSource,
    profile: Profile,
    *,
    server_factory: ServerFactory,
    free_memory: FreeMemoryProbe = nvidia_smi_free_memory_gb,
    bounds: Bounds | None = None,
    slo: SLO | None = None,
    results_path: str | Path | None = None,
    api_key: str | None = None,
    on_progress: ProgressCallback | None = None,
    on_event: Callable[[str], None] | None = None,
    processes: int = 1,
    engine: EngineName = "tgi",
) -> VariantComparison:
    """Measure each branch that fits the GPU's free memory; skipped ones keep their reason.

    `engine` is the engine `server_factory` launches (the clients speak it without asking, and the
    comparison records it).

    With `results_path`, the comparison is saved after every step and branches already measured there are
    not run again (resume an interrupted run by calling again with the same path). `processes` shares each
    load level among worker processes (see `run_load`).

    Args:
        variants: The branches to compare, in order (`resolve_variants`).
        prompts: Makes the prompts once per branch, from a client for its server (e.g. `synthetic_prompts`).
        profile: How requests are sent to each branch.
        server_factory: Starts a branch's server and yields its URL (`tgi_server_factory`).
        free_memory: Reads the GPU's free memory in GB (None when it cannot tell: every branch is tried).
        bounds: When each load level ends; default `Bounds()`.
        slo: The latency target; default `SLO()`.
        results_path: A JSON file to save the comparison to and resume from.
        api_key: The servers' api key, if they have one.
        engine: The engine `server_factory` launches ("tgi", "vllm" or "sglang"), which the clients speak.
        on_progress: Called twice a second with the level running now.
        on_event: Called with a line for each branch launched, skipped, measured or failed.
        processes: Worker processes sharing each load level.

    Returns:
        Every branch's plan and, when it ran, its measurements or error.
    """
    say = on_event or (lambda _text: None)
    path = Path(results_path) if results_path is not None else None
    free_gb = await asyncio.to_thread(free_memory)
    plans = plan_variants(variants, free_gb)
    previous = load_comparison(path) if path is not None else None
    comparison = VariantComparison(
        engine=engine,
        free_gb=free_gb,
        outcomes=[
            (previous.outcome(plan.variant) if previous is not None and previous.completed(plan.variant) else None)
            or VariantOutcome(plan=plan)
            for plan in plans
        ],
    )

    def record(outcome: VariantOutcome) -> None:
        nonlocal comparison
        comparison = comparison.with_outcome(outcome)
        if path is not None:
            save_comparison(path, comparison)

    if path is not None:
        save_comparison(path, comparison)
    for index, plan in enumerate(plans, start=1):
        where = f"[{index}/{len(plans)}] {plan.variant}"
        if not plan.fits:
            say(f"{where}: {plan.reason}")
            continue
        if comparison.completed(plan.variant):
            say(f"{where}: already measured in {path}, kept")
            continue
        info = next(v for v in variants if v.branch == plan.variant)
        say(f"{where}: starting the server")
        manager = server_factory(info)
        try:
            url = await asyncio.to_thread(manager.__enter__)
        except ZephyrTGIError as exc:
            say(f"{where}: could not start: {exc}")
            record(VariantOutcome(plan=plan, error=f"{type(exc).__name__}: {exc}"))
            continue
        try:
            users = 1 if processes > 1 else peak_users(profile, bounds or Bounds())
            async with open_clients(url, users, api_key=api_key, engine=engine) as clients:
                client = clients[0]
                chosen = await prompts(client)
                say(f"{where}: warming up at {url}")
                await _warm_up(client, chosen)
                say(f"{where}: measuring")

                def saved(partial: LoadResult, plan: Any = plan) -> None:
                    record(VariantOutcome(plan=plan, result=partial))

                await run_load(
                    clients,
                    chosen,
                    profile,
                    bounds=bounds,
                    slo=slo,
                    on_progress=on_progress,
                    on_step=saved,
                    processes=processes,
                    api_key=api_key,
                )
        except ZephyrTGIError as exc:
            say(f"{where}: failed: {exc}")
            record(VariantOutcome(plan=plan, error=f"{type(exc).__name__}: {exc}"))
        finally:
            say(f"{where}: stopping the server")
            await asyncio.shield(asyncio.to_thread(manager.__exit__, None, None, None))
    return comparison
