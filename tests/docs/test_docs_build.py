"""The documentation site builds with `mkdocs build --strict` and no warning, and stays in step with the code:
every public name is in the API reference, every CLI command and option in the CLI page, every README link works."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

import zephyr_tgi
import zephyr_tgi.bench
import zephyr_tgi.integrations.langchain
import zephyr_tgi.testing
from zephyr_tgi._cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def test_mkdocs_build_is_strict_and_quiet(tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "-d",
            str(tmp_path / "site"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )

    log = completed.stdout + completed.stderr
    assert completed.returncode == 0, log
    problems = [line for line in log.splitlines() if re.match(r"\s*(WARNING|ERROR)\b", line)]
    assert not problems, log
    api_page = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    assert 'id="zephyr_tgi.ZephyrClient.chat_stream"' in api_page  # mkdocstrings rendered the docstrings
    assert "Bases:" not in api_page  # plumbing (ClientSurface, BaseChatModel) is hidden
    assert 'id="zephyr_tgi.integrations.langchain.ZephyrChatModel.bind_tools"' in api_page
    # What the clients and conversations inherit from their shared (private) parts is shown on each of them.
    assert 'id="zephyr_tgi.AsyncZephyrClient.from_env"' in api_page
    assert 'id="zephyr_tgi.Conversation.from_json"' in api_page
    chat = api_page[api_page.index('id="zephyr_tgi.ZephyrClient.chat"') :]
    assert "Parameters:" in chat[: chat.index('id="zephyr_tgi.ZephyrClient.chat_stream"')]  # a parameter table


def test_every_public_name_is_in_the_api_reference() -> None:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^::: (\S+)$", text, flags=re.MULTILINE))

    expected = {f"zephyr_tgi.{name}" for name in zephyr_tgi.__all__ if name != "__version__"}
    expected |= {f"zephyr_tgi.testing.{name}" for name in zephyr_tgi.testing.__all__}
    expected |= {f"zephyr_tgi.bench.{name}" for name in zephyr_tgi.bench.__all__}
    expected |= {f"zephyr_tgi.integrations.langchain.{name}" for name in zephyr_tgi.integrations.langchain.__all__}
    assert sorted(expected - documented) == []
    assert sorted(documented - expected) == []


def cli_commands() -> list[tuple[str, click.Command]]:
    assert isinstance(cli, click.Group)
    return sorted(cli.commands.items())


@pytest.mark.parametrize(("name", "command"), cli_commands(), ids=[name for name, _ in cli_commands()])
def test_the_cli_page_documents_every_command_and_option(name: str, command: click.Command) -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")

    assert f"## `{name}`" in text
    flags = [flag for param in command.params for flag in getattr(param, "opts", []) if flag.startswith("--")]
    missing = [flag for flag in flags if flag not in ("--help",) and f"`{flag}" not in text]
    assert missing == []


def test_readme_links_exist() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)

    local = [target for target in targets if not target.startswith(("http://", "https://"))]
    assert local, "the README links to the docs"
    assert [target for target in local if not (ROOT / target).exists()] == []


def test_readme_keeps_the_two_quick_start_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")

    assert "make demo   # creates .venv, installs, runs examples/quickstart.py" in readme
    assert "make test   # installs everything (Docker included) and runs the whole suite" in readme
