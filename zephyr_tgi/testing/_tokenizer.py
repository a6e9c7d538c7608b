"""Tokenizers the emulator counts and generates with: a built-in deterministic one and SentencePiece."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "SPECIAL_TOKENS",
    "UNK_ID",
    "BuiltinTokenizer",
    "EmulatorTokenizer",
    "SentencePieceTokenizer",
    "TokenSpan",
]

UNK_ID = 0
BOS_ID = 1
EOS_ID = 2
SPECIAL_TOKENS: dict[str, int] = {"<unk>": UNK_ID, "<s>": BOS_ID, "</s>": EOS_ID}
_SPECIAL_RE = re.compile("|".join(re.escape(token) for token in SPECIAL_TOKENS))


@dataclass(frozen=True, slots=True)
class TokenSpan:
    """One token of an encoding: its id, its text and its character offsets in the input."""

    id: int
    text: str
    start: int
    stop: int

    @property
    def special(self) -> bool:
        """Whether this is one of `<unk>`, `<s>`, `</s>`."""
        return self.id in (UNK_ID, BOS_ID, EOS_ID) and self.text in SPECIAL_TOKENS


@runtime_checkable
class EmulatorTokenizer(Protocol):
    """What the emulator needs from a tokenizer.

    `encode` must split `<s>`, `</s>` and `<unk>` out as ids 1, 2 and 0, must not add BOS itself, and the
    texts of the returned spans must concatenate back to the input exactly.
    """

    def encode(self, text: str) -> list[TokenSpan]:
        """Tokenize `text` into spans (no BOS)."""
        ...


def _split_special(text: str) -> list[tuple[int, int, int | None]]:
    """Cut `text` into (start, stop, special id or None) segments."""
    segments: list[tuple[int, int, int | None]] = []
    pos = 0
    for match in _SPECIAL_RE.finditer(text):
        if match.start() > pos:
            segments.append((pos, match.start(), None))
        segments.append((match.start(), match.end(), SPECIAL_TOKENS[match.group()]))
        pos = match.end()
    if pos < len(text):
        segments.append((pos, len(text), None))
    return segments


class BuiltinTokenizer:
    """Deterministic word-ish tokenizer: ids are a CRC32 of the piece folded into 3..31999."""

    _PIECE_RE = re.compile(r"\s*[A-Za-z]+|\s*\d|\s*[^\sA-Za-z\d]|\s+")
    _VOCAB_SIZE = 32000

    def __init__(self) -> None:
        # Replies repeat a small vocabulary, so caching ids keeps per-token work to a dict lookup.
        self._ids: dict[str, int] = {}

    def token_id(self, piece: str) -> int:
        """The stable id of a non-special piece."""
        token_id = self._ids.get(piece)
        if token_id is None:
            token_id = 3 + zlib.crc32(piece.encode("utf-8")) % (self._VOCAB_SIZE - 3)
            if len(self._ids) < 100_000:
                self._ids[piece] = token_id
        return token_id

    def encode(self, text: str) -> list[TokenSpan]:
        """Tokenize `text` (no BOS)."""
        spans: list[TokenSpan] = []
        for start, stop, special in _split_special(text):
            if special is not None:
                spans.append(TokenSpan(special, text[start:stop], start, stop))
                continue
            for match in self._PIECE_RE.finditer(text, start, stop):
                piece = match.group()
                spans.append(TokenSpan(self.token_id(piece), piece, match.start(), match.end()))
        return spans


class SentencePieceTokenizer:
    """Mistral/Zephyr SentencePiece model with TGI's special-token split (ZEPHYR.md §2.2)."""

    def __init__(self, model_path: str | Path) -> None:
        # Imported here so that `import zephyr_tgi.testing` never needs sentencepiece.
        import sentencepiece

        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"SentencePiece model not found: {path}")
        self._sp: Any = sentencepiece.SentencePieceProcessor(model_file=str(path))

    def _encode_part(self, part: str) -> list[tuple[int, int, int]]:
        """(id, char start, char stop) for a text without special tokens."""
        try:
            mapping = self._sp.encode(part, return_type="offset_mapping")
            return [(int(i), int(s), int(e)) for i, (s, e) in zip(mapping["ids"], mapping["offsets"], strict=True)]
        except (TypeError, ValueError):
            pass
        # Upstream sentencepiece 0.2.0 has no offset mapping; its immutable proto gives byte offsets.
        proto = self._sp.encode(part, out_type="immutable_proto")
        char_at_byte: dict[int, int] = {}
        byte_pos = 0
        for index, char in enumerate(part):
            char_at_byte[byte_pos] = index
            byte_pos += len(char.encode("utf-8"))
        char_at_byte[byte_pos] = len(part)
        result: list[tuple[int, int, int]] = []
        for piece in proto.pieces:
            start = char_at_byte.get(int(piece.begin), len(part))
            stop = char_at_byte.get(int(piece.end), start)
            result.append((int(piece.id), start, stop))
        return result

    def encode(self, text: str) -> list[TokenSpan]:
        """Tokenize `text` (no BOS) like TGI's legacy tokenizer.json."""
        spans: list[TokenSpan] = []
        for start, stop, special in _split_special(text):
            if special is not None:
                spans.append(TokenSpan(special, text[start:stop], start, stop))
                continue
            part = text[start:stop]
            emitted = 0
            for token_id, s, e in self._encode_part(part):
                # Byte-fallback pieces of one character share its span: the first one carries the text.
                piece_start = max(s, emitted)
                piece_stop = max(e, piece_start)
                spans.append(TokenSpan(token_id, part[piece_start:piece_stop], start + s, start + e))
                emitted = piece_stop
            if emitted < len(part) and spans:
                last = spans[-1]
                spans[-1] = TokenSpan(last.id, last.text + part[emitted:], last.start, start + len(part))
        return spans
