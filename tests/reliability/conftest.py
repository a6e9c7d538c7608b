"""Fixtures shared by the reliability tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from zephyr_tgi.testing import TGIEmulator


@pytest.fixture(scope="module")
def emulator() -> Iterator[TGIEmulator]:
    """One in-process emulator per test module (tests reset it or script its answers themselves)."""
    with TGIEmulator() as server:
        yield server
