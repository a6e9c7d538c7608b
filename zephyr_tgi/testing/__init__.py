"""Test helpers for zephyr_tgi: a TGI emulator speaking real HTTP, with fault injection.

```python
from zephyr_tgi.testing import TGIEmulator, expected_reply

with TGIEmulator() as tgi:
    ...  # point a client at tgi.url
```

Names load on first use: importing this package (as pytest does for the plugin) needs neither h11
nor anything else outside the standard library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._emulator import TGIEmulator
    from ._faults import Faults, ScriptedResponse
    from ._logs import LOG_LINES, STAGE_MARKERS
    from ._performance import PerformanceModel
    from ._replies import expected_reply, render_zephyr_prompt
    from ._stats import EmulatorStats, RecordedRequest
    from ._tokenizer import BuiltinTokenizer, EmulatorTokenizer, SentencePieceTokenizer, TokenSpan

__all__ = [
    "LOG_LINES",
    "STAGE_MARKERS",
    "BuiltinTokenizer",
    "EmulatorStats",
    "EmulatorTokenizer",
    "Faults",
    "PerformanceModel",
    "RecordedRequest",
    "ScriptedResponse",
    "SentencePieceTokenizer",
    "TGIEmulator",
    "TokenSpan",
    "expected_reply",
    "render_zephyr_prompt",
]

_SOURCES = {
    "LOG_LINES": "._logs",
    "STAGE_MARKERS": "._logs",
    "BuiltinTokenizer": "._tokenizer",
    "EmulatorStats": "._stats",
    "EmulatorTokenizer": "._tokenizer",
    "Faults": "._faults",
    "PerformanceModel": "._performance",
    "RecordedRequest": "._stats",
    "ScriptedResponse": "._faults",
    "SentencePieceTokenizer": "._tokenizer",
    "TGIEmulator": "._emulator",
    "TokenSpan": "._tokenizer",
    "expected_reply": "._replies",
    "render_zephyr_prompt": "._replies",
}


def __getattr__(name: str) -> Any:
    """Import a public name from its private module on first access."""
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(source, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
