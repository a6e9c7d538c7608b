"""ZephyrTokenizer: Zephyr's SentencePiece tokenizer, counting tokens exactly as TGI does.

TGI tokenizes with the repository's legacy `tokenizer.json`: the special tokens `<unk>`, `<s>` and `</s>` are
split out of the text and mapped to ids 0, 1 and 2, every other stretch of text goes through SentencePiece
(with its dummy `▁` prefix), and `/generate` always prepends BOS. Doing the same with `tokenizer.model`
gives identical ids (ZEPHYR.md §2.2: 0 mismatches on 3000 random strings). Encoding the whole rendered prompt
in one pass matters: per-message counts do not add up, because text after `</s>` gains a `▁` token.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._errors import ConfigurationError
from .._types import TokenSpan
from .templates import MessagesInput, render_prompt

__all__ = ["DEFAULT_MODEL_ID", "ZephyrTokenizer"]

DEFAULT_MODEL_ID = "TheBloke/zephyr-7B-alpha-GPTQ"
SPECIAL_IDS: dict[str, int] = {"<unk>": 0, "<s>": 1, "</s>": 2}
_SPECIAL_SPLIT = re.compile("(<unk>|<s>|</s>)")
BOS_ID = 1
EOS_ID = 2


class ZephyrTokenizer:
    """Zephyr-7B's tokenizer (Mistral-7B-v0.1's SentencePiece model), counting like TGI.

    Make one with `from_pretrained()` (downloads `tokenizer.model` from the Hub) or `from_file()`.
    """

    def __init__(self, processor: Any, *, source: str) -> None:
        """Wrap a loaded SentencePiece model, after checking it is Zephyr's.

        Args:
            processor: A `sentencepiece.SentencePieceProcessor` with Zephyr's model loaded.
            source: Where the model came from, for messages (kept as `.source`).

        Raises:
            ConfigurationError: the model is not Zephyr's (vocabulary size, BOS or EOS id differ).
        """
        self._sp = processor
        self.source = source
        if self._sp.vocab_size() != 32000 or self._sp.bos_id() != BOS_ID or self._sp.eos_id() != EOS_ID:
            raise ConfigurationError(
                f"{source} is not Zephyr's tokenizer (vocab {self._sp.vocab_size()}, bos {self._sp.bos_id()}, "
                f"eos {self._sp.eos_id()}; expected 32000, 1, 2)"
            )

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ZephyrTokenizer:
        """Load a SentencePiece `tokenizer.model`.

        Args:
            path: The `tokenizer.model` file.

        Returns:
            The tokenizer.

        Raises:
            ConfigurationError: sentencepiece is not installed, or the file is missing or not Zephyr's.
        """
        try:
            import sentencepiece
        except ImportError:
            raise ConfigurationError(
                "ZephyrTokenizer needs sentencepiece: pip install 'zephyr-tgi[tokenizer]'"
            ) from None
        file = Path(path)
        if not file.is_file():
            raise ConfigurationError(f"no tokenizer model at {file}")
        try:
            processor = sentencepiece.SentencePieceProcessor(model_file=str(file))
        except (OSError, RuntimeError) as exc:
            raise ConfigurationError(f"{file} is not a SentencePiece model: {exc}") from exc
        return cls(processor, source=str(file))

    @classmethod
    def from_pretrained(
        cls,
        model_id: str = DEFAULT_MODEL_ID,
        revision: str = "main",
        *,
        token: str | None = None,
        cache_dir: str | Path | None = None,
    ) -> ZephyrTokenizer:
        """Download `tokenizer.model` from the Hugging Face Hub (cached) and load it.

        Every GPTQ branch of TheBloke's repository carries the same tokenizer; `revision` picks the branch.

        Args:
            model_id: The Hub repository.
            revision: The branch, tag or commit.
            token: A Hugging Face token for a private or gated repository.
            cache_dir: The Hub cache to use instead of the default one.

        Returns:
            The tokenizer.

        Raises:
            ConfigurationError: the download failed (offline: use `from_file()`), or the file is not Zephyr's.
        """
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        try:
            path = hf_hub_download(
                repo_id=model_id, filename="tokenizer.model", revision=revision, token=token, cache_dir=cache_dir
            )
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
            raise ConfigurationError(
                f"could not download tokenizer.model from {model_id}@{revision}: {exc}. Pass a local file to "
                "ZephyrTokenizer.from_file() when offline"
            ) from exc
        return cls.from_file(path)

    def __repr__(self) -> str:
        return f"ZephyrTokenizer(source={self.source!r})"

    @property
    def vocab_size(self) -> int:
        """Number of tokens in the vocabulary (32000)."""
        return int(self._sp.vocab_size())

    def pieces(self, text: str) -> list[tuple[int, int, int]]:
        """(id, start, stop) for each token of `text`, special tokens split out; offsets in characters.

        Args:
            text: The text to split (no BOS is added).
        """
        spans: list[tuple[int, int, int]] = []
        position = 0
        for part in _SPECIAL_SPLIT.split(text):
            if not part:
                continue
            special = SPECIAL_IDS.get(part)
            if special is not None:
                spans.append((special, position, position + len(part)))
            else:
                mapping = self._sp.encode(part, return_type="offset_mapping")
                spans.extend(
                    (int(token_id), position + start, position + stop)
                    for token_id, (start, stop) in zip(mapping["ids"], mapping["offsets"], strict=True)
                )
            position += len(part)
        return spans

    def encode(self, text: str, *, add_bos: bool = True) -> list[int]:
        """Token ids of `text` as TGI's `/generate` sees them.

        Args:
            text: The prompt.
            add_bos: Put the BOS token first, as TGI does.
        """
        ids = [BOS_ID] if add_bos else []
        for part in _SPECIAL_SPLIT.split(text):
            if part:
                special = SPECIAL_IDS.get(part)
                if special is not None:
                    ids.append(special)
                else:
                    ids.extend(self._sp.encode(part))
        return ids

    def encode_spans(self, text: str, *, add_bos: bool = True) -> list[TokenSpan]:
        """Tokens with character offsets, in the shape of TGI's `/tokenize` (BOS as an empty span at 0).

        Args:
            text: The prompt.
            add_bos: Put the BOS token first, as TGI does.
        """
        spans = [TokenSpan(id=BOS_ID, text="", start=0, stop=0)] if add_bos else []
        spans.extend(
            TokenSpan(id=token_id, text=text[start:stop], start=start, stop=stop)
            for token_id, start, stop in self.pieces(text)
        )
        return spans

    def count(self, text: str, *, add_bos: bool = True) -> int:
        """How many tokens TGI counts for `text` as a prompt.

        Args:
            text: The prompt.
            add_bos: Count the BOS token, as TGI does.
        """
        return len(self.encode(text, add_bos=add_bos))

    def count_messages(self, messages: MessagesInput, *, add_generation_prompt: bool = True) -> int:
        """How many tokens the rendered Zephyr prompt of `messages` costs, BOS included.

        Args:
            messages: A user turn as a string, or a list of `Message`s or `{"role": ..., "content": ...}` dicts.
            add_generation_prompt: Count the `<|assistant|>` turn marker that `chat()` ends the prompt with.
        """
        return self.count(render_prompt(messages, add_generation_prompt=add_generation_prompt, special_tokens="allow"))

    def id_to_piece(self, token_id: int) -> str:
        """The SentencePiece piece of an id (`▁Hello`, `<0xE2>`, `<s>`).

        Args:
            token_id: A token id of the vocabulary.
        """
        return str(self._sp.id_to_piece(token_id))

    def decode_one(self, token_id: int) -> str:
        """One id decoded alone, as Hugging Face tokenizers decode it (special tokens kept as their text).

        Args:
            token_id: A token id of the vocabulary.
        """
        if token_id in (0, BOS_ID, EOS_ID):
            return str(self._sp.id_to_piece(token_id))
        return str(self._sp.decode([token_id]))

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`, special tokens dropped.

        Args:
            ids: Token ids.
        """
        return str(self._sp.decode([i for i in ids if i not in (0, BOS_ID, EOS_ID)]))
