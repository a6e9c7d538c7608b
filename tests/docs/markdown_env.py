"""A pytest plugin for running the docs' Python blocks (pytest-markdown-docs): one emulator, as ZEPHYR_TGI_URL.

Loaded with `-p tests.docs.markdown_env` by `tests/docs/test_docs_blocks.py` and `make docs-blocks`; the blocks
read the URL as a user's script would, through `ZephyrClient.from_env()` or `os.environ`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from zephyr_tgi.testing import TGIEmulator


@pytest.fixture(scope="session", autouse=True)
def zephyr_tgi_url() -> Iterator[str]:
    # Prefill logprobs on, so the perplexity block runs as it would against `--enable-prefill-logprobs`.
    with TGIEmulator(enable_prefill_logprobs=True) as emulator:
        previous = os.environ.get("ZEPHYR_TGI_URL")
        os.environ["ZEPHYR_TGI_URL"] = emulator.url
        try:
            yield emulator.url
        finally:
            if previous is None:
                os.environ.pop("ZEPHYR_TGI_URL", None)
            else:
                os.environ["ZEPHYR_TGI_URL"] = previous
