"""Telling the person at the terminal what a long wait is for, once it has lasted a few seconds."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import click

__all__ = ["NOTICE_AFTER", "notice_if_slow", "until_first"]

NOTICE_AFTER = 3.0  # seconds: shorter waits are normal for a generation and need no word
_T = TypeVar("_T")


@contextmanager
def notice_if_slow(url: str, what: str, *, after: float = NOTICE_AFTER) -> Iterator[None]:
    """Print one line on stderr if the block is still waiting after `after` seconds."""
    timer = threading.Timer(
        after, click.echo, args=(f"... still waiting for {url} ({what}); Ctrl-C stops",), kwargs={"err": True}
    )
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def until_first(items: Iterator[_T], url: str, what: str, *, after: float = NOTICE_AFTER) -> Iterator[_T]:
    """`items`, with a notice if the first one takes longer than `after` seconds."""
    with notice_if_slow(url, what, after=after):
        first = next(items, None)
    if first is None:
        return
    yield first
    yield from items
