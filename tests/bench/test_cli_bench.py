"""`zephyr-tgi bench` against a URL and the built-in emulator; usage errors; Ctrl-C keeps the results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from zephyr_tgi._cli.main import cli
from zephyr_tgi.bench import LoadResult
from zephyr_tgi.testing import TGIEmulator

from .conftest import FIXED

SMALL = ["--input-tokens", "40", "--output-tokens", "8", "--prompt-count", "2", "--max-requests", "4", "-q"]
CLEAN_ENV: dict[str, str | None] = {"ZEPHYR_TGI_URL": None, "ZEPHYR_TGI_API_KEY": None}


def bench(*args: str) -> Result:
    return CliRunner().invoke(cli, ["bench", *args], env=CLEAN_ENV)


@pytest.fixture
def emulator() -> Iterator[TGIEmulator]:
    with TGIEmulator(performance=FIXED) as server:
        yield server


def test_a_concurrent_run_against_a_url_prints_the_table_and_writes_the_reports(
    emulator: TGIEmulator, tmp_path: Path
) -> None:
    result = bench("--url", emulator.url, "--profile", "concurrent", "--users", "2", *SMALL, "--out", str(tmp_path))

    assert result.exit_code == 0, result.output
    assert "| 2 users | 4 | 0 |" in result.stdout
    saved = LoadResult.model_validate_json((tmp_path / "results.json").read_text())
    assert saved.steps[0].successful == 4
    assert saved.steps[0].ttft is not None
    # 100 ms of prefill each; the second user's prefill can wait for the first's.
    assert 0.09 < saved.steps[0].ttft.median < 0.25
    assert (tmp_path / "throughput_vs_latency.png").exists()
    assert f"wrote {tmp_path / 'report.md'}" in result.stderr


def test_json_output_and_a_custom_slo(emulator: TGIEmulator, tmp_path: Path) -> None:
    result = bench(
        "--url", emulator.url, "--profile", "constant", "--rate", "10", "--slo-ttft-ms", "50", *SMALL,
        "--out", str(tmp_path), "--json", "--no-plots",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["slo"]["ttft_p99"] == 0.05
    assert data["steps"][0]["meets_slo"] is False  # 100 ms to the first token is over a 50 ms target
    assert not (tmp_path / "throughput_vs_latency.png").exists()


def test_the_built_in_emulator_needs_no_server(tmp_path: Path) -> None:
    result = bench("--emulator", "--profile", "sweep", "--max-users", "2", *SMALL, "--out", str(tmp_path))

    assert result.exit_code == 0, result.output
    assert "| 1 user |" in result.stdout
    assert "| 2 users |" in result.stdout


def test_prompts_from_a_jsonl_file(emulator: TGIEmulator, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Name a river", "max_new_tokens": 3}\n', encoding="utf-8")

    result = bench("--url", emulator.url, "--profile", "concurrent", "--users", "1", "--prompts", str(prompts),
                   "--max-requests", "2", "-q", "--out", str(tmp_path / "out"), "--json", "--no-plots")  # fmt: skip

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"][0]["output_tokens_mean"] <= 3


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--profile", "constant", "--url", "http://127.0.0.1:9"], 2, "--profile constant needs --rate"),
        (["--users", "0"], 2, "--users"),
        ([], 1, "no server to measure: pass --url, --emulator, or --variants"),
        (["--variants", "gptq-3bit"], 1, "unknown GPTQ variant 'gptq-3bit'"),
    ],
)
def test_usage_errors_say_what_to_do(args: list[str], code: int, message: str) -> None:
    result = bench(*args)

    assert result.exit_code == code
    assert message in result.stderr


def test_ctrl_c_stops_and_keeps_what_was_measured(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    process = subprocess.Popen(
        [sys.executable, "-m", "zephyr_tgi._cli.main", "bench", "--emulator", "--profile", "concurrent",
         "--users", "4", "--input-tokens", "40", "--output-tokens", "64", "--prompt-count", "2",
         "--max-requests", "100000", "--max-seconds", "600", "--out", str(out), "--no-plots"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        # Progress lines come every 5 s when stderr is not a terminal: the first one means requests are done.
        deadline = time.monotonic() + 60
        for line in process.stderr:
            if " done," in line and not line.split(" done,")[0].endswith(" 0"):
                break
            assert time.monotonic() < deadline, "no progress within a minute"
        process.send_signal(signal.SIGINT)
        _stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()

    assert process.returncode == 130, stderr
    assert "interrupted: the results measured so far are saved" in stderr
    saved = LoadResult.model_validate_json((out / "results.json").read_text())
    assert saved.interrupted
    assert saved.steps[-1].interrupted
    assert saved.steps[-1].successful >= 1


def test_worker_processes_share_the_load(emulator: TGIEmulator, tmp_path: Path) -> None:
    result = bench("--url", emulator.url, "--profile", "concurrent", "--users", "2", "--processes", "2", *SMALL,
                   "--out", str(tmp_path), "--json", "--no-plots")  # fmt: skip

    assert result.exit_code == 0, result.output
    step = json.loads(result.stdout)["steps"][0]
    assert step["processes"] == 2
    assert step["successful"] == 4
    assert step["client_cpu_seconds"] > 0


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--url", "http://127.0.0.1:9", "--url", "http://u:secret@127.0.0.1:10"], {}),
        (["--url", "http://127.0.0.1:9,http://u:secret@127.0.0.1:10"], {}),
        ([], {"ZEPHYR_TGI_URL": "http://127.0.0.1:9,http://u:secret@127.0.0.1:10"}),
    ],
)
def test_several_urls_are_refused_naming_the_option_and_why(args: list[str], env: dict[str, str]) -> None:
    # Nothing listens on those ports: the refusal comes before anything is sent.
    result = CliRunner().invoke(cli, ["bench", *args, *SMALL], env={**CLEAN_ENV, **env})
    assert result.exit_code == 2, result.output
    assert "--url" in result.stderr
    assert "ZEPHYR_TGI_URL" in result.stderr
    assert "got 2 URLs" in result.stderr
    assert "a load test measures one server" in result.stderr
    assert "secret" not in result.stderr


def test_one_url_from_the_environment_with_a_trailing_comma_is_one_url(emulator: TGIEmulator, tmp_path: Path) -> None:
    env = {**CLEAN_ENV, "ZEPHYR_TGI_URL": emulator.url + ","}
    result = CliRunner().invoke(cli, ["bench", "--profile", "concurrent", "--users", "1", *SMALL,
                                      "--out", str(tmp_path), "--no-plots"], env=env)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert LoadResult.model_validate_json((tmp_path / "results.json").read_text()).steps[0].successful == 4
