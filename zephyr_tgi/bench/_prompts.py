"""What a load test sends: synthetic prompts of an exact token length, or prompts read from a JSONL file."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._errors import ConfigurationError

if TYPE_CHECKING:
    from .. import AsyncZephyrClient

__all__ = ["BenchPrompt", "load_jsonl_prompts", "synthetic_prompts"]

# Plain words that every tokenizer splits the same way each time, so the length search converges.
_FILLER = (
    "river", "stone", "garden", "window", "morning", "paper", "music", "field", "cloud", "water", "light",
    "road", "city", "house", "night", "summer", "winter", "green", "quiet", "simple", "bright", "small",
    "clear", "people", "friend", "story", "little", "open", "gentle", "strong",
)  # fmt: skip


class BenchPrompt(BaseModel):
    """One user turn to send as a chat, with the answer length to ask for.

    `input_tokens` is the prompt's length as the server counts it (the rendered Zephyr chat, BOS included)
    when known.

    Attributes:
        content: The user turn.
        max_new_tokens: The answer length to ask for.
        system: The system prompt, if any.
        input_tokens: The rendered chat's length in tokens, when known.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    content: str = Field(min_length=1)
    max_new_tokens: int = Field(default=128, ge=1)
    system: str | None = None
    input_tokens: int | None = None


def _text(index: int, words: int) -> str:
    # A distinct opening per prompt keeps servers with a prefix cache from answering from cache.
    body = " ".join(_FILLER[(index * 7 + i) % len(_FILLER)] for i in range(words))
    return f"Request {index}: {body}"


async def _count(client: AsyncZephyrClient, content: str) -> int:
    return await client.count_tokens([{"role": "user", "content": content}])


async def _exact(client: AsyncZephyrClient, index: int, target: int) -> tuple[str, int]:
    """The longest text of this prompt's shape whose chat rendering is `target` tokens (or just under)."""
    low, high = 0, max(target, 1)
    # Binary search over whole words: token counts grow monotonically with the number of words.
    while low < high:
        middle = (low + high + 1) // 2
        if await _count(client, _text(index, middle)) <= target:
            low = middle
        else:
            high = middle - 1
    content = _text(index, low)
    count = await _count(client, content)
    # Top up with single characters, each at most one token, for the last few tokens a word would overshoot.
    while count < target:
        candidate = content + " a"
        candidate_count = await _count(client, candidate)
        if candidate_count > target:
            break
        content, count = candidate, candidate_count
    return content, count


async def synthetic_prompts(
    client: AsyncZephyrClient,
    *,
    input_tokens: int = 256,
    output_tokens: int = 128,
    count: int = 16,
) -> list[BenchPrompt]:
    """`count` distinct prompts, each exactly `input_tokens` long as the server's tokenizer counts the chat.

    Counting uses `client.count_tokens` (its local tokenizer, else the server's `/tokenize`). When the chat
    template alone is longer than `input_tokens`, or a server's tokenizer cannot hit the number exactly,
    ConfigurationError says so.

    Args:
        client: A client for the server whose tokenizer counts the prompts.
        input_tokens: The length of each rendered chat prompt, in tokens.
        output_tokens: The answer length each prompt asks for (`max_new_tokens`).
        count: How many distinct prompts.

    Returns:
        The prompts, with their measured `input_tokens`.

    Raises:
        ConfigurationError: a number below 1, or a length the template or tokenizer cannot hit.
    """
    if input_tokens < 1 or output_tokens < 1 or count < 1:
        raise ConfigurationError(
            f"input_tokens, output_tokens and count must be >= 1, got {input_tokens}, {output_tokens}, {count}"
        )
    minimum = await _count(client, _text(0, 0))
    if input_tokens < minimum:
        raise ConfigurationError(
            f"input_tokens={input_tokens} is shorter than the chat template around an empty prompt ({minimum} tokens)"
        )
    prompts: list[BenchPrompt] = []
    for index in range(count):
        content, measured = await _exact(client, index, input_tokens)
        if measured != input_tokens:
            raise ConfigurationError(
                f"cannot build a prompt of exactly {input_tokens} tokens with this tokenizer (got {measured})"
            )
        prompts.append(BenchPrompt(content=content, max_new_tokens=output_tokens, input_tokens=measured))
    return prompts


def load_jsonl_prompts(path: str | os.PathLike[str], *, default_max_new_tokens: int = 128) -> list[BenchPrompt]:
    """Prompts from a JSON-lines file: one object per line with `content` (or `prompt`), optionally
    `max_new_tokens` (or `output_tokens`) and `system`. Blank lines are skipped.

    Args:
        path: The JSON-lines file.
        default_max_new_tokens: The answer length for lines that give none.

    Returns:
        The prompts, in file order.

    Raises:
        ConfigurationError: the file is missing, a line is not a JSON object, or it has no content.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.readlines()
    except OSError as exc:
        raise ConfigurationError(f"cannot read prompts file {os.fspath(path)!r}: {exc.strerror or exc}") from None
    prompts: list[BenchPrompt] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{os.fspath(path)}:{number}"
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ConfigurationError(f"{where}: not JSON ({exc})") from None
        if not isinstance(row, dict):
            raise ConfigurationError(f"{where}: expected a JSON object, got {type(row).__name__}")
        fields = dict(row)
        if "prompt" in fields and "content" not in fields:
            fields["content"] = fields.pop("prompt")
        if "output_tokens" in fields and "max_new_tokens" not in fields:
            fields["max_new_tokens"] = fields.pop("output_tokens")
        fields.setdefault("max_new_tokens", default_max_new_tokens)
        try:
            prompts.append(BenchPrompt.model_validate(fields))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'line'}: {e['msg']}" for e in exc.errors())
            raise ConfigurationError(f"{where}: {problems}") from None
    if not prompts:
        raise ConfigurationError(f"prompts file {os.fspath(path)!r} holds no prompts")
    return prompts
