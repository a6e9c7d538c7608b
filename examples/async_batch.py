"""Batch generation: many prompts, bounded concurrency, results in order, per-item errors; sync and async."""

from __future__ import annotations

import asyncio
import time

from _server import async_client_for, client_for, server_url

from zephyr_tgi import GenerationResult

PROMPTS = [f"Give me tip number {i} for serving LLMs." for i in range(24)]


async def run_async(url: str) -> None:
    async with async_client_for(url) as client:
        started = time.perf_counter()
        results = await client.batch_chat(PROMPTS, concurrency=8, max_new_tokens=32)
        elapsed = time.perf_counter() - started
    ok = [r for r in results if isinstance(r, GenerationResult)]
    tokens = sum(r.generated_tokens or 0 for r in ok)
    print(f"async batch_chat: {len(ok)}/{len(results)} answered in {elapsed:.2f} s ({tokens / elapsed:.0f} tokens/s)")
    print(f"  first answer: {ok[0].text[:70]!r}...")


def run_sync(url: str) -> None:
    with client_for(url) as client:
        results = client.batch_chat(PROMPTS[:6], concurrency=3, max_new_tokens=16)
    for prompt, result in zip(PROMPTS, results, strict=False):
        outcome = result.text[:50] if isinstance(result, GenerationResult) else f"failed: {result}"
        print(f"  {prompt[:30]!r} -> {outcome!r}")


def main() -> None:
    with server_url(token_latency=0.002) as url:
        asyncio.run(run_async(url))
        print("sync batch_chat (threads; also works inside a running event loop, e.g. Jupyter):")
        run_sync(url)


if __name__ == "__main__":
    main()
