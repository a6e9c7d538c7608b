"""Where zephyr_tgi's client time goes, for the scenarios `make bench` measures (cProfile, CPU clock).

    python -m benchmarks.profile stream            # 256-token streams, one event per write
    python -m benchmarks.profile stream-batched    # the same, 64 events per write (parsing)
    python -m benchmarks.profile nonstream         # chat() with a short answer
    python -m benchmarks.profile conversation      # asks 100-120 of a 120-turn Conversation, local tokenizer

The servers run in other processes, as in `make bench`. The profile's clock is this process's CPU time, so
waiting on the server does not show; cProfile's own overhead inflates every Python-level call alike.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from benchmarks.harness import emulator_process, raw_server
from benchmarks.run import CONVERSATION_ANSWER_TOKENS, CONVERSATION_WINDOW, PACE, _tokenizer_model
from benchmarks.scenarios import QUESTION, _turn_text
from zephyr_tgi import Conversation, ZephyrClient, ZephyrTokenizer


@contextmanager
def _server(kind: str) -> Iterator[str]:
    if kind in ("stream", "nonstream"):
        with raw_server("tgi", "--events-per-write", "1", "--pace", PACE) as url:
            yield url
    elif kind == "stream-batched":
        with raw_server("tgi", "--events-per-write", "64", "--pace", PACE) as url:
            yield url
    else:
        with emulator_process(*CONVERSATION_WINDOW, "--tokenizer-model", _tokenizer_model()) as url:
            yield url


def _workload(kind: str, url: str) -> tuple[Callable[[], None], Callable[[], None], str]:
    """(warm-up, the profiled work, its unit) for `kind`."""
    if kind in ("stream", "stream-batched"):
        client = ZephyrClient(url)

        def streams() -> None:
            for _ in range(10):
                for _ in client.generate_stream(QUESTION, max_new_tokens=256):
                    pass

        return streams, streams, "2560 tokens"
    if kind == "nonstream":
        client = ZephyrClient(url)

        def chats() -> None:
            for _ in range(300):
                client.chat(QUESTION, max_new_tokens=16)

        return chats, chats, "300 requests"
    client = ZephyrClient(url, tokenizer=ZephyrTokenizer.from_file(_tokenizer_model()))
    conversation = Conversation(client)

    def first_turns() -> None:
        for turn in range(1, 100):
            conversation.ask(_turn_text(turn), max_new_tokens=CONVERSATION_ANSWER_TOKENS)

    def last_turns() -> None:
        for turn in range(100, 121):
            conversation.ask(_turn_text(turn), max_new_tokens=CONVERSATION_ANSWER_TOKENS)

    return first_turns, last_turns, "21 asks (turns 100-120)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=("stream", "stream-batched", "nonstream", "conversation"))
    parser.add_argument("--top", type=int, default=25, help="functions to show")
    args = parser.parse_args(argv)
    with _server(args.kind) as url:
        warm_up, work, unit = _workload(args.kind, url)
        warm_up()
        profiler = cProfile.Profile(time.process_time)
        cpu0 = time.process_time()
        profiler.runcall(work)
        print(f"{args.kind}: {1e3 * (time.process_time() - cpu0):.1f} ms of CPU (profiled) for {unit}")
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumtime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
