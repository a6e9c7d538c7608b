"""`zephyr-tgi info | health | tokenize | variants | generate`, as text and as --json, against the emulator."""

from __future__ import annotations

import json

import pytest

from zephyr_tgi import VARIANTS
from zephyr_tgi.testing import TGIEmulator, expected_reply

from .conftest import Cli


def test_help_lists_every_command(zephyr: Cli) -> None:
    result = zephyr("--help")

    assert result.exit_code == 0
    for command in ("serve", "chat", "generate", "info", "health", "tokenize", "variants", "emulator"):
        assert f"  {command} " in result.stdout


def test_version_is_the_package_version(zephyr: Cli) -> None:
    from zephyr_tgi import __version__

    result = zephyr("--version")

    assert result.exit_code == 0
    assert result.stdout.strip() == f"zephyr-tgi, version {__version__}"


def test_info_prints_the_model_and_its_limits(zephyr: Cli, emulator: TGIEmulator) -> None:
    result = zephyr("info")

    assert result.exit_code == 0, result.output
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert lines["url"] == emulator.url
    assert lines["model_id"] == "TheBloke/zephyr-7B-alpha-GPTQ"
    assert lines["max_total_tokens"] == "4096"


def test_info_json_is_one_object_with_the_url(zephyr: Cli, emulator: TGIEmulator) -> None:
    result = zephyr("info", "--json")

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["url"] == emulator.url
    assert data["model_id"] == emulator.info()["model_id"]
    assert data["max_input_tokens"] == 3696


def test_url_comes_from_the_environment(zephyr: Cli, emulator: TGIEmulator) -> None:
    result = zephyr("info", "--json", url=False, env={"ZEPHYR_TGI_URL": emulator.url})

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["url"] == emulator.url


def test_health_of_a_healthy_server_exits_0(zephyr: Cli, emulator: TGIEmulator) -> None:
    result = zephyr("health")

    assert result.exit_code == 0
    assert result.stdout == f"{emulator.url}: healthy\n"


def test_health_of_an_unavailable_server_exits_1(zephyr: Cli, emulator: TGIEmulator) -> None:
    emulator.set_faults(unavailable_for=60.0)

    result = zephyr("health", "--json")

    assert result.exit_code == 1
    found = json.loads(result.stdout)
    assert found["url"] == emulator.url
    assert found["healthy"] is False
    assert found["state"] == "unhealthy"
    assert "--wait" in found["hint"]


def test_health_wait_polls_until_the_server_is_healthy(zephyr: Cli, emulator: TGIEmulator) -> None:
    emulator.set_faults(unavailable_for=0.3)

    result = zephyr("health", "--wait", "10")

    assert result.exit_code == 0, result.output
    assert "healthy" in result.stdout


def test_tokenize_prints_one_token_per_line(zephyr: Cli) -> None:
    result = zephyr("tokenize", "Hello world")

    assert result.exit_code == 0, result.output
    rows = result.stdout.splitlines()
    assert rows[0].split() == ["id", "chars", "text"]
    assert rows[-1].endswith('" world"')
    assert result.stderr == f"{len(rows) - 1} tokens\n"


def test_tokenize_json_matches_the_clients_spans(zephyr: Cli, emulator: TGIEmulator) -> None:
    from zephyr_tgi import ZephyrClient

    result = zephyr("tokenize", "--json", "Hello world")

    with ZephyrClient(emulator.url) as client:
        expected = [span.model_dump() for span in client.tokenize("Hello world")]
    assert json.loads(result.stdout) == expected


def test_tokenize_count_reads_stdin(zephyr: Cli) -> None:
    text = "one two three"

    plain = zephyr("tokenize", "--count", input=text)
    as_json = zephyr("tokenize", "--count", "--json", input=text)

    assert plain.exit_code == as_json.exit_code == 0
    assert json.loads(as_json.stdout) == {"count": int(plain.stdout)}


def test_variants_lists_every_branch_of_the_table(zephyr: Cli) -> None:
    result = zephyr("variants")

    assert result.exit_code == 0
    branches = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert branches == [row.branch for row in VARIANTS.values()]
    main_row = result.stdout.splitlines()[1].split()
    assert main_row[-3:-1] == ["4.16", f"{VARIANTS[next(iter(VARIANTS))].estimated_vram_gb:.2f}"]


def test_variants_json_is_the_table(zephyr: Cli) -> None:
    result = zephyr("variants", "--json")

    assert json.loads(result.stdout) == [row.model_dump(mode="json") for row in VARIANTS.values()]


def test_generate_streams_the_raw_prompts_answer(zephyr: Cli) -> None:
    result = zephyr("generate", "Once upon a time")

    assert result.exit_code == 0, result.output
    assert result.stdout == expected_reply("Once upon a time") + "\n"


def test_generate_reads_the_prompt_from_stdin(zephyr: Cli) -> None:
    result = zephyr("generate", "--no-stream", input="Once upon a time")

    assert result.stdout == expected_reply("Once upon a time") + "\n"


def test_generate_json_is_one_result_object(zephyr: Cli) -> None:
    result = zephyr("generate", "--json", "--max-new-tokens", "4", "Once upon a time")

    data = json.loads(result.stdout)
    assert data["finish_reason"] == "length"
    assert data["generated_tokens"] == 4
    assert expected_reply("Once upon a time").startswith(data["text"])
    assert "tokens" not in data  # per-token details stay out of the summary


def test_generate_jsonl_chunks_join_to_the_result(zephyr: Cli) -> None:
    result = zephyr("generate", "--jsonl", "-p", "max_new_tokens=6", "Once upon a time")

    chunks = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(chunks) == 6
    assert "result" in chunks[-1]
    assert "".join(chunk["text"] for chunk in chunks) == chunks[-1]["result"]["text"]


def test_json_and_jsonl_together_are_a_usage_error(zephyr: Cli) -> None:
    result = zephyr("generate", "--json", "--jsonl", "x")

    assert result.exit_code == 2
    assert "choose one of --json and --jsonl" in result.stderr


def test_main_returns_the_exit_status(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from zephyr_tgi._cli.main import main

    monkeypatch.delenv("ZEPHYR_TGI_URL", raising=False)

    assert main(["--version"]) == 0
    assert main(["info"]) == 1
    assert main(["info", "--bogus"]) == 2
    assert "error: no server URL" in capsys.readouterr().err
