"""Token spans with offsets, rebuilt client-side for engines whose tokenize route gives ids and strings only.

TGI's `/tokenize` returns each token with its text and its byte offsets in the UTF-8 input; vLLM's gives the
SentencePiece pieces (`convert_ids_to_tokens`), SGLang's only ids (the client then detokenizes each id alone).
Zephyr's vocabulary makes the walk exact: a piece's `▁` is a space of the text or SentencePiece's dummy prefix
(at the start, and after a special token), ids 3..258 are the byte-fallback tokens `<0x00>`..`<0xFF>` (the
bytes of one character share that character's span, the first carrying its text, as TGI reports them), and
`<unk>`, `<s>`, `</s>` are ids 0, 1 and 2. A leading BOS is the empty span at 0, as on TGI.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .._errors import MalformedResponseError
from .._types import TokenSpan

__all__ = ["BYTE_IDS", "SPECIAL_TEXTS", "TokenForm", "form_of_decoded", "form_of_piece", "spans_of"]

SPECIAL_TEXTS: dict[int, str] = {0: "<unk>", 1: "<s>", 2: "</s>"}
BYTE_IDS = range(3, 259)  # <0x00> .. <0xFF>
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_BOS = 1


@dataclass(frozen=True, slots=True)
class TokenForm:
    """What one token spells: a byte-fallback value, a special token's literal, or text.

    `text` is the token decoded alone, the way SentencePiece decodes: a leading `▁` dropped, the others made
    spaces. Whether the dropped `▁` was a space of the input or the dummy prefix is read from the input.
    """

    token_id: int
    text: str = ""
    byte: int | None = None
    special: bool = False


def form_of_piece(token_id: int, piece: str) -> TokenForm:
    """A token from its SentencePiece piece (vLLM's `token_strs`)."""
    if SPECIAL_TEXTS.get(token_id) == piece:
        return TokenForm(token_id, piece, special=True)
    match = _BYTE_PIECE.fullmatch(piece)
    if match is not None:
        return TokenForm(token_id, byte=int(match.group(1), 16))
    text = piece.replace("▁", " ")
    return TokenForm(token_id, text[1:] if text.startswith(" ") else text)


def form_of_decoded(token_id: int, decoded: str) -> TokenForm:
    """A token from its id and its text decoded alone (SGLang's `/v1/detokenize` of `[id]`)."""
    if token_id in SPECIAL_TEXTS:
        return TokenForm(token_id, SPECIAL_TEXTS[token_id], special=True)
    # A byte-fallback token decoded alone is its byte's character, or nothing (U+FFFD) when the byte is part of
    # a longer character; an id of that range that decodes to other text belongs to another vocabulary.
    if token_id in BYTE_IDS and decoded in ("", "\ufffd", chr(token_id - BYTE_IDS.start)):
        return TokenForm(token_id, byte=token_id - BYTE_IDS.start)
    return TokenForm(token_id, decoded)


def _utf8_length(lead: int) -> int:
    if lead < 0x80:
        return 1
    if lead >> 5 == 0b110:
        return 2
    if lead >> 4 == 0b1110:
        return 3
    return 4


class _Walk:
    """The position in the input (in characters and in UTF-8 bytes) as the tokens are laid over it."""

    def __init__(self, text: str, engine: str) -> None:
        self.text = text
        self.engine = engine
        self.char = 0
        self.byte = 0
        self.spans: list[TokenSpan] = []
        # At the start of the text and after a special token, SentencePiece prepends its dummy `▁`.
        self.segment_start = True

    def fail(self, form: TokenForm) -> MalformedResponseError:
        shown = form.text if form.byte is None else f"<0x{form.byte:02X}>"
        return MalformedResponseError(
            f"{self.engine}'s token {form.token_id} ({shown!r}) does not spell the text at character "
            f"{self.char} ({self.text[self.char : self.char + 12]!r}): not Zephyr's tokenizer?"
        )

    def take(self, token_id: int, count: int) -> None:
        """A token covering the next `count` characters."""
        piece = self.text[self.char : self.char + count]
        size = len(piece.encode("utf-8"))
        self.spans.append(TokenSpan(id=token_id, text=piece, start=self.byte, stop=self.byte + size))
        self.char += count
        self.byte += size

    def special(self, form: TokenForm) -> None:
        if not self.text.startswith(form.text, self.char):
            raise self.fail(form)
        self.take(form.token_id, len(form.text))
        self.segment_start = True

    def text_token(self, form: TokenForm) -> None:
        # The first token of a segment carries the dummy `▁` (covering nothing: a lone `▁` is an empty span);
        # elsewhere a dropped `▁` is a space of the input.
        at_start, self.segment_start = self.segment_start, False
        if at_start and self.text.startswith(form.text, self.char):
            self.take(form.token_id, len(form.text))
        elif self.text.startswith(" " + form.text, self.char):
            self.take(form.token_id, len(form.text) + 1)
        elif self.text.startswith(form.text, self.char):
            self.take(form.token_id, len(form.text))
        else:
            raise self.fail(form)

    def byte_run(self, forms: Sequence[TokenForm]) -> None:
        """Byte-fallback tokens, a character at a time: each of its bytes gets the character's span."""
        self.segment_start = False
        index = 0
        while index < len(forms):
            if self.char >= len(self.text):
                raise self.fail(forms[index])
            expected = self.text[self.char].encode("utf-8")
            group = forms[index : index + _utf8_length(forms[index].byte or 0)]
            if bytes(form.byte or 0 for form in group) != expected:
                raise self.fail(forms[index])
            start, stop = self.byte, self.byte + len(expected)
            for position, form in enumerate(group):
                shown = self.text[self.char] if position == 0 else ""
                self.spans.append(TokenSpan(id=form.token_id, text=shown, start=start, stop=stop))
            self.char += 1
            self.byte = stop
            index += len(group)


def spans_of(text: str, forms: Sequence[TokenForm], engine: str) -> list[TokenSpan]:
    """TGI's `/tokenize` spans of `text` from its tokens' forms, tokenized with special tokens (BOS first).

    Raises:
        MalformedResponseError: the tokens do not spell `text` (not Zephyr's tokenizer, or a broken answer).
    """
    walk = _Walk(text, engine)
    index = 0
    if forms and forms[0].token_id == _BOS:  # the BOS the engine added: an empty span at 0, as on TGI
        walk.spans.append(TokenSpan(id=_BOS, text="", start=0, stop=0))
        index = 1
    while index < len(forms):
        form = forms[index]
        if form.byte is not None:
            end = index
            while end < len(forms) and forms[end].byte is not None:
                end += 1
            walk.byte_run(forms[index:end])
            index = end
            continue
        if form.special:
            walk.special(form)
        else:
            walk.text_token(form)
        index += 1
    if walk.char != len(text):
        raise MalformedResponseError(
            f"{engine}'s tokens spell {walk.char} of the text's {len(text)} characters: a broken tokenize answer"
        )
    return walk.spans
