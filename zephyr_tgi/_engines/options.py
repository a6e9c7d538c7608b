"""Engine-specific sampling options: the typed way in for what only one engine has (`SamplingParams.engine_options`).

Only the engine an options object names accepts it; any other engine refuses it before sending.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from .._models import OptionsModel

__all__ = ["SGLangOptions", "VLLMOptions"]

_I64 = 2**63 - 1


class _EngineOptions(OptionsModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    min_tokens: int | None = Field(default=None, ge=0)
    ignore_eos: bool | None = None
    priority: int | None = Field(default=None, ge=-_I64, le=_I64)
    session_id: str | None = Field(default=None, min_length=1)


class VLLMOptions(_EngineOptions):
    """vLLM's own request fields (vllm/entrypoints/openai/completion/protocol.py).

    Attributes:
        engine: Always "vllm": which engine these options are for.
        min_p: Keep tokens at least `min_p` times as likely as the most likely one.
        min_tokens: Tokens to generate before a stop sequence or EOS may end the answer.
        ignore_eos: Keep generating past EOS (for benchmarks).
        priority: The request's priority, for a server that schedules by priority.
        session_id: The engine's `session_id` request field, sent as is.
        cache_salt: Salt that keeps this request's prefix cache apart from other tenants'.
        presence_penalty: OpenAI-style penalty on tokens present so far, from -2 to 2.
    """

    engine: Literal["vllm"] = "vllm"
    cache_salt: str | None = Field(default=None, min_length=1, max_length=1024)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)


class SGLangOptions(_EngineOptions):
    """SGLang's own request fields (sglang/srt/entrypoints/openai/protocol.py, CompletionRequest).

    Attributes:
        engine: Always "sglang": which engine these options are for.
        min_p: Keep tokens at least `min_p` times as likely as the most likely one.
        min_tokens: Tokens to generate before a stop sequence or EOS may end the answer.
        ignore_eos: Keep generating past EOS (for benchmarks).
        priority: The request's priority, for a server that schedules by priority.
        session_id: The engine's `session_id` request field, sent as is.
        no_stop_trim: Keep the stop sequence at the end of the answer.
        presence_penalty: OpenAI-style penalty on tokens present so far, from -2 to 2.
    """

    engine: Literal["sglang"] = "sglang"
    no_stop_trim: bool | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
