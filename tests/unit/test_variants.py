"""The typed table of TheBloke/zephyr-7B-alpha-GPTQ's six GPTQ branches."""

from __future__ import annotations

import pytest

from zephyr_tgi._errors import ConfigurationError
from zephyr_tgi._launcher.variants import KV_CACHE_BYTES_PER_TOKEN, VARIANTS, GPTQVariant, get_variant, kv_cache_gb

CARD = {
    # branch: (bits, group size, size GB, exllama)
    "main": (4, 128, 4.16, True),
    "gptq-4bit-32g-actorder_True": (4, 32, 4.57, True),
    "gptq-4bit-64g-actorder_True": (4, 64, 4.29, True),
    "gptq-8bit--1g-actorder_True": (8, None, 7.52, False),
    "gptq-8bit-128g-actorder_True": (8, 128, 7.68, False),
    "gptq-8bit-32g-actorder_True": (8, 32, 8.17, False),
}


def test_the_table_has_exactly_the_six_branches_of_the_model_card() -> None:
    assert {v.value for v in GPTQVariant} == set(CARD)
    assert set(VARIANTS) == set(GPTQVariant)


@pytest.mark.parametrize("branch", sorted(CARD))
def test_each_row_matches_the_model_card(branch: str) -> None:
    info = get_variant(branch)
    bits, group_size, size_gb, exllama = CARD[branch]
    assert (info.bits, info.group_size, info.size_gb, info.exllama_compatible) == (bits, group_size, size_gb, exllama)
    assert info.act_order is True
    assert info.damp_percent == 0.1  # the card's column (main's quantize_config.json says 0.01)
    assert info.branch == branch
    assert info.description.startswith(f"{bits}-bit")


def test_variants_are_found_by_enum_member_too() -> None:
    assert get_variant(GPTQVariant.BITS4_GROUP32).branch == "gptq-4bit-32g-actorder_True"


def test_an_unknown_name_is_refused_with_the_list_of_valid_names() -> None:
    with pytest.raises(ConfigurationError) as caught:
        get_variant("gptq-3bit")
    message = str(caught.value)
    assert "gptq-3bit" in message
    for branch in CARD:
        assert repr(branch) in message


def test_kv_cache_for_4096_tokens_is_half_a_gibibyte() -> None:
    assert KV_CACHE_BYTES_PER_TOKEN == 128 * 1024
    assert kv_cache_gb(4096) == pytest.approx(0.537, abs=0.001)


def test_vram_estimate_is_weights_plus_the_kv_cache_of_4096_tokens() -> None:
    for info in VARIANTS.values():
        assert info.estimated_vram_gb == pytest.approx(info.size_gb + kv_cache_gb(4096), abs=0.01)
    assert get_variant("main").estimated_vram_gb == 4.70


def test_eight_bit_branches_need_more_vram_than_four_bit_ones() -> None:
    four = max(v.estimated_vram_gb for v in VARIANTS.values() if v.bits == 4)
    eight = min(v.estimated_vram_gb for v in VARIANTS.values() if v.bits == 8)
    assert four < eight


def test_rows_are_frozen_and_serialise_their_computed_fields() -> None:
    info = get_variant("main")
    with pytest.raises(ValueError, match="frozen"):
        setattr(info, "bits", 8)  # noqa: B010 - the assignment itself is what is tested
    dumped = info.model_dump()
    assert dumped["branch"] == "main"
    assert dumped["estimated_vram_gb"] == 4.70
