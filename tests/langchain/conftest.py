"""One emulator for LangChain's standard integration tests, reached through ZEPHYR_TGI_URL as users would."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from zephyr_tgi.testing import TGIEmulator


@pytest.fixture(scope="session")
def langchain_emulator() -> Iterator[TGIEmulator]:
    with TGIEmulator() as emulator:
        yield emulator
