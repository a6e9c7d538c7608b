"""Shared test fixtures: where the project's reference material lives."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest
from hypothesis import settings

REPO_ROOT = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    """The shared reference folder (TGI's OpenAPI spec, snapshots, Zephyr's template), beside the clone."""
    configured = os.environ.get("ZEPHYR_TGI_REFERENCE_DIR")
    path = Path(configured) if configured else REPO_ROOT.parent / "shared" / "reference"
    if not (path / "tgi-openapi.json").is_file():
        pytest.fail(f"reference material not found at {path}; set ZEPHYR_TGI_REFERENCE_DIR")
    return path


def docker_unavailable(reason: str) -> NoReturn:
    """Skip a test that needs Docker, or fail it when ZEPHYR_TGI_REQUIRE_DOCKER=1 (CI) says Docker must be there."""
    if os.environ.get("ZEPHYR_TGI_REQUIRE_DOCKER") == "1":
        pytest.fail(f"{reason} (and ZEPHYR_TGI_REQUIRE_DOCKER=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def reference() -> Path:
    """Path of the shared reference folder."""
    return reference_dir()


# Hypothesis's per-example deadline measures wall time, which a loaded 2-core CI machine makes flaky;
# speed is checked by benchmarks, never by tests.
settings.register_profile("zephyr_tgi", deadline=None, print_blob=True)
settings.load_profile("zephyr_tgi")
