"""zephyr_tgi: a typed, retrying, streaming client and launcher for text-generation-inference serving
Zephyr-7B-alpha GPTQ.

Everything public is imported from here (the emulator and pytest plugin live in `zephyr_tgi.testing`).
"""

from __future__ import annotations

from ._client import AsyncZephyrClient, ZephyrClient
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
    PromptError,
    PromptInjectionError,
    ServerError,
    ServerNotReadyError,
    ServerUnavailableError,
    TokenBudgetError,
    ZephyrTGIError,
)
from ._params import PRESETS, Grammar, SamplingParams
from ._retry import RetryPolicy
from ._templates import SPECIAL_TOKENS, Message, render_prompt
from ._timeout import Timeout
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
    "AsyncZephyrClient",
    "AuthenticationError",
    "BestOfSequence",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ConfigurationError",
    "ContainerStartError",
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
    "PromptError",
    "PromptInjectionError",
    "RetryPolicy",
    "SamplingParams",
    "ServerError",
    "ServerInfo",
    "ServerNotReadyError",
    "ServerUnavailableError",
    "StreamChunk",
    "Timeout",
    "Token",
    "TokenBudgetError",
    "TokenSpan",
    "ZephyrClient",
    "ZephyrTGIError",
    "__version__",
    "render_prompt",
]
