"""Every Python block of the docs and the README runs against the emulator (pytest-markdown-docs), except blocks
marked `{.python notest}`, each of which says in the text before it why it does not run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(python|\{\.python[^}]*\})\s*$", re.MULTILINE)


def fences() -> list[tuple[Path, int, str]]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            found.append((page, text.count("\n", 0, match.start()) + 1, match.group(1)))
    return found


def test_every_block_that_does_not_run_says_why() -> None:
    for page, line, info in fences():
        if "notest" in info:
            before = page.read_text(encoding="utf-8").splitlines()[line - 3 : line - 1]
            assert any(text.startswith("Not run") for text in before), f"{page.name}:{line} is notest without a reason"


def test_every_other_block_runs_against_the_emulator() -> None:
    runnable = [fence for fence in fences() if "notest" not in fence[2]]
    assert len(runnable) >= 15
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            # pytest-recording's module-scoped autouse fixture cannot attach to a Markdown block.
            "-p",
            "no:recording",
            "-p",
            "tests.docs.markdown_env",
            "--markdown-docs",
            "--markdown-docs-syntax=superfences",
            *(str(page) for page in PAGES),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert completed.returncode == 0, completed.stdout[-6000:] + completed.stderr[-2000:]
    assert f"{len(runnable)} passed" in completed.stdout, completed.stdout[-2000:]
