"""Perplexity from prefill logprobs, with a sliding window for texts longer than the server's window."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .._errors import ConfigurationError, PrefillUnavailableError
from .._types import TokenSpan

__all__ = ["Window", "in_characters", "perplexity_of", "plan_windows", "scored_logprobs"]


@dataclass(frozen=True, slots=True)
class Window:
    """Tokens [start, end) are sent; those from `score_from` on are scored (the rest is context)."""

    start: int
    end: int
    score_from: int


def plan_windows(n_tokens: int, window: int, stride: int) -> list[Window]:
    """Windows of at most `window` tokens moving by `stride`, each token scored exactly once.

    Raises:
        ConfigurationError: a window or stride that is not positive, or a stride longer than the window.
    """
    if window < 1 or stride < 1 or stride > window:
        raise ConfigurationError(f"stride must be between 1 and the window ({window} tokens), got {stride}")
    windows: list[Window] = []
    scored_until = 0
    start = 0
    while scored_until < n_tokens:
        end = min(start + window, n_tokens)
        windows.append(Window(start, end, scored_until))
        scored_until = end
        start += stride
    return windows


def in_characters(text: str, spans: Sequence[TokenSpan]) -> list[TokenSpan]:
    """`/tokenize` spans (offsets in UTF-8 bytes, as TGI reports them) with offsets in characters of `text`.

    A window is cut out of the text by its first and last tokens' offsets; cutting a str at byte offsets would
    shift every cut after the first non-ASCII character.
    """
    encoded = text.encode("utf-8")
    if len(encoded) == len(text):
        return list(spans)  # ASCII: bytes are characters
    chars = [0] * (len(encoded) + 1)  # byte offset -> character offset (a character's inner bytes: its start)
    position = 0
    for index, char in enumerate(text):
        size = len(char.encode("utf-8"))
        for inner in range(size):
            chars[position + inner] = index
        position += size
    chars[position] = len(text)

    def at(offset: int) -> int:
        return chars[min(max(offset, 0), len(encoded))]

    return [span.model_copy(update={"start": at(span.start), "stop": at(span.stop)}) for span in spans]


def chunk_text(text: str, spans: Sequence[TokenSpan], window: Window) -> str:
    """The part of `text` covered by the window's tokens.

    A token like `▁word` covers " word"; sent as the start of a prompt, that space would become a token of
    its own and SentencePiece would add its own `▁` again, so one leading space is left for it to add.
    """
    start = spans[window.start].start
    if window.start > 0 and text.startswith(" ", start):
        start += 1
    return text[start : spans[window.end - 1].stop]


def scored_logprobs(prompt_logprobs: Sequence[float | None], window: Window, hint: str) -> list[float]:
    """The logprobs of the window's scored tokens, from one logprob per prompt token (BOS first).

    Raises:
        PrefillUnavailableError: the answer had no prompt logprobs (`hint` says what the engine needs).
    """
    scored = list(prompt_logprobs[1:])
    if not scored or any(logprob is None for logprob in scored):
        raise PrefillUnavailableError(hint)
    skip = window.score_from - window.start
    return [float(logprob) for logprob in scored[skip:] if logprob is not None]


def perplexity_of(logprobs: Sequence[float]) -> float:
    """exp of the mean negative logprob."""
    if not logprobs:
        raise ConfigurationError("perplexity needs at least one token")
    return math.exp(-sum(logprobs) / len(logprobs))
