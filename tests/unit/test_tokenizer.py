"""ZephyrTokenizer: ids and counts exactly as TGI's tokenizer gives them (ZEPHYR.md §2)."""

from __future__ import annotations

import hashlib
import importlib.resources
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zephyr_tgi import ConfigurationError
from zephyr_tgi._client.tokenizer import ZephyrTokenizer

MODEL = Path(str(importlib.resources.files("mistral_common") / "data" / "tokenizer.model.v1"))
SHA256 = "dadfd56d766715c61d2ef780a525ab43b8e6da4de6865bda3d95fdef5e134055"


@pytest.fixture(scope="module")
def tokenizer() -> ZephyrTokenizer:
    return ZephyrTokenizer.from_file(MODEL)


def test_the_test_model_is_mistral_7b_v01s_tokenizer() -> None:
    assert hashlib.sha256(MODEL.read_bytes()).hexdigest() == SHA256


def test_hello_world(tokenizer: ZephyrTokenizer) -> None:
    assert tokenizer.encode("Hello world") == [1, 22557, 1526]
    assert tokenizer.encode("Hello world", add_bos=False) == [22557, 1526]


def test_the_canonical_single_turn_prompt_matches_tgis_28_ids(tokenizer: ZephyrTokenizer) -> None:
    prompt = "<|system|>\n</s>\n<|user|>\nHello world</s>\n<|assistant|>\n"
    assert tokenizer.encode(prompt) == [
        1, 523, 28766, 6574, 28766, 28767, 13, 2, 28705, 13, 28789, 28766, 1838, 28766, 28767, 13,
        16230, 1526, 2, 28705, 13, 28789, 28766, 489, 11143, 28766, 28767, 13,
    ]  # fmt: skip
    assert (
        tokenizer.count_messages([{"role": "system", "content": ""}, {"role": "user", "content": "Hello world"}]) == 28
    )


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        (" Hello world", [28705, 22557, 1526]),  # a leading space is its own ▁ token
        ("</s>", [2]),  # a special token, not ▁</ s >
        ("<s>x<unk>", [1, 1318, 0]),
    ],
)
def test_edge_cases(tokenizer: ZephyrTokenizer, text: str, ids: list[int]) -> None:
    assert tokenizer.encode(text, add_bos=False) == ids


def test_per_message_counts_do_not_add_up_so_the_prompt_is_counted_whole(tokenizer: ZephyrTokenizer) -> None:
    assert tokenizer.encode("\nHello", add_bos=False)[-1] == 16230  # "Hello" after a newline
    assert tokenizer.encode("Hello", add_bos=False) == [22557]  # "▁Hello" on its own


def test_spans_have_tgis_tokenize_shape(tokenizer: ZephyrTokenizer) -> None:
    spans = tokenizer.encode_spans("a</s>b")
    assert [(s.id, s.text, s.start, s.stop) for s in spans] == [
        (1, "", 0, 0),
        (264, "a", 0, 1),
        (2, "</s>", 1, 5),
        (287, "b", 5, 6),
    ]


@given(pieces=st.lists(st.sampled_from([*"ab é😀\n\t<>/su", "</s>", "<s>", "<unk>", "\u2028"]), max_size=40))
def test_spans_cover_the_text_and_count_like_encode(pieces: list[str]) -> None:
    text = "".join(pieces)
    tokenizer = ZephyrTokenizer.from_file(MODEL)
    spans = tokenizer.encode_spans(text)
    assert [s.id for s in spans] == tokenizer.encode(text)
    assert tokenizer.count(text) == len(spans)
    assert all(0 <= s.start <= s.stop <= len(text) for s in spans)


def test_decode_round_trips_plain_text(tokenizer: ZephyrTokenizer) -> None:
    assert tokenizer.decode(tokenizer.encode("Hello world, again")) == "Hello world, again"


def test_a_missing_or_wrong_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no tokenizer model"):
        ZephyrTokenizer.from_file(tmp_path / "missing.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(ConfigurationError):
        ZephyrTokenizer.from_file(bad)


def test_from_pretrained_downloads_tokenizer_model_from_the_branch(monkeypatch: pytest.MonkeyPatch) -> None:
    # The Hub is unreachable here: stand in for the download only, the loading path stays real.
    calls: list[dict[str, object]] = []

    def fake_download(**kwargs: object) -> str:
        calls.append(kwargs)
        return str(MODEL)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    tokenizer = ZephyrTokenizer.from_pretrained(revision="gptq-4bit-32g-actorder_True")
    assert tokenizer.encode("Hello world") == [1, 22557, 1526]
    assert calls == [
        {
            "repo_id": "TheBloke/zephyr-7B-alpha-GPTQ",
            "filename": "tokenizer.model",
            "revision": "gptq-4bit-32g-actorder_True",
            "token": None,
            "cache_dir": None,
        }
    ]
