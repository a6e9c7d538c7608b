"""A process that owns a TGIServer on the emulator image until a signal ends it (used by test_owner_signals).

Usage: python owner_process.py IMAGE CACHE_DIR (ready|waiting). "waiting" makes the emulator refuse connections
for minutes, so the owner stays in the readiness wait. Prints `ready CONTAINER_ID` once the server is ready.
"""

from __future__ import annotations

import sys
import threading

from zephyr_tgi import TGIServer

OWNER_LIFETIME = 120.0  # seconds: bounded, so an owner the test lost track of never stays around


def main(image: str, cache_dir: str, mode: str) -> None:
    env = {"ZEPHYR_TGI_EMULATOR_REFUSE_FOR": "600"} if mode == "waiting" else {}
    with TGIServer(image=image, gpus=None, cache_dir=cache_dir, env=env, progress=False, startup_timeout=300) as server:
        print(f"ready {server.container_id}", flush=True)
        threading.Event().wait(OWNER_LIFETIME)  # until the test's signal ends this process


if __name__ == "__main__":
    main(*sys.argv[1:4])
