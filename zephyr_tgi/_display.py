"""Short previews for reprs and notebook display: a result or a conversation reads in one line, or one table."""

from __future__ import annotations

import html
from collections.abc import Iterable

__all__ = ["html_turns", "preview"]

PREVIEW_CHARS = 60


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis, as a Python literal."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 1] + "…")


def html_turns(title: str, turns: Iterable[tuple[str, str]], footer: str = "") -> str:
    """A small HTML table of (role, content) turns, escaped, for Jupyter's rich display."""
    rows = "".join(
        f'<tr><td style="text-align:left;vertical-align:top"><b>{html.escape(role)}</b></td>'
        f'<td style="text-align:left;white-space:pre-wrap">{html.escape(content)}</td></tr>'
        for role, content in turns
    )
    foot = f"<caption style='caption-side:bottom'>{html.escape(footer)}</caption>" if footer else ""
    head = f"<thead><tr><th colspan=2 style='text-align:left'>{html.escape(title)}</th></tr></thead>"
    return f"<table>{head}{rows}{foot}</table>"
