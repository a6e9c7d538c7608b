"""Which branches fit the GPU (an injectable probe, and the real nvidia-smi path), and the comparison run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from zephyr_tgi import VARIANTS, ConfigurationError, GPTQVariant, VariantInfo
from zephyr_tgi.bench import (
    BenchPrompt,
    Bounds,
    Concurrent,
    Progress,
    VariantComparison,
    compare_variants,
    nvidia_smi_free_memory_gb,
    plan_variants,
    resolve_variants,
)
from zephyr_tgi.bench._variants import parse_nvidia_smi_free_mib
from zephyr_tgi.testing import PerformanceModel, TGIEmulator

FOUR_BIT = {"main", "gptq-4bit-32g-actorder_True", "gptq-4bit-64g-actorder_True"}


def test_all_means_the_six_branches_and_lists_keep_their_order() -> None:
    assert [v.branch for v in resolve_variants("all")] == [v.value for v in GPTQVariant]
    assert [v.branch for v in resolve_variants("gptq-8bit--1g-actorder_True, main,main")] == [
        "gptq-8bit--1g-actorder_True",
        "main",
    ]
    with pytest.raises(ConfigurationError, match="unknown GPTQ variant"):
        resolve_variants("main,gptq-3bit")


def test_branches_that_do_not_fit_are_skipped_with_the_reason() -> None:
    plans = plan_variants(resolve_variants("all"), free_gb=8.0)

    assert {p.variant for p in plans if p.fits} == FOUR_BIT
    skipped = [p for p in plans if not p.fits]
    assert len(skipped) == 3
    assert all("the GPU has 8.00 GB free" in p.reason for p in skipped)
    main = next(p for p in plans if p.variant == "main")
    assert main.needs_gb == pytest.approx(VARIANTS[GPTQVariant.MAIN].estimated_vram_gb + 1.5)


def test_unknown_free_memory_runs_every_branch() -> None:
    assert all(p.fits for p in plan_variants(resolve_variants("all"), free_gb=None))


def _fake_nvidia_smi(directory: Path, output: str, code: int = 0) -> None:
    script = directory / "nvidia-smi"
    script.write_text(f"#!/bin/sh\necho '{output}'\necho \"$@\" > {directory / 'args'}\nexit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_the_nvidia_smi_probe_reads_free_memory_of_the_chosen_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_nvidia_smi(tmp_path, "20480")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")

    assert nvidia_smi_free_memory_gb(1) == pytest.approx(20480 * 2**20 / 1e9)
    assert "--query-gpu=memory.free" in (tmp_path / "args").read_text()
    assert "--id=1" in (tmp_path / "args").read_text()


def test_the_probe_says_unknown_without_nvidia_smi_or_when_it_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert nvidia_smi_free_memory_gb() is None
    _fake_nvidia_smi(tmp_path, "NVIDIA-SMI has failed", code=9)
    assert nvidia_smi_free_memory_gb() is None
    assert parse_nvidia_smi_free_mib("[N/A]") is None


class EmulatorServers:
    """A server factory serving each branch from an in-process emulator, recording what it launched."""

    def __init__(self) -> None:
        self.launched: list[str] = []
        self.running = 0

    @contextlib.contextmanager
    def __call__(self, info: VariantInfo) -> Iterator[str]:
        self.launched.append(info.branch)
        # 8-bit branches are slower per step, as they are on a GPU.
        step = 0.010 if info.bits == 4 else 0.016
        model = PerformanceModel(prefill_base=0.01, prefill_per_token=0, decode_step_base=step)
        with TGIEmulator(performance=model, revision=info.branch) as emulator:
            self.running += 1
            try:
                yield emulator.url
            finally:
                self.running -= 1


async def fixed_prompts(_client: object) -> list[BenchPrompt]:
    return [BenchPrompt(content="Compare the branches", max_new_tokens=8)]


async def test_the_comparison_launches_each_branch_that_fits_in_turn_and_saves(tmp_path: Path) -> None:
    servers = EmulatorServers()
    events: list[str] = []
    comparison = await compare_variants(
        resolve_variants("main,gptq-8bit-32g-actorder_True,gptq-4bit-32g-actorder_True"),
        fixed_prompts,
        Concurrent(users=2),
        server_factory=servers,
        free_memory=lambda: 8.0,
        bounds=Bounds(max_requests=4),
        results_path=tmp_path / "results.json",
        on_event=events.append,
    )

    assert servers.launched == ["main", "gptq-4bit-32g-actorder_True"]
    assert servers.running == 0  # each torn down
    assert [o.plan.variant for o in comparison.outcomes] == [
        "main",
        "gptq-8bit-32g-actorder_True",
        "gptq-4bit-32g-actorder_True",
    ]
    skipped = comparison.outcomes[1]
    assert skipped.result is None
    assert "skipped" in skipped.plan.reason
    for outcome in (comparison.outcomes[0], comparison.outcomes[2]):
        assert outcome.result is not None
        assert outcome.result.steps[0].successful == 4
    assert any("skipped" in event for event in events)
    saved = (tmp_path / "results.json").read_text(encoding="utf-8")
    assert '"gptq-4bit-32g-actorder_True"' in saved


async def test_a_resumed_comparison_runs_only_what_is_missing(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    first = EmulatorServers()
    await compare_variants(
        resolve_variants("main"),
        fixed_prompts,
        Concurrent(users=1),
        server_factory=first,
        free_memory=lambda: None,
        bounds=Bounds(max_requests=2),
        results_path=results,
    )
    second = EmulatorServers()
    comparison = await compare_variants(
        resolve_variants("main,gptq-4bit-64g-actorder_True"),
        fixed_prompts,
        Concurrent(users=1),
        server_factory=second,
        free_memory=lambda: None,
        bounds=Bounds(max_requests=2),
        results_path=results,
    )

    assert second.launched == ["gptq-4bit-64g-actorder_True"]
    assert all(o.result is not None for o in comparison.outcomes)


async def test_a_branch_that_cannot_start_is_recorded_and_the_rest_still_run(tmp_path: Path) -> None:
    from zephyr_tgi import ContainerStartError

    servers = EmulatorServers()

    @contextlib.contextmanager
    def flaky(info: VariantInfo) -> Iterator[str]:
        if info.branch == "main":
            raise ContainerStartError("the container exited with code 1", exit_code=1, logs="CUDA out of memory")
        with servers(info) as url:
            yield url

    comparison = await compare_variants(
        resolve_variants("main,gptq-4bit-64g-actorder_True"),
        fixed_prompts,
        Concurrent(users=1),
        server_factory=flaky,
        free_memory=lambda: None,
        bounds=Bounds(max_requests=2),
    )

    failed, measured = comparison.outcomes
    assert failed.error is not None
    assert failed.error.startswith("ContainerStartError")
    assert measured.result is not None


async def test_an_interrupted_comparison_keeps_what_it_measured_and_stops_the_server(tmp_path: Path) -> None:
    servers = EmulatorServers()
    measuring = asyncio.Event()

    def progress(update: Progress) -> None:
        if update.requests_done >= 2:
            measuring.set()

    task = asyncio.ensure_future(
        compare_variants(
            resolve_variants("main,gptq-4bit-64g-actorder_True"),
            fixed_prompts,
            Concurrent(users=2),
            server_factory=servers,
            free_memory=lambda: None,
            bounds=Bounds(max_requests=100_000),
            results_path=tmp_path / "results.json",
            on_progress=progress,
        )
    )
    await asyncio.wait_for(measuring.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert servers.launched == ["main"]
    assert servers.running == 0
    saved = VariantComparison.model_validate_json((tmp_path / "results.json").read_text())
    main = saved.outcomes[0].result
    assert main is not None
    assert main.interrupted
    assert main.steps[-1].successful >= 2
    assert not saved.completed("main")  # so --resume measures it again
