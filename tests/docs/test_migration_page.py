"""docs/migration.md's Python blocks run, in order, against the emulator they start."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "migration.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", PAGE.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_each_python_block_runs(index: int) -> None:
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(BLOCKS[index], f"migration.md block {index + 1}", "exec"), {})
    if "print(exc)" in BLOCKS[index]:
        assert "not supported on SGLang" in output.getvalue()
