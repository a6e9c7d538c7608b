"""Streaming: tokens printed as they arrive, time to first token, stopping early, async fan-out, OpenAI-style.

Uses the TGI server at ZEPHYR_TGI_URL when it is set; otherwise starts zephyr_tgi's TGI emulator (stand-in
answers, paced 10 ms per token so you can watch them arrive) and says so.
"""

from __future__ import annotations

import asyncio
import time

from _server import async_client_for, client_for, server_url

from zephyr_tgi import AsyncZephyrClient, ZephyrClient


def stream_one_answer(client: ZephyrClient) -> None:
    """Print an answer token by token; the last chunk carries the whole result."""
    print("\n== chat_stream")
    started = time.perf_counter()
    first_token_after: float | None = None
    for chunk in client.chat_stream("Write a haiku about GPUs.", system="You are a poet.", max_new_tokens=64):
        if first_token_after is None:
            first_token_after = time.perf_counter() - started
        print(chunk.text, end="", flush=True)
        if chunk.result is not None:
            elapsed = time.perf_counter() - started
            print(
                f"\n[finish: {chunk.result.finish_reason}, {chunk.result.generated_tokens} tokens in {elapsed:.2f} s, "
                f"first token after {first_token_after:.3f} s]"
            )


def stop_early(client: ZephyrClient) -> None:
    """Leave the loop when you have seen enough: the connection closes and TGI stops generating."""
    print("\n== stop after 8 tokens")
    text = ""
    for chunk in client.chat_stream("Count from one to one hundred, in words.", max_new_tokens=200):
        text += chunk.text
        if chunk.index >= 8:
            break
    print(f"{text!r} ... (stopped by the caller)")


def raw_prompt(client: ZephyrClient) -> None:
    """generate_stream sends the prompt as it is: no chat template."""
    print("\n== generate_stream (raw prompt)")
    for chunk in client.generate_stream("The three primary colours are", max_new_tokens=16):
        print(chunk.text, end="", flush=True)
    print()


def openai_style(client: ZephyrClient) -> None:
    """TGI's OpenAI-compatible Messages API, streamed (the server renders the chat template)."""
    print("\n== chat_completion(stream=True)")
    for chunk in client.chat_completion("Say hello in French.", stream=True, max_tokens=16):
        print(chunk.text, end="", flush=True)
    print()


async def concurrent_streams(client: AsyncZephyrClient) -> None:
    """Three streams at once with the async client; each line shows which answer a token belongs to."""
    print("\n== three async streams at once")
    questions = ["Name a river.", "Name a mountain.", "Name a desert."]
    answers = ["" for _ in questions]

    async def one(index: int, question: str) -> None:
        async for chunk in client.chat_stream(question, max_new_tokens=12):
            answers[index] += chunk.text

    await asyncio.gather(*(one(i, q) for i, q in enumerate(questions)))
    for question, answer in zip(questions, answers, strict=True):
        print(f"{question:<18} -> {answer}")


def main() -> None:
    with server_url(token_latency=0.01) as url:
        with client_for(url) as client:
            stream_one_answer(client)
            stop_early(client)
            raw_prompt(client)
            openai_style(client)

        async def run_async() -> None:
            async with async_client_for(url) as aclient:
                await concurrent_streams(aclient)

        asyncio.run(run_async())


if __name__ == "__main__":
    main()
