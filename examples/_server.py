"""Shared by the examples: a client for ZEPHYR_TGI_URL, or for the built-in emulator when it is unset."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from zephyr_tgi import AsyncZephyrClient, ZephyrClient


@contextlib.contextmanager
def server_url(**emulator_options: Any) -> Iterator[str]:
    """The URL of a TGI server: ZEPHYR_TGI_URL, or an emulator started for the example (and said so)."""
    url = os.environ.get("ZEPHYR_TGI_URL")
    if url:
        print(f"Using the TGI server at {url} (from ZEPHYR_TGI_URL).")
        yield url
        return
    from zephyr_tgi.testing import TGIEmulator

    with TGIEmulator(**emulator_options) as emulator:
        print(f"ZEPHYR_TGI_URL is not set: using zephyr_tgi's TGI emulator at {emulator.url} (stand-in answers).")
        yield emulator.url


def client_for(url: str, **options: Any) -> ZephyrClient:
    """A client for `url`, with ZEPHYR_TGI_API_KEY when set."""
    return ZephyrClient(url, api_key=os.environ.get("ZEPHYR_TGI_API_KEY"), **options)


def async_client_for(url: str, **options: Any) -> AsyncZephyrClient:
    """An async client for `url`, with ZEPHYR_TGI_API_KEY when set."""
    return AsyncZephyrClient(url, api_key=os.environ.get("ZEPHYR_TGI_API_KEY"), **options)
