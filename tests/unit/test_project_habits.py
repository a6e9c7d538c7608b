"""The project's habits hold: a changelog entry for this version, pre-commit running ruff and mypy, the trove
classifiers, development tools as a dependency group (not a published extra), strict pytest settings."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

import zephyr_tgi

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_changelog_has_this_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## [{zephyr_tgi.__version__}]" in changelog
    assert PYPROJECT["project"]["version"] == zephyr_tgi.__version__


def test_pre_commit_runs_ruff_and_mypy_and_its_config_is_valid() -> None:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    hooks = {hook["id"]: hook["entry"] for repo in config["repos"] for hook in repo["hooks"]}
    assert hooks["ruff-check"].split()[:2] == [".venv/bin/ruff", "check"]
    assert hooks["ruff-format"].split()[:3] == [".venv/bin/ruff", "format", "--check"]
    assert hooks["mypy"] == ".venv/bin/mypy"
    pre_commit = shutil.which("pre-commit", path=str(Path(sys.executable).parent))
    assert pre_commit is not None, "pre-commit is in the dev dependency group"
    checked = subprocess.run(
        [pre_commit, "validate-config", ".pre-commit-config.yaml"], cwd=ROOT, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_classifiers_say_typed() -> None:
    assert "Typing :: Typed" in PYPROJECT["project"]["classifiers"]
    assert (ROOT / "zephyr_tgi" / "py.typed").is_file()


def test_development_tools_are_a_dependency_group_not_an_extra() -> None:
    assert "dev" not in PYPROJECT["project"]["optional-dependencies"]
    assert any(req.startswith("pytest>=") for req in PYPROJECT["dependency-groups"]["dev"])
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "--group dev" in makefile


def test_pytest_is_strict_about_markers_config_and_warnings() -> None:
    options = PYPROJECT["tool"]["pytest"]["ini_options"]
    assert {"--strict-markers", "--strict-config"} <= set(options["addopts"])
    filters: list[str] = options["filterwarnings"]
    assert filters[0] == "error"
    for ignored in filters[1:]:
        parts = ignored.split(":")
        assert parts[0] == "ignore"
        assert len(parts) >= 3, f"{ignored!r} names no warning class"
        assert parts[2], f"{ignored!r} names no warning class"
