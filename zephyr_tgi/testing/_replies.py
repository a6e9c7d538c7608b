"""What the emulator "generates": scripted replies or a deterministic English-like text per prompt."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

__all__ = ["expected_reply", "last_user_content", "render_zephyr_prompt"]

_ASSISTANT_PROMPT = "<|assistant|>\n"
_USER_HEADER = "<|user|>\n"
_ZEPHYR_ROLES = frozenset({"system", "user", "assistant"})

# A small fixed vocabulary keeps replies readable and tokenizer caches warm.
_WORDS = (
    "the",
    "model",
    "answer",
    "quick",
    "light",
    "river",
    "stone",
    "garden",
    "people",
    "simple",
    "clear",
    "small",
    "bright",
    "window",
    "story",
    "music",
    "paper",
    "winter",
    "summer",
    "city",
    "road",
    "friend",
    "little",
    "green",
    "water",
    "night",
    "morning",
    "house",
    "field",
    "cloud",
    "about",
    "under",
    "between",
    "always",
    "never",
    "often",
    "quiet",
    "gentle",
    "strong",
    "open",
    "reads",
    "writes",
    "builds",
    "finds",
    "keeps",
    "takes",
    "makes",
    "gives",
    "sees",
    "walks",
    "and",
    "with",
    "from",
    "into",
    "over",
    "near",
    "because",
    "while",
    "then",
    "also",
    "a",
    "an",
    "of",
    "to",
)


def _byte_stream(material: bytes, count: int) -> bytes:
    """`count` pseudo-random bytes derived from `material` with SHA-256 in counter mode."""
    seed = hashlib.sha256(material).digest()
    blocks = [hashlib.sha256(seed + index.to_bytes(4, "big")).digest() for index in range((count + 31) // 32)]
    return b"".join(blocks)[:count]


def _pseudo_reply(prompt: str, seed: int | None) -> str:
    """A deterministic 20-60 word text of capitalised, punctuated sentences."""
    data = _byte_stream((prompt + str(seed)).encode("utf-8"), 256)
    n_words = 20 + data[0] % 41
    words: list[str] = []
    cursor = 1
    sentences: list[str] = []
    while len(words) < n_words:
        sentence_length = min(4 + data[cursor] % 9, n_words - len(words))
        cursor += 1
        sentence_words: list[str] = []
        for position in range(sentence_length):
            word = _WORDS[data[cursor] % len(_WORDS)]
            cursor += 1
            if position == 0:
                word = word.capitalize()
            elif position < sentence_length - 1 and data[cursor - 1] % 11 == 0:
                word += ","
            sentence_words.append(word)
        words.extend(sentence_words)
        ending = data[cursor] % 8
        cursor += 1
        sentences.append(" ".join(sentence_words) + ("!" if ending == 0 else "?" if ending == 1 else "."))
    return " ".join(sentences)


def last_user_content(prompt: str) -> str | None:
    """The content of the last user turn of a rendered Zephyr prompt, if there is one."""
    header = prompt.rfind(_USER_HEADER)
    if header < 0:
        return None
    start = header + len(_USER_HEADER)
    end = prompt.find("</s>", start)
    return prompt[start:end] if end >= 0 else None


def expected_reply(prompt: str, *, replies: Mapping[str, str] | None = None, seed: int | None = None) -> str:
    """The exact text the emulator generates for a raw prompt, before max_new_tokens or stop truncation.

    A scripted reply keyed by the raw prompt wins; for a Zephyr chat prompt (ending in
    `<|assistant|>\\n`) a reply keyed by the last user turn's content comes next; otherwise the text is
    derived from `sha256(prompt + str(seed))`. `seed` matters only for sampling requests that send one.

    Args:
        prompt: The raw prompt the emulator receives.
        replies: The emulator's fixed answers (its `replies=`).
        seed: The request's seed.
    """
    if replies:
        if prompt in replies:
            return replies[prompt]
        if prompt.endswith(_ASSISTANT_PROMPT):
            user = last_user_content(prompt)
            if user is not None and user in replies:
                return replies[user]
    return _pseudo_reply(prompt, seed)


def render_zephyr_prompt(messages: Sequence[tuple[str, str]]) -> str:
    """Render chat messages with Zephyr's whitespace-safe template, the way TGI applies it.

    Unknown roles are dropped. The generation prompt is added unless the last message is the
    assistant's, which TGI continues instead (cut after its content, trailing whitespace trimmed).

    Args:
        messages: (role, content) pairs.
    """
    if not messages:
        return ""
    rendered = "".join(f"<|{role}|>\n{content}</s>\n" for role, content in messages if role in _ZEPHYR_ROLES)
    if messages[-1][0] == "assistant":
        return rendered[: len(rendered) - len("</s>\n")].rstrip()
    return rendered + _ASSISTANT_PROMPT
