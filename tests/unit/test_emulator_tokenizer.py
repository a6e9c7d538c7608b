"""The emulator's tokenizers: the built-in deterministic one and the SentencePiece adapter."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zephyr_tgi.testing import BuiltinTokenizer, EmulatorTokenizer, SentencePieceTokenizer, TokenSpan

TEXTS = [
    "Hello world",
    "  leading and trailing  ",
    "<|system|>\n</s>\n<|user|>\nHi</s>\n<|assistant|>\n",
    "tabs\tand\r\nCRLF, digits 12345 and émoji 😀",
    "<s><unk></s>",
    "",
]


def _mistral_model() -> Path:
    return Path(str(importlib.resources.files("mistral_common") / "data" / "tokenizer.model.v1"))


@pytest.mark.parametrize("text", TEXTS)
def test_builtin_token_texts_concatenate_back_to_the_input(text: str) -> None:
    spans = BuiltinTokenizer().encode(text)
    assert "".join(span.text for span in spans) == text
    assert all(text[span.start : span.stop] == span.text for span in spans)


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=80))
def test_builtin_round_trips_any_text(text: str) -> None:
    assert "".join(span.text for span in BuiltinTokenizer().encode(text)) == text


def test_builtin_splits_special_tokens_out_with_their_ids() -> None:
    spans = BuiltinTokenizer().encode("a</s>b<s>c<unk>")
    assert [(s.id, s.text) for s in spans if s.special] == [(2, "</s>"), (1, "<s>"), (0, "<unk>")]


def test_builtin_ids_are_stable_and_outside_the_special_range() -> None:
    first = BuiltinTokenizer().encode("The quick brown fox, 42 times.")
    second = BuiltinTokenizer().encode("The quick brown fox, 42 times.")
    assert [s.id for s in first] == [s.id for s in second]
    assert all(3 <= s.id < 32000 for s in first)


def test_builtin_keeps_leading_whitespace_with_the_word() -> None:
    assert [s.text for s in BuiltinTokenizer().encode("Hello  big\nworld!")] == ["Hello", "  big", "\nworld", "!"]


def test_builtin_tokenizer_satisfies_the_protocol() -> None:
    assert isinstance(BuiltinTokenizer(), EmulatorTokenizer)


def test_sentencepiece_matches_the_ids_tgi_reports_for_zephyr() -> None:
    prompt = "<|system|>\n</s>\n<|user|>\nHello world</s>\n<|assistant|>\n"
    ids = [span.id for span in SentencePieceTokenizer(_mistral_model()).encode(prompt)]
    # ZEPHYR.md §2.2, without the leading BOS that TGI adds on /generate.
    assert ids == [
        523, 28766, 6574, 28766, 28767, 13, 2, 28705, 13, 28789, 28766, 1838, 28766, 28767, 13,
        16230, 1526, 2, 28705, 13, 28789, 28766, 489, 11143, 28766, 28767, 13,
    ]  # fmt: skip


@pytest.mark.parametrize("text", TEXTS)
def test_sentencepiece_token_texts_concatenate_back_to_the_input(text: str) -> None:
    spans = SentencePieceTokenizer(_mistral_model()).encode(text)
    assert "".join(span.text for span in spans) == text


def test_sentencepiece_rejects_a_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        SentencePieceTokenizer(tmp_path / "nope.model")


def test_token_span_reports_specials() -> None:
    assert TokenSpan(2, "</s>", 0, 4).special
    assert not TokenSpan(2, "x", 0, 1).special
