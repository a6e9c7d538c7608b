"""zephyr_tgi: a typed, retrying, streaming client and launcher for text-generation-inference serving
Zephyr-7B-alpha GPTQ.

Everything public is imported from here (the emulator and pytest plugin live in `zephyr_tgi.testing`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._client import AsyncZephyrClient, ZephyrClient
    from ._conversation import AsyncConversation, Conversation
    from ._errors import (
        APIConnectionError,
        APIError,
        APIStatusError,
        APITimeoutError,
        AuthenticationError,
        ConfigurationError,
        ContainerStartError,
        DockerUnavailableError,
        GenerationError,
        GPUUnavailableError,
        IncompleteGenerationError,
        InputValidationError,
        OverloadedError,
        PrefillUnavailableError,
        PromptError,
        PromptInjectionError,
        ServerError,
        ServerNotReadyError,
        ServerUnavailableError,
        StructuredOutputError,
        TokenBudgetError,
        ZephyrTGIError,
    )
    from ._params import PRESETS, Grammar, SamplingParams
    from ._retry import RetryPolicy
    from ._templates import SPECIAL_TOKENS, Message, render_prompt
    from ._timeout import Timeout
    from ._tokenizer import ZephyrTokenizer
    from ._types import (
        BestOfSequence,
        ChatCompletion,
        ChatCompletionChunk,
        GenerationResult,
        PrefillToken,
        ServerInfo,
        StreamChunk,
        Token,
        TokenSpan,
    )

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "SPECIAL_TOKENS",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncConversation",
    "AsyncZephyrClient",
    "AuthenticationError",
    "BestOfSequence",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ConfigurationError",
    "ContainerStartError",
    "Conversation",
    "DockerUnavailableError",
    "GPUUnavailableError",
    "GenerationError",
    "GenerationResult",
    "Grammar",
    "IncompleteGenerationError",
    "InputValidationError",
    "Message",
    "OverloadedError",
    "PrefillToken",
    "PrefillUnavailableError",
    "PromptError",
    "PromptInjectionError",
    "RetryPolicy",
    "SamplingParams",
    "ServerError",
    "ServerInfo",
    "ServerNotReadyError",
    "ServerUnavailableError",
    "StreamChunk",
    "StructuredOutputError",
    "Timeout",
    "Token",
    "TokenBudgetError",
    "TokenSpan",
    "ZephyrClient",
    "ZephyrTGIError",
    "ZephyrTokenizer",
    "__version__",
    "render_prompt",
]

# Names load on first use (PEP 562), so `import zephyr_tgi` stays cheap and the heavy modules (pydantic
# models, httpx2, huggingface_hub's inference client) load only when a client is actually made.
_LAZY: dict[str, str] = {
    "PRESETS": "zephyr_tgi._params",
    "SPECIAL_TOKENS": "zephyr_tgi._templates",
    "APIConnectionError": "zephyr_tgi._errors",
    "APIError": "zephyr_tgi._errors",
    "APIStatusError": "zephyr_tgi._errors",
    "APITimeoutError": "zephyr_tgi._errors",
    "AsyncConversation": "zephyr_tgi._conversation",
    "AsyncZephyrClient": "zephyr_tgi._client",
    "AuthenticationError": "zephyr_tgi._errors",
    "BestOfSequence": "zephyr_tgi._types",
    "ChatCompletion": "zephyr_tgi._types",
    "ChatCompletionChunk": "zephyr_tgi._types",
    "ConfigurationError": "zephyr_tgi._errors",
    "ContainerStartError": "zephyr_tgi._errors",
    "Conversation": "zephyr_tgi._conversation",
    "DockerUnavailableError": "zephyr_tgi._errors",
    "GPUUnavailableError": "zephyr_tgi._errors",
    "GenerationError": "zephyr_tgi._errors",
    "GenerationResult": "zephyr_tgi._types",
    "Grammar": "zephyr_tgi._params",
    "IncompleteGenerationError": "zephyr_tgi._errors",
    "InputValidationError": "zephyr_tgi._errors",
    "Message": "zephyr_tgi._templates",
    "OverloadedError": "zephyr_tgi._errors",
    "PrefillToken": "zephyr_tgi._types",
    "PrefillUnavailableError": "zephyr_tgi._errors",
    "PromptError": "zephyr_tgi._errors",
    "PromptInjectionError": "zephyr_tgi._errors",
    "RetryPolicy": "zephyr_tgi._retry",
    "SamplingParams": "zephyr_tgi._params",
    "ServerError": "zephyr_tgi._errors",
    "ServerInfo": "zephyr_tgi._types",
    "ServerNotReadyError": "zephyr_tgi._errors",
    "ServerUnavailableError": "zephyr_tgi._errors",
    "StreamChunk": "zephyr_tgi._types",
    "StructuredOutputError": "zephyr_tgi._errors",
    "Timeout": "zephyr_tgi._timeout",
    "Token": "zephyr_tgi._types",
    "TokenBudgetError": "zephyr_tgi._errors",
    "TokenSpan": "zephyr_tgi._types",
    "ZephyrClient": "zephyr_tgi._client",
    "ZephyrTGIError": "zephyr_tgi._errors",
    "ZephyrTokenizer": "zephyr_tgi._tokenizer",
    "render_prompt": "zephyr_tgi._templates",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zephyr_tgi' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
