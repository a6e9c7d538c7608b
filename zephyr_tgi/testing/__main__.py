"""Entry point: `python -m zephyr_tgi.testing [TGI launcher flags] [--emulator-* flags]`."""

from __future__ import annotations

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
