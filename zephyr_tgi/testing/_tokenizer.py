"""Tokenizers the emulator counts and generates with: a built-in deterministic one and SentencePiece."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "SPECIAL_TOKENS",
    "UNK_ID",
    "BuiltinTokenizer",
    "EmulatorTokenizer",
    "SentencePieceTokenizer",
    "TokenSpan",
    "decode_one",
    "piece_of",
]

UNK_ID = 0
BOS_ID = 1
EOS_ID = 2
SPECIAL_TOKENS: dict[str, int] = {"<unk>": UNK_ID, "<s>": BOS_ID, "</s>": EOS_ID}
_SPECIAL_PIECES: dict[int, str] = {token_id: text for text, token_id in SPECIAL_TOKENS.items()}
_SPECIAL_RE = re.compile("|".join(re.escape(token) for token in SPECIAL_TOKENS))


@dataclass(frozen=True, slots=True)
class TokenSpan:
    """One token of an encoding: its id, its text and its character offsets in the input.

    Args:
        id: The token id.
        text: The token's text.
        start: The character offset where it starts in the input.
        stop: The character offset just after it.
    """

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

    Optionally, `piece(id)` (the SentencePiece piece, for vLLM's `token_strs`) and `decode_one(id)` (the id
    decoded alone, for SGLang's `/v1/detokenize`). Without `piece`, vLLM's dialect shows a span's text with
    spaces as `▁`; without `decode_one`, SGLang's detokenizes every id to "" (its tokenize spans then fail).
    """

    def encode(self, text: str) -> list[TokenSpan]:
        """Tokenize `text` into spans (no BOS).

        Args:
            text: The text to tokenize.
        """
        ...


def piece_of(tokenizer: EmulatorTokenizer, span: TokenSpan) -> str:
    """How vLLM's `token_strs` show a token: the tokenizer's piece, else its text with spaces as `▁`."""
    piece = getattr(tokenizer, "piece", None)
    return str(piece(span.id)) if callable(piece) else span.text.replace(" ", "▁")


def decode_one(tokenizer: EmulatorTokenizer, token_id: int) -> str:
    """How SGLang's detokenize shows one id decoded alone ("" when the tokenizer cannot say)."""
    decode = getattr(tokenizer, "decode_one", None)
    return str(decode(token_id)) if callable(decode) else ""


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
        # What each id last stood for, so the engines' detokenize routes can answer (ids are hashes: two
        # pieces can share one, and the later wins).
        self._pieces: dict[int, str] = {}

    def token_id(self, piece: str) -> int:
        """The stable id of a non-special piece.

        Args:
            piece: A piece of text, as `encode()` cuts them.
        """
        token_id = self._ids.get(piece)
        if token_id is None:
            token_id = 3 + zlib.crc32(piece.encode("utf-8")) % (self._VOCAB_SIZE - 3)
            if len(self._ids) < 100_000:
                self._ids[piece] = token_id
        if len(self._pieces) < 100_000:
            self._pieces[token_id] = piece
        return token_id

    def piece(self, token_id: int) -> str:
        """The id as a SentencePiece-style piece (spaces as `▁`), as vLLM's `token_strs` show tokens.

        Args:
            token_id: An id this tokenizer gave.
        """
        special = _SPECIAL_PIECES.get(token_id)
        if special is not None:
            return special
        return self._pieces.get(token_id, "").replace(" ", "▁")

    def decode_one(self, token_id: int) -> str:
        """The id decoded alone, as SentencePiece decodes one token (its leading space dropped).

        Args:
            token_id: An id this tokenizer gave.
        """
        text = self.piece(token_id).replace("▁", " ")
        return text[1:] if text.startswith(" ") else text

    def encode(self, text: str) -> list[TokenSpan]:
        """Tokenize `text` (no BOS).

        Args:
            text: The text to tokenize.
        """
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
    """Zephyr's SentencePiece model, tokenizing exactly as `zephyr_tgi.ZephyrTokenizer` (and TGI) do.

    Args:
        model_path: Zephyr's `tokenizer.model`.

    Raises:
        FileNotFoundError: no file at `model_path`.
    """

    def __init__(self, model_path: str | Path) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"SentencePiece model not found: {path}")
        # Imported here so that `import zephyr_tgi.testing` never needs sentencepiece (or pydantic).
        from .._client.tokenizer import ZephyrTokenizer

        self._tokenizer = ZephyrTokenizer.from_file(path)

    def piece(self, token_id: int) -> str:
        """The id's SentencePiece piece (`▁Hello`, `<0xE2>`, `<s>`), as vLLM's `token_strs` show it.

        Args:
            token_id: A token id of the vocabulary.
        """
        return self._tokenizer.id_to_piece(token_id)

    def decode_one(self, token_id: int) -> str:
        """The id decoded alone (its leading `▁` dropped; a lone byte-fallback token is not text).

        Args:
            token_id: A token id of the vocabulary.
        """
        return self._tokenizer.decode_one(token_id)

    def encode(self, text: str) -> list[TokenSpan]:
        """Tokenize `text` (no BOS) like TGI's legacy tokenizer.json, with texts that join back to `text`.

        Args:
            text: The text to tokenize.
        """
        spans: list[TokenSpan] = []
        emitted = 0
        for token_id, start, stop in self._tokenizer.pieces(text):
            # Byte-fallback pieces of one character share its span: the first one carries the text.
            piece_start = max(start, emitted)
            piece_stop = max(stop, piece_start)
            spans.append(TokenSpan(token_id, text[piece_start:piece_stop], start, stop))
            emitted = piece_stop
        if emitted < len(text) and spans:
            last = spans[-1]
            spans[-1] = TokenSpan(last.id, last.text + text[emitted:], last.start, len(text))
        return spans
