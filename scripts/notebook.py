"""Run `examples/zephyr_tgi.ipynb` against the emulator and save it with its outputs, or check the saved one is current.

    python scripts/notebook.py           # execute and save (make notebook)
    python scripts/notebook.py --check   # execute and compare with the committed outputs (CI)

The run is deterministic where it can be: ZEPHYR_TGI_* unset (so the notebook starts its own emulator, whose
answers are fixed), no timing metadata, execution counts from 1. What cannot be (the emulator's port, how the
kernel splits a stream into messages, the pixels of a plot, the capacity curve's wall-clock numbers) is
normalised before comparing: ports to PORT, consecutive stream messages joined, images compared by kind only.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import sys
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "zephyr_tgi.ipynb"
TIMEOUT_S = 300
_PORT = re.compile(r"127\.0\.0\.1:\d+")


def execute(path: Path = NOTEBOOK) -> Any:
    """The notebook, executed in a fresh python3 kernel with ZEPHYR_TGI_* unset."""
    notebook = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    saved = {name: os.environ.pop(name) for name in list(os.environ) if name.startswith("ZEPHYR_TGI_")}
    try:
        NotebookClient(
            notebook,
            timeout=TIMEOUT_S,
            kernel_name="python3",
            record_timing=False,
            resources={"metadata": {"path": str(path.parent)}},
        ).execute()
    finally:
        os.environ.update(saved)
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            output.get("metadata", {}).pop("transient", None)
            output.pop("transient", None)
            if output.get("output_type") == "stream":
                output["text"] = _PORT.sub("127.0.0.1:PORT", output["text"])
    return notebook


def normalized(notebook: Any) -> list[dict[str, Any]]:
    """What must not change between two runs: sources, and outputs with their unrepeatable parts evened out."""
    cells = []
    for cell in notebook.cells:
        entry: dict[str, Any] = {"type": cell.cell_type, "source": cell.source}
        if cell.cell_type == "code":
            outputs: list[dict[str, Any]] = []
            for output in copy.deepcopy(cell.outputs):
                kind = output["output_type"]
                if kind == "stream":
                    text = _PORT.sub("127.0.0.1:PORT", output["text"])
                    if outputs and outputs[-1]["kind"] == "stream" and outputs[-1]["name"] == output["name"]:
                        outputs[-1]["text"] += text
                    else:
                        outputs.append({"kind": "stream", "name": output["name"], "text": text})
                elif kind in ("display_data", "execute_result"):
                    data = {
                        mime: ("<image>" if mime.startswith("image/") else value)
                        for mime, value in output["data"].items()
                        if mime != "text/plain" or not any(m.startswith("image/") for m in output["data"])
                    }
                    outputs.append({"kind": kind, "data": data})
                else:
                    outputs.append({"kind": kind, "text": output.get("evalue", "")})
            entry["outputs"] = outputs
        cells.append(entry)
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed notebook, write nothing")
    args = parser.parse_args(argv)
    executed = execute()
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    if errors:
        print(f"the notebook raised: {errors[0].get('ename')}: {errors[0].get('evalue')}", file=sys.stderr)
        return 1
    if args.check:
        committed = nbformat.read(NOTEBOOK, as_version=4)  # type: ignore[no-untyped-call]
        if normalized(committed) != normalized(executed):
            print(f"{NOTEBOOK.relative_to(ROOT)} is not current: run `make notebook` and commit it", file=sys.stderr)
            return 1
        print(f"{NOTEBOOK.relative_to(ROOT)} is current")
        return 0
    nbformat.write(executed, NOTEBOOK)  # type: ignore[no-untyped-call]
    print(f"wrote {NOTEBOOK.relative_to(ROOT)} with its outputs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
