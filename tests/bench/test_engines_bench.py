"""The load generator against vLLM's and SGLang's dialects: the same measurements through the same client."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from zephyr_tgi import AsyncZephyrClient, RetryPolicy
from zephyr_tgi._cli.main import cli
from zephyr_tgi._launcher.variants import VariantInfo
from zephyr_tgi.bench import BenchPrompt, Bounds, Concurrent, LoadResult, compare_variants, resolve_variants, run_load
from zephyr_tgi.testing import TGIEmulator

from .conftest import FIXED

ENGINES = ("vllm", "sglang")
SMALL = ["--input-tokens", "40", "--output-tokens", "8", "--prompt-count", "2", "--max-requests", "4", "-q"]
CLEAN_ENV: dict[str, str | None] = {"ZEPHYR_TGI_URL": None, "ZEPHYR_TGI_API_KEY": None, "ZEPHYR_TGI_ENGINE": None}
_IDENTIFY = ("/info", "/get_model_info", "/version")


@pytest.fixture(params=ENGINES)
def dialect(request: pytest.FixtureRequest) -> Iterator[TGIEmulator]:
    with TGIEmulator(engine=request.param, performance=FIXED) as server:
        yield server


def _generations(server: TGIEmulator) -> list[object]:
    return [r for r in server.stats.requests if r.path == "/v1/completions"]


async def test_the_measured_latencies_are_the_configured_ones_on_each_engine(dialect: TGIEmulator) -> None:
    prompts = [BenchPrompt(content="Describe the weather", max_new_tokens=6)]
    async with AsyncZephyrClient(dialect.url, retry=RetryPolicy.never(), budget="off") as client:
        result = await run_load(client, prompts, Concurrent(users=2), bounds=Bounds(max_requests=6))
    [step] = result.steps
    assert result.engine == dialect.engine
    assert (step.successful, step.errors) == (6, {})
    assert step.ttft is not None
    assert step.itl is not None
    assert 0.09 < step.ttft.median < 0.25  # 100 ms of prefill
    assert 0.015 < step.itl.median < 0.05  # 20 ms a token
    assert len(_generations(dialect)) == 6  # streamed on the engine's completions route


def test_the_cli_measures_a_url_speaking_the_named_engine(dialect: TGIEmulator, tmp_path: Path) -> None:
    args = ["bench", "--url", dialect.url, "--engine", dialect.engine, "--profile", "concurrent", "--users", "2"]
    result = CliRunner().invoke(cli, [*args, *SMALL, "--out", str(tmp_path), "--json", "--no-plots"], env=CLEAN_ENV)
    assert result.exit_code == 0, result.output
    saved = LoadResult.model_validate_json((tmp_path / "results.json").read_text())
    assert saved.engine == dialect.engine
    assert saved.steps[0].successful == 4
    assert json.loads(result.stdout)["engine"] == dialect.engine
    # Named, the engine is not identified: no probe of another engine's routes.
    assert not [r.path for r in dialect.stats.requests if r.path in _IDENTIFY and r.path != "/version"]


def test_worker_processes_speak_the_engine_the_parent_identified(dialect: TGIEmulator, tmp_path: Path) -> None:
    args = ["bench", "--url", dialect.url, "--profile", "concurrent", "--users", "2", "--processes", "2"]
    result = CliRunner().invoke(cli, [*args, *SMALL, "--out", str(tmp_path), "--no-plots"], env=CLEAN_ENV)
    assert result.exit_code == 0, result.output
    saved = LoadResult.model_validate_json((tmp_path / "results.json").read_text())
    assert saved.engine == dialect.engine
    assert saved.steps[0].successful == 4
    probes = [r.path for r in dialect.stats.requests if r.path in _IDENTIFY]
    expected = {"sglang": ["/info", "/get_model_info"], "vllm": ["/info", "/get_model_info", "/version"]}
    assert probes == expected[dialect.engine]  # once, in the parent


@pytest.mark.parametrize("engine", ENGINES)
def test_the_built_in_emulator_speaks_the_named_engine(engine: str, tmp_path: Path) -> None:
    args = ["bench", "--emulator", "--engine", engine, "--profile", "concurrent", "--users", "1", "--max-seconds", "20"]
    result = CliRunner().invoke(cli, [*args, *SMALL, "--out", str(tmp_path), "--no-plots"], env=CLEAN_ENV)
    assert result.exit_code == 0, result.output
    saved = LoadResult.model_validate_json((tmp_path / "results.json").read_text())
    assert (saved.engine, saved.steps[0].successful) == (engine, 4)


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_comparison_of_branches_on_another_engine_records_it(engine: str) -> None:
    launched: list[str] = []

    @contextlib.contextmanager
    def servers(info: VariantInfo) -> Iterator[str]:
        launched.append(info.branch)
        with TGIEmulator(engine=engine, performance=FIXED, revision=info.branch) as server:
            yield server.url

    async def prompts(_client: object) -> list[BenchPrompt]:
        return [BenchPrompt(content="Compare the branches", max_new_tokens=4)]

    comparison = await compare_variants(
        resolve_variants("main"),
        prompts,
        Concurrent(users=1),
        server_factory=servers,
        free_memory=lambda: 8.0,
        bounds=Bounds(max_requests=2),
        engine=engine,  # type: ignore[arg-type]
    )
    assert launched == ["main"]
    assert comparison.engine == engine
    [outcome] = comparison.outcomes
    assert outcome.result is not None
    assert outcome.result.engine == engine
    assert outcome.result.steps[0].successful == 2
