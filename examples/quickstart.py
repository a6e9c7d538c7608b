"""Quick start: chat with Zephyr through TGI, streaming and not.

Uses the TGI server at ZEPHYR_TGI_URL when it is set; otherwise starts zephyr_tgi's built-in TGI
emulator on a free loopback port (its answers are canned text, not the model's) and says so.
"""

from __future__ import annotations

import os
import sys

from zephyr_tgi import SamplingParams, ZephyrClient


def tour(client: ZephyrClient) -> None:
    """Show the main calls against whatever server `client` points at."""
    info = client.info()
    print(f"model: {info.model_id} (TGI {info.version}), window {info.max_input_tokens}/{info.max_total_tokens} tokens")

    result = client.chat("What is GPTQ quantisation, in one sentence?", max_new_tokens=64)
    print(f"\nchat -> {result.text!r}\n        finish={result.finish_reason}, tokens={result.generated_tokens}")

    print("\nchat_stream -> ", end="", flush=True)
    for chunk in client.chat_stream(
        [{"role": "user", "content": "Name three uses of a 7B chat model."}],
        system="You are a concise assistant.",
        params=SamplingParams.preset("model_card"),
        max_new_tokens=64,
    ):
        print(chunk.text, end="", flush=True)
        if chunk.result is not None:
            print(f"\n        finish={chunk.result.finish_reason}")

    completion = client.chat_completion("Say hello.", max_tokens=16)
    print(f"\nchat_completion (/v1/chat/completions) -> {completion.text!r}")


def main() -> int:
    if os.environ.get("ZEPHYR_TGI_URL"):
        print(f"Using the TGI server at {os.environ['ZEPHYR_TGI_URL']} (from ZEPHYR_TGI_URL).")
        with ZephyrClient.from_env() as client:
            client.wait_until_ready(timeout=60)
            tour(client)
        return 0
    from zephyr_tgi.testing import TGIEmulator

    with TGIEmulator() as emulator:
        print(
            f"ZEPHYR_TGI_URL is not set: using zephyr_tgi's TGI emulator at {emulator.url}.\n"
            "Its answers are deterministic stand-in text, not Zephyr's. Set ZEPHYR_TGI_URL to use a real server."
        )
        with ZephyrClient(emulator.url) as client:
            tour(client)
    return 0


if __name__ == "__main__":
    sys.exit(main())
