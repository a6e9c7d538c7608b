"""zephyr_tgi: a typed, retrying, streaming client and launcher for text-generation-inference serving
Zephyr-7B-alpha GPTQ.

Everything public is imported from here (the emulator and pytest plugin live in `zephyr_tgi.testing`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._client.async_client import AsyncStream, AsyncZephyrClient
    from ._client.budget import BudgetPolicy
    from ._client.conversation import AsyncConversation, Conversation, OverflowPolicy
    from ._client.params import (
        PRESETS,
        Grammar,
        Limits,
        SamplingParams,
    )
    from ._client.replicas import EndpointStatus
    from ._client.sync_client import Stream, ZephyrClient
    from ._client.templates import (
        SPECIAL_TOKENS,
        Message,
        MessagesInput,
        Role,
        SpecialTokenPolicy,
        render_prompt,
    )
    from ._client.tokenizer import ZephyrTokenizer
    from ._engines import EngineName, EngineSetting, MetricsSummary, SGLangOptions, VLLMOptions
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
        MalformedResponseError,
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
    from ._launcher.args import DEFAULT_IMAGE, LaunchConfig
    from ._launcher.readiness import ProgressEvent, Stage
    from ._launcher.server import TGIServer
    from ._launcher.variants import (
        VARIANTS,
        GPTQVariant,
        VariantInfo,
        get_variant,
    )
    from ._retry import RetryPolicy
    from ._telemetry.settings import Telemetry
    from ._timeout import Timeout
    from ._types import (
        BestOfSequence,
        ChatCompletion,
        ChatCompletionChoice,
        ChatCompletionChunk,
        ChatCompletionChunkChoice,
        ChatCompletionDelta,
        ChatCompletionMessage,
        ChatCompletionUsage,
        FinishReason,
        GenerationResult,
        PrefillToken,
        ServerInfo,
        StreamChunk,
        Token,
        TokenSpan,
        ToolCall,
        ToolCallDelta,
        ToolCallFunction,
    )

__version__ = "0.2.0"

__all__ = [
    "DEFAULT_IMAGE",
    "PRESETS",
    "SPECIAL_TOKENS",
    "VARIANTS",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncConversation",
    "AsyncStream",
    "AsyncZephyrClient",
    "AuthenticationError",
    "BestOfSequence",
    "BudgetPolicy",
    "ChatCompletion",
    "ChatCompletionChoice",
    "ChatCompletionChunk",
    "ChatCompletionChunkChoice",
    "ChatCompletionDelta",
    "ChatCompletionMessage",
    "ChatCompletionUsage",
    "ConfigurationError",
    "ContainerStartError",
    "Conversation",
    "DockerUnavailableError",
    "EndpointStatus",
    "EngineName",
    "EngineSetting",
    "FinishReason",
    "GPTQVariant",
    "GPUUnavailableError",
    "GenerationError",
    "GenerationResult",
    "Grammar",
    "IncompleteGenerationError",
    "InputValidationError",
    "LaunchConfig",
    "Limits",
    "MalformedResponseError",
    "Message",
    "MessagesInput",
    "MetricsSummary",
    "OverflowPolicy",
    "OverloadedError",
    "PrefillToken",
    "PrefillUnavailableError",
    "ProgressEvent",
    "PromptError",
    "PromptInjectionError",
    "RetryPolicy",
    "Role",
    "SGLangOptions",
    "SamplingParams",
    "ServerError",
    "ServerInfo",
    "ServerNotReadyError",
    "ServerUnavailableError",
    "SpecialTokenPolicy",
    "Stage",
    "Stream",
    "StreamChunk",
    "StructuredOutputError",
    "TGIServer",
    "Telemetry",
    "Timeout",
    "Token",
    "TokenBudgetError",
    "TokenSpan",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallFunction",
    "VLLMOptions",
    "VariantInfo",
    "ZephyrClient",
    "ZephyrTGIError",
    "ZephyrTokenizer",
    "__version__",
    "get_variant",
    "render_prompt",
]

# Names load on first use (PEP 562), so `import zephyr_tgi` stays cheap and the heavy modules (pydantic
# models, httpx2, huggingface_hub's inference client) load only when a client is actually made.
_LAZY: dict[str, str] = {
    "DEFAULT_IMAGE": "zephyr_tgi._launcher.args",
    "PRESETS": "zephyr_tgi._client.params",
    "SPECIAL_TOKENS": "zephyr_tgi._client.templates",
    "VARIANTS": "zephyr_tgi._launcher.variants",
    "APIConnectionError": "zephyr_tgi._errors",
    "APIError": "zephyr_tgi._errors",
    "APIStatusError": "zephyr_tgi._errors",
    "APITimeoutError": "zephyr_tgi._errors",
    "AsyncConversation": "zephyr_tgi._client.conversation",
    "AsyncStream": "zephyr_tgi._client.async_client",
    "AsyncZephyrClient": "zephyr_tgi._client.async_client",
    "AuthenticationError": "zephyr_tgi._errors",
    "BestOfSequence": "zephyr_tgi._types",
    "BudgetPolicy": "zephyr_tgi._client.budget",
    "ChatCompletion": "zephyr_tgi._types",
    "ChatCompletionChoice": "zephyr_tgi._types",
    "ChatCompletionChunk": "zephyr_tgi._types",
    "ChatCompletionChunkChoice": "zephyr_tgi._types",
    "ChatCompletionDelta": "zephyr_tgi._types",
    "ChatCompletionMessage": "zephyr_tgi._types",
    "ChatCompletionUsage": "zephyr_tgi._types",
    "ConfigurationError": "zephyr_tgi._errors",
    "ContainerStartError": "zephyr_tgi._errors",
    "Conversation": "zephyr_tgi._client.conversation",
    "DockerUnavailableError": "zephyr_tgi._errors",
    "EndpointStatus": "zephyr_tgi._client.replicas",
    "EngineName": "zephyr_tgi._engines",
    "EngineSetting": "zephyr_tgi._engines",
    "MetricsSummary": "zephyr_tgi._engines",
    "FinishReason": "zephyr_tgi._types",
    "GPTQVariant": "zephyr_tgi._launcher.variants",
    "GPUUnavailableError": "zephyr_tgi._errors",
    "GenerationError": "zephyr_tgi._errors",
    "GenerationResult": "zephyr_tgi._types",
    "Grammar": "zephyr_tgi._client.params",
    "IncompleteGenerationError": "zephyr_tgi._errors",
    "InputValidationError": "zephyr_tgi._errors",
    "LaunchConfig": "zephyr_tgi._launcher.args",
    "Limits": "zephyr_tgi._client.params",
    "MalformedResponseError": "zephyr_tgi._errors",
    "Message": "zephyr_tgi._client.templates",
    "MessagesInput": "zephyr_tgi._client.templates",
    "OverflowPolicy": "zephyr_tgi._client.conversation",
    "OverloadedError": "zephyr_tgi._errors",
    "PrefillToken": "zephyr_tgi._types",
    "PrefillUnavailableError": "zephyr_tgi._errors",
    "ProgressEvent": "zephyr_tgi._launcher.readiness",
    "PromptError": "zephyr_tgi._errors",
    "PromptInjectionError": "zephyr_tgi._errors",
    "RetryPolicy": "zephyr_tgi._retry",
    "SGLangOptions": "zephyr_tgi._engines",
    "VLLMOptions": "zephyr_tgi._engines",
    "Role": "zephyr_tgi._client.templates",
    "SamplingParams": "zephyr_tgi._client.params",
    "ServerError": "zephyr_tgi._errors",
    "ServerInfo": "zephyr_tgi._types",
    "ServerNotReadyError": "zephyr_tgi._errors",
    "ServerUnavailableError": "zephyr_tgi._errors",
    "SpecialTokenPolicy": "zephyr_tgi._client.templates",
    "Stage": "zephyr_tgi._launcher.readiness",
    "Stream": "zephyr_tgi._client.sync_client",
    "StreamChunk": "zephyr_tgi._types",
    "StructuredOutputError": "zephyr_tgi._errors",
    "TGIServer": "zephyr_tgi._launcher.server",
    "Telemetry": "zephyr_tgi._telemetry.settings",
    "Timeout": "zephyr_tgi._timeout",
    "Token": "zephyr_tgi._types",
    "TokenBudgetError": "zephyr_tgi._errors",
    "TokenSpan": "zephyr_tgi._types",
    "ToolCall": "zephyr_tgi._types",
    "ToolCallDelta": "zephyr_tgi._types",
    "ToolCallFunction": "zephyr_tgi._types",
    "VariantInfo": "zephyr_tgi._launcher.variants",
    "ZephyrClient": "zephyr_tgi._client.sync_client",
    "ZephyrTGIError": "zephyr_tgi._errors",
    "ZephyrTokenizer": "zephyr_tgi._client.tokenizer",
    "get_variant": "zephyr_tgi._launcher.variants",
    "render_prompt": "zephyr_tgi._client.templates",
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
