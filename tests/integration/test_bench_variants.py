"""The branch comparison through the real launcher, with the emulator image standing in for TGI."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from zephyr_tgi._cli.main import cli
from zephyr_tgi.bench import (
    BenchPrompt,
    Bounds,
    Concurrent,
    VariantComparison,
    compare_variants,
    resolve_variants,
    tgi_server_factory,
)

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

# The performance model inside the container: 40 ms to the first token, 10 ms per token.
MODEL_ARGS = ("--emulator-prefill-base", "0.04", "--emulator-prefill-per-token", "0", "--emulator-decode-step", "0.01")


async def prompts(_client: object) -> list[BenchPrompt]:
    return [BenchPrompt(content="Which branch?", max_new_tokens=12)]


async def test_each_branch_that_fits_is_launched_measured_and_removed(emulator_image: str, tmp_path: Path) -> None:
    factory = tgi_server_factory(
        image=emulator_image,
        gpus=None,
        cache_dir=tmp_path / "hf",
        startup_timeout=60,
        progress=False,
        extra_args=MODEL_ARGS,
    )
    events: list[str] = []
    comparison = await compare_variants(
        resolve_variants("main,gptq-8bit-32g-actorder_True,gptq-4bit-32g-actorder_True"),
        prompts,
        Concurrent(users=2),
        server_factory=factory,
        free_memory=lambda: 7.0,  # the 4-bit branches fit, the 8-bit one does not
        bounds=Bounds(max_requests=6),
        results_path=tmp_path / "results.json",
        on_event=events.append,
    )

    main, eight_bit, four_bit = comparison.outcomes
    assert eight_bit.result is None
    assert "skipped" in eight_bit.plan.reason
    for outcome in (main, four_bit):
        assert outcome.result is not None, outcome.error
        step = outcome.result.steps[0]
        assert step.successful == 6
        assert step.itl is not None
        assert step.itl.median == pytest.approx(0.010, rel=0.25)
    assert sum("starting the server" in e for e in events) == 2
    assert sum("stopping the server" in e for e in events) == 2
    assert VariantComparison.model_validate_json((tmp_path / "results.json").read_text()) == comparison


def test_the_command_compares_branches_through_the_launcher(
    emulator_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        ["bench", "--variants", "main,gptq-8bit--1g-actorder_True", "--image", emulator_image, "--gpus", "none",
         "--free-gb", "7", "--profile", "sweep", "--max-users", "2", "--input-tokens", "40", "--output-tokens", "8",
         "--prompt-count", "2", "--max-requests", "4", "--out", str(out), "-q",
         *(f"--launcher-arg={arg}" for arg in MODEL_ARGS)],
        env={"ZEPHYR_TGI_URL": None},
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert "| main |" in result.stdout
    assert "skipped: needs about" in result.stdout
    assert "Use main" in result.stdout
    for name in ("results.json", "report.md", "throughput_vs_latency.png", "users_meeting_slo.png"):
        assert (out / name).exists(), name
