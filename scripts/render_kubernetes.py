"""Write the Kubernetes manifests under deploy/kubernetes/ (make kubernetes), or check they are current.

    python scripts/render_kubernetes.py           # write every engine x branch file, remove stale ones
    python scripts/render_kubernetes.py --check   # exit 1 and name the files that differ (CI runs the test)

The content comes from zephyr_tgi._deploy.catalog, which renders it from the launcher's own argument builders.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zephyr_tgi._deploy.catalog import rendered_files

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "kubernetes"


def stale_files(directory: Path = DEPLOY) -> list[str]:
    """Files under `directory` that differ from the rendered ones, are missing, or are no longer rendered."""
    expected = rendered_files()
    present = {path.relative_to(directory).as_posix() for path in directory.glob("*/*/*.yaml")}
    differing = [
        name
        for name, text in expected.items()
        if not (directory / name).is_file() or (directory / name).read_text(encoding="utf-8") != text
    ]
    return sorted(set(differing) | (present - set(expected)))


def write(directory: Path = DEPLOY) -> None:
    """Render every file into `directory` and remove the rendered files no longer produced."""
    expected = rendered_files()
    for path in directory.glob("*/*/*.yaml"):
        if path.relative_to(directory).as_posix() not in expected:
            path.unlink()
            if not any(path.parent.iterdir()):
                path.parent.rmdir()
    for name, text in expected.items():
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--directory", type=Path, default=DEPLOY, help="where the files are [deploy/kubernetes]")
    options = parser.parse_args()
    if options.check:
        stale = stale_files(options.directory)
        if stale:
            print("stale manifests (run `make kubernetes`):", *stale, sep="\n  ", file=sys.stderr)
            return 1
        return 0
    write(options.directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
