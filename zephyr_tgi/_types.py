"""Typed results: generations, stream chunks, server info, token spans and chat completions."""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from pydantic import AliasChoices, AliasPath, BaseModel, ConfigDict, Field, field_validator, model_validator

from ._display import preview
from ._errors import StructuredOutputError

__all__ = [
    "BestOfSequence",
    "ChatCompletion",
    "ChatCompletionChoice",
    "ChatCompletionChunk",
    "ChatCompletionChunkChoice",
    "ChatCompletionDelta",
    "ChatCompletionMessage",
    "ChatCompletionUsage",
    "FinishReason",
    "GenerationResult",
    "PrefillToken",
    "ServerInfo",
    "StreamChunk",
    "Token",
    "TokenSpan",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallFunction",
]

FinishReason = Literal["length", "eos_token", "stop_sequence"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", from_attributes=True)


class Token(_Frozen):
    """A generated token."""

    id: int
    text: str
    logprob: float | None = None
    special: bool = False


class PrefillToken(_Frozen):
    """A prompt token with its logprob (TGI fills these only with `--enable-prefill-logprobs`)."""

    id: int
    text: str
    logprob: float | None = None


class BestOfSequence(_Frozen):
    """One of the `best_of` candidates that lost."""

    generated_text: str
    finish_reason: FinishReason
    generated_tokens: int
    seed: int | None = None
    prefill: tuple[PrefillToken, ...] = ()
    tokens: tuple[Token, ...] = ()
    top_tokens: tuple[tuple[Token, ...], ...] | None = None


class GenerationResult(_Frozen):
    """A finished generation.

    `text` is the answer with a trailing stop sequence removed (so `</s>` never appears in it);
    `generated_text` is exactly what TGI returned.
    """

    text: str
    generated_text: str
    finish_reason: FinishReason | None = None
    generated_tokens: int | None = None
    seed: int | None = None
    input_length: int | None = None
    tokens: tuple[Token, ...] = ()
    prefill: tuple[PrefillToken, ...] = ()
    top_tokens: tuple[tuple[Token, ...], ...] = ()
    best_of_sequences: tuple[BestOfSequence, ...] = ()
    prompt: str | None = None
    request_id: str | None = None
    """The call's `X-Request-Id` (the server's own when it sent one back)."""

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        # The tokens, prefill and top tokens would fill a screen (a batch result printed is a list of these).
        return (
            f"GenerationResult(text={preview(self.text)}, chars={len(self.text)}, "
            f"finish_reason={self.finish_reason!r}, generated_tokens={self.generated_tokens!r}, "
            f"input_length={self.input_length!r})"
        )

    def _repr_markdown_(self) -> str:
        meta = ", ".join(
            f"{name}: {value}"
            for name, value in (("finish", self.finish_reason), ("tokens", self.generated_tokens))
            if value is not None
        )
        return f"{self.text}\n\n<sub>{meta}</sub>" if meta else self.text


class StreamChunk(_Frozen):
    """One step of a stream: the new text, the token behind it, and on the last chunk the whole result.

    `text` is what to show now. It can be empty (special tokens, or text held back while it might still
    turn out to be the start of a stop sequence) and it can carry held-back text from earlier tokens;
    joining every chunk's `text` gives exactly `result.text` of the last chunk.
    """

    index: int
    # Given, or the token's own text: a TGI token event validates into a chunk in one pass.
    text: str = Field(validation_alias=AliasChoices("text", AliasPath("token", "text")))
    token: Token
    top_tokens: tuple[Token, ...] = ()
    result: GenerationResult | None = None

    def __repr__(self) -> str:
        result = f", result={self.result!r}" if self.result is not None else ""
        return f"StreamChunk(index={self.index}, text={self.text!r}, token_id={self.token.id}{result})"

    @property
    def is_last(self) -> bool:
        """True on the final chunk, which carries the `result`."""
        return self.result is not None


class TokenSpan(_Frozen):
    """A token of a tokenized text, with its character offsets (TGI's `/tokenize`)."""

    id: int
    text: str
    start: int
    stop: int


class ServerInfo(BaseModel):
    """TGI's `/info`: the model served and the deployment's limits."""

    model_config = ConfigDict(frozen=True, extra="allow", protected_namespaces=())

    model_id: str
    model_sha: str | None = None
    model_pipeline_tag: str | None = None
    max_concurrent_requests: int = 128
    max_best_of: int = 2
    max_stop_sequences: int = 4
    # TGI 1.x called it max_input_length.
    max_input_tokens: int = Field(default=4095, validation_alias=AliasChoices("max_input_tokens", "max_input_length"))
    max_total_tokens: int = 4096
    max_top_n_tokens: int = 5
    validation_workers: int | None = None
    max_client_batch_size: int | None = None
    router: str | None = None
    version: str | None = None
    sha: str | None = None
    docker_label: str | None = None
    # Which engine answered: "tgi", "vllm" or "sglang" (vLLM and SGLang report their limits in /v1/models).
    engine: str = "tgi"


class ChatCompletionUsage(_Frozen):
    """Token counts of a chat completion."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ToolCallFunction(_Frozen):
    """The function a tool call names, with its arguments as the JSON text the server sent."""

    name: str
    arguments: str = "{}"
    description: str | None = None

    @field_validator("arguments", mode="before")
    @classmethod
    def _arguments_as_text(cls, value: Any) -> Any:
        # TGI and the OpenAI API send a JSON string; some servers send the object itself.
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    def parsed_arguments(self) -> Any:
        """The arguments decoded from JSON.

        Raises:
            StructuredOutputError: the arguments are not valid JSON.
        """
        try:
            return json.loads(self.arguments)
        except ValueError as exc:
            raise StructuredOutputError(
                f"the arguments of tool call {self.name!r} are not valid JSON: {exc}", raw_text=self.arguments
            ) from exc


class ToolCall(_Frozen):
    """One tool call of an assistant message (`message.tool_calls[i]`)."""

    id: str
    type: str = "function"
    function: ToolCallFunction


class ToolCallDelta(_Frozen):
    """A fragment of a streamed tool call (`delta.tool_calls[i]`): the name comes once, the arguments in pieces."""

    index: int = 0
    id: str | None = None
    type: str | None = None
    name: str | None = None
    arguments: str = ""

    @model_validator(mode="before")
    @classmethod
    def _from_wire(cls, value: Any) -> Any:
        # The wire nests name and arguments under `function`; flat fields read better in a loop.
        if isinstance(value, dict) and isinstance(value.get("function"), dict):
            function = value["function"]
            value = {**value, "name": function.get("name"), "arguments": function.get("arguments") or ""}
        return value


class ChatCompletionMessage(_Frozen):
    """The assistant's message in a chat completion."""

    role: str = "assistant"
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatCompletionChoice(_Frozen):
    """One choice of a chat completion."""

    index: int = 0
    message: ChatCompletionMessage
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletion(_Frozen):
    """A non-streaming `/v1/chat/completions` answer."""

    id: str = ""
    object: str = "chat.completion"
    created: int = 0
    model: str = ""
    system_fingerprint: str | None = None
    choices: tuple[ChatCompletionChoice, ...] = ()
    usage: ChatCompletionUsage | None = None
    request_id: str | None = None
    """The call's `X-Request-Id` (the server's own when it sent one back)."""

    def __repr__(self) -> str:
        finish = self.choices[0].finish_reason if self.choices else None
        calls = ", ".join(call.function.name for call in self.tool_calls)
        shown = f"tool_calls=[{calls}]" if calls else f"text={preview(self.text)}"
        counts = (
            f", prompt_tokens={self.usage.prompt_tokens}, completion_tokens={self.usage.completion_tokens}"
            if self.usage
            else ""
        )
        return f"ChatCompletion({shown}, finish_reason={finish!r}{counts})"

    @property
    def text(self) -> str:
        """The first choice's content."""
        return (self.choices[0].message.content or "") if self.choices else ""

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The first choice's tool calls, typed (empty when the model answered in text)."""
        calls = self.choices[0].message.tool_calls if self.choices else None
        return _typed(ToolCall, calls)


class ChatCompletionDelta(_Frozen):
    """The new part of the assistant message in a stream chunk."""

    role: str | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatCompletionChunkChoice(_Frozen):
    """One choice of a chat completion stream chunk."""

    index: int = 0
    delta: ChatCompletionDelta = ChatCompletionDelta()
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletionChunk(_Frozen):
    """One `chat.completion.chunk` event of a streamed `/v1/chat/completions` answer."""

    id: str = ""
    object: str = "chat.completion.chunk"
    created: int = 0
    model: str = ""
    system_fingerprint: str | None = None
    choices: tuple[ChatCompletionChunkChoice, ...] = ()
    usage: ChatCompletionUsage | None = None

    @property
    def text(self) -> str:
        """The first choice's content delta ("" when there is none)."""
        return (self.choices[0].delta.content or "") if self.choices else ""

    @property
    def tool_calls(self) -> tuple[ToolCallDelta, ...]:
        """The first choice's tool-call fragments, typed (join `arguments` by `index` to rebuild each call)."""
        calls = self.choices[0].delta.tool_calls if self.choices else None
        return _typed(ToolCallDelta, calls)


_Call = TypeVar("_Call", ToolCall, ToolCallDelta)


def _typed(model: type[_Call], calls: list[dict[str, Any]] | None) -> tuple[_Call, ...]:
    """Tool calls as the server sent them, typed; a call of the wrong shape is the server's error, typed too.

    Raises:
        MalformedResponseError: a tool call is not in the OpenAI format.
    """
    from pydantic import ValidationError

    from ._errors import MalformedResponseError

    try:
        return tuple(model.model_validate(call) for call in calls or ())
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        raise MalformedResponseError(f"the server's tool call is not in the OpenAI format: {first['msg']}") from exc
