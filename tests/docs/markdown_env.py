"""A pytest plugin for running the docs' Python blocks (pytest-markdown-docs): one emulator, as ZEPHYR_TGI_URL,
and for docs/replicas.md three, as ZEPHYR_TGI_REPLICAS (comma-separated, the first being ZEPHYR_TGI_URL's).

Loaded with `-p tests.docs.markdown_env` by `tests/docs/test_docs_blocks.py` and `make docs-blocks`; the blocks
read the URL as a user's script would, through `ZephyrClient.from_env()` or `os.environ`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from zephyr_tgi.testing import TGIEmulator


@pytest.fixture(scope="session", autouse=True)
def zephyr_tgi_url() -> Iterator[str]:
    # Prefill logprobs on, so the perplexity block runs as it would against `--enable-prefill-logprobs`.
    with contextlib.ExitStack() as stack:
        emulator = stack.enter_context(TGIEmulator(enable_prefill_logprobs=True))
        others = [stack.enter_context(TGIEmulator()) for _ in range(2)]
        replicas = ",".join([emulator.url, *(other.url for other in others)])
        previous = {name: os.environ.get(name) for name in ("ZEPHYR_TGI_URL", "ZEPHYR_TGI_REPLICAS")}
        os.environ["ZEPHYR_TGI_URL"] = emulator.url
        os.environ["ZEPHYR_TGI_REPLICAS"] = replicas
        try:
            yield emulator.url
        finally:
            for name, value in previous.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
