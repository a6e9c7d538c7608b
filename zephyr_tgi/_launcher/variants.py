"""The six GPTQ branches of TheBloke/zephyr-7B-alpha-GPTQ, as a typed table.

Numbers come from the model card's "Provided files" table. One discrepancy is kept as the card has it: the
card gives "Damp %" 0.1 for every branch, while `main`'s `quantize_config.json` says `damp_percent: 0.01`.
Damp only mattered at quantisation time; TGI never reads it.

`estimated_vram_gb` is weights + a full fp16 KV cache for one 4096-token sequence (Mistral-7B: 32 layers,
8 KV heads of 128 dims, K and V, 2 bytes each = 128 KiB per token, 0.54 GB for 4096 tokens). It excludes the
CUDA context, prefill activations and CUDA graphs (about 1-2 GB more) and the extra KV blocks TGI allocates
from whatever VRAM is left, so read it as a floor: the GPU needs at least this much free memory.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, computed_field

from .._errors import ConfigurationError

__all__ = [
    "KV_CACHE_BYTES_PER_TOKEN",
    "VARIANTS",
    "GPTQVariant",
    "VariantInfo",
    "get_variant",
    "kv_cache_gb",
    "variant_field",
]

# Mistral-7B: 2 (K and V) x 32 layers x 8 KV heads x 128 head dims x 2 bytes (fp16).
KV_CACHE_BYTES_PER_TOKEN = 2 * 32 * 8 * 128 * 2
_VRAM_ESTIMATE_TOKENS = 4096


class GPTQVariant(StrEnum):
    """A branch of TheBloke/zephyr-7B-alpha-GPTQ; the value is the git revision TGI loads."""

    MAIN = "main"
    BITS4_GROUP32 = "gptq-4bit-32g-actorder_True"
    BITS4_GROUP64 = "gptq-4bit-64g-actorder_True"
    BITS8_NO_GROUP = "gptq-8bit--1g-actorder_True"
    BITS8_GROUP128 = "gptq-8bit-128g-actorder_True"
    BITS8_GROUP32 = "gptq-8bit-32g-actorder_True"


def kv_cache_gb(tokens: int) -> float:
    """GB (10^9 bytes) of fp16 KV cache that `tokens` tokens of Mistral-7B occupy."""
    return tokens * KV_CACHE_BYTES_PER_TOKEN / 1e9


class VariantInfo(BaseModel):
    """One row of the model card's branch table, plus a VRAM estimate.

    Attributes:
        variant: The branch.
        bits: Bits per weight (4 or 8).
        group_size: The quantisation group size (None: no grouping).
        act_order: Whether the weights were quantised in activation order.
        damp_percent: GPTQ's dampening, in percent.
        size_gb: The weights' size on disk, in GB.
        exllama_compatible: Whether ExLlama kernels can run it (the model card's column).
        description: The model card's words on the branch.
    """

    model_config = ConfigDict(frozen=True)

    variant: GPTQVariant
    bits: int
    group_size: int | None  # None: no grouping (the card's "None", -1 in quantize_config.json)
    act_order: bool
    damp_percent: float
    size_gb: float
    exllama_compatible: bool
    description: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def branch(self) -> str:
        """The git revision passed to TGI as `--revision`."""
        return self.variant.value

    @computed_field  # type: ignore[prop-decorator]
    @property
    def estimated_vram_gb(self) -> float:
        """Weights + KV cache for 4096 tokens, in GB, rounded to 0.01 (a floor, see the module docstring)."""
        return round(self.size_gb + kv_cache_gb(_VRAM_ESTIMATE_TOKENS), 2)


def _row(variant: GPTQVariant, bits: int, group_size: int | None, size_gb: float, description: str) -> VariantInfo:
    # Every branch is act-order with damp 0.1 (card), and ExLlama (v1/v2) kernels are 4-bit only.
    return VariantInfo(
        variant=variant,
        bits=bits,
        group_size=group_size,
        act_order=True,
        damp_percent=0.1,
        size_gb=size_gb,
        exllama_compatible=bits == 4,
        description=description,
    )


VARIANTS: dict[GPTQVariant, VariantInfo] = {
    row.variant: row
    for row in (
        _row(
            GPTQVariant.MAIN,
            4,
            128,
            4.16,
            "4-bit, with Act Order and group size 128g. Uses even less VRAM than 64g, but with slightly lower "
            "accuracy.",
        ),
        _row(
            GPTQVariant.BITS4_GROUP32,
            4,
            32,
            4.57,
            "4-bit, with Act Order and group size 32g. Gives highest possible inference quality, with maximum "
            "VRAM usage.",
        ),
        _row(
            GPTQVariant.BITS4_GROUP64,
            4,
            64,
            4.29,
            "4-bit, with Act Order and group size 64g. Uses less VRAM than 32g, but with slightly lower accuracy.",
        ),
        _row(
            GPTQVariant.BITS8_NO_GROUP,
            8,
            None,
            7.52,
            "8-bit, with Act Order. No group size, to lower VRAM requirements.",
        ),
        _row(
            GPTQVariant.BITS8_GROUP128,
            8,
            128,
            7.68,
            "8-bit, with group size 128g for higher inference quality and with Act Order for even higher accuracy.",
        ),
        _row(
            GPTQVariant.BITS8_GROUP32,
            8,
            32,
            8.17,
            "8-bit, with group size 32g and Act Order for maximum inference quality.",
        ),
    )
}


def get_variant(name: str | GPTQVariant) -> VariantInfo:
    """Look a branch up by its name (or enum member).

    Args:
        name: A branch name such as "gptq-4bit-32g-actorder_True", or a `GPTQVariant`.

    Returns:
        The branch's quantisation settings and size.

    Raises:
        ConfigurationError: an unknown name (the message lists the valid ones).
    """
    try:
        return VARIANTS[GPTQVariant(name)]
    except ValueError:
        valid = ", ".join(repr(v.value) for v in GPTQVariant)
        raise ConfigurationError(f"unknown GPTQ variant {name!r}; choose one of {valid}") from None


def variant_field(value: object) -> object:
    """A model field's "before" validator for a branch: a name becomes its `GPTQVariant`, and an unknown one
    raises `get_variant`'s error, which lists the valid names; anything else is left to the field's type."""
    if isinstance(value, str):
        return get_variant(value).variant
    return value
