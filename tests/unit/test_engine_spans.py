"""TGI's spans rebuilt from vLLM's pieces and SGLang's per-id decodes (zephyr_tgi._engines.spans)."""

from __future__ import annotations

import pytest

from zephyr_tgi import MalformedResponseError
from zephyr_tgi._engines.spans import form_of_decoded, form_of_piece, spans_of
from zephyr_tgi._types import TokenSpan


def _spans(text: str, pieces: list[tuple[int, str]]) -> list[tuple[int, str, int, int]]:
    forms = [form_of_piece(token_id, piece) for token_id, piece in pieces]
    return [(s.id, s.text, s.start, s.stop) for s in spans_of(text, forms, "vLLM")]


def test_a_leading_piece_space_is_the_dummy_prefix_at_the_start_and_a_space_elsewhere() -> None:
    assert _spans("Hello world", [(1, "<s>"), (22557, "▁Hello"), (1526, "▁world")]) == [
        (1, "", 0, 0),
        (22557, "Hello", 0, 5),
        (1526, " world", 5, 11),
    ]


def test_after_a_special_token_a_lone_piece_space_is_the_dummy_prefix() -> None:
    pieces = [(1, "<s>"), (2, "</s>"), (28705, "▁"), (1318, "▁x")]
    assert _spans("</s> x", pieces) == [(1, "", 0, 0), (2, "</s>", 0, 4), (28705, "", 4, 4), (1318, " x", 4, 6)]


def test_byte_fallback_tokens_share_their_characters_span_in_utf8_bytes() -> None:
    # "é" is a token of its own; "😀" is four byte-fallback tokens.
    pieces = [
        (1, "<s>"),
        (28705, "▁"),
        (28742, "é"),
        (243, "<0xF0>"),
        (162, "<0x9F>"),
        (155, "<0x98>"),
        (131, "<0x80>"),
    ]
    assert _spans("é😀", pieces)[2:] == [
        (28742, "é", 0, 2),
        (243, "😀", 2, 6),
        (162, "", 2, 6),
        (155, "", 2, 6),
        (131, "", 2, 6),
    ]


def test_sglang_decodes_are_read_as_bytes_only_when_they_can_be() -> None:
    assert form_of_decoded(13, "\n").byte == 0x0A
    assert form_of_decoded(243, "\ufffd").byte == 0xF0
    assert form_of_decoded(90, "nPf").byte is None  # an id of another vocabulary
    assert form_of_decoded(2, "").special


def test_tokens_that_do_not_spell_the_text_are_a_malformed_answer() -> None:
    with pytest.raises(MalformedResponseError, match="does not spell the text at character 0"):
        _spans("Hello", [(1, "<s>"), (22557, "▁Bye")])
    with pytest.raises(MalformedResponseError, match="spell 5 of the text's 11 characters"):
        _spans("Hello world", [(1, "<s>"), (22557, "▁Hello")])


def test_an_empty_text_is_bos_alone() -> None:
    assert spans_of("", [form_of_piece(1, "<s>")], "vLLM") == [TokenSpan(id=1, text="", start=0, stop=0)]
