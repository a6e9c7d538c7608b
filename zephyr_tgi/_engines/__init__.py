"""One module per inference engine: routes, request building, answer/error/stream parsing, identification.

The client's flows, the emulator's dialects and the launcher all read an engine's knowledge from here.
"""

from __future__ import annotations

from .._errors import ConfigurationError
from .base import ENGINE_NAMES, ChunkAssembler, Engine, EngineName, EngineSetting
from .metrics import MetricsSummary, summarize
from .options import SGLangOptions, VLLMOptions
from .sglang import SGLang
from .tgi import TGI
from .vllm import VLLM

__all__ = [
    "ENGINES",
    "ENGINE_NAMES",
    "IDENTIFY_ORDER",
    "ChunkAssembler",
    "Engine",
    "EngineName",
    "EngineSetting",
    "MetricsSummary",
    "SGLangOptions",
    "VLLMOptions",
    "check_engine_setting",
    "engine_named",
    "summarize",
]

ENGINES: dict[str, Engine] = {"tgi": TGI(), "vllm": VLLM(), "sglang": SGLang()}
# The order `engine="auto"` asks in: each probe is a route only that engine answers in its own shape.
IDENTIFY_ORDER: tuple[Engine, ...] = (ENGINES["tgi"], ENGINES["sglang"], ENGINES["vllm"])


def check_engine_setting(value: object) -> EngineSetting:
    """`value` as an engine setting ("auto" or an engine's name)."""
    if value == "auto" or value in ENGINES:
        return value  # type: ignore[return-value]
    raise ConfigurationError(f"engine must be 'auto', 'tgi', 'vllm' or 'sglang', got {value!r}")


def engine_named(name: str) -> Engine:
    """The engine called `name`."""
    try:
        return ENGINES[name]
    except KeyError:
        raise ConfigurationError(f"unknown engine {name!r}; choose one of {sorted(ENGINES)}") from None
