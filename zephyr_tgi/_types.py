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
    """A generated token.

    Attributes:
        id: The token id.
        text: Its text.
        logprob: Its log-probability, when the server sent one.
        special: Whether it is a special token (`<s>`, `</s>`, `<unk>`).
    """

    id: int
    text: str
    logprob: float | None = None
    special: bool = False


class PrefillToken(_Frozen):
    """A prompt token with its logprob (TGI fills these only with `--enable-prefill-logprobs`).

    Attributes:
        id: The token id.
        text: Its text.
        logprob: Its log-probability given the tokens before it (None for the first token).
    """

    id: int
    text: str
    logprob: float | None = None


class BestOfSequence(_Frozen):
    """One of the `best_of` candidates that lost.

    Attributes:
        generated_text: The candidate's text, as TGI returned it.
        finish_reason: Why it ended.
        generated_tokens: Its length in tokens.
        seed: The seed it was sampled with.
        prefill: The prompt's tokens, when asked for.
        tokens: Its tokens.
        top_tokens: The most likely tokens at each step, when asked for.
    """

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

    Attributes:
        text: The answer, a trailing stop sequence removed.
        generated_text: The answer exactly as the server returned it.
        finish_reason: Why it ended: "length", "eos_token" or "stop_sequence".
        generated_tokens: Its length in tokens.
        seed: The seed it was sampled with (when sampling).
        input_length: The prompt's length in tokens, BOS included (when the server reports it).
        tokens: Its tokens, with logprobs.
        prefill: The prompt's tokens with logprobs (`decoder_input_details=True`).
        top_tokens: The `top_n_tokens` most likely tokens at each step.
        best_of_sequences: The `best_of` candidates that lost.
        prompt: The exact prompt sent (the rendered Zephyr chat for `chat()`).
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

    Attributes:
        index: The position of the chunk's token in the answer (TGI's `index`).
        text: The text to show now (see above).
        token: The token behind the chunk.
        top_tokens: The most likely tokens at this step, when asked for.
        result: On the last chunk, the whole answer; None before.
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
    """A token of a tokenized text, with its character offsets (TGI's `/tokenize`).

    Attributes:
        id: The token id.
        text: Its text.
        start: The offset of its first character in the text.
        stop: The offset just after its last character.
    """

    id: int
    text: str
    start: int
    stop: int


class ServerInfo(BaseModel):
    """TGI's `/info`: the model served and the deployment's limits.

    Attributes:
        model_id: The model served.
        model_sha: Its revision's commit.
        model_pipeline_tag: Its Hub pipeline tag (e.g. "text-generation").
        max_concurrent_requests: Requests in flight before the server answers 429.
        max_best_of: `best_of` at most.
        max_stop_sequences: Stop sequences per request at most.
        max_input_tokens: The longest prompt, in tokens (`max_input_length` in TGI 1.x).
        max_total_tokens: Prompt + new tokens at most, per request.
        max_top_n_tokens: `top_n_tokens` at most.
        validation_workers: TGI's validation workers.
        max_client_batch_size: Inputs per batched request at most.
        router: The router's name (TGI's "text-generation-router").
        version: The server's version.
        sha: The server's commit.
        docker_label: The server image's label.
        engine: Which engine answered: "tgi", "vllm" or "sglang" (vLLM and SGLang report their limits in `/v1/models`).
    """

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
    """Token counts of a chat completion.

    Attributes:
        prompt_tokens: The prompt's tokens.
        completion_tokens: The answer's tokens.
        total_tokens: Both.
    """

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ToolCallFunction(_Frozen):
    """The function a tool call names, with its arguments as the JSON text the server sent.

    Attributes:
        name: The function's name.
        arguments: Its arguments, as JSON text.
        description: A description, when the server sends one.
    """

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
    """One tool call of an assistant message (`message.tool_calls[i]`).

    Attributes:
        id: The call's id, to answer it with a tool message.
        type: Always "function" today.
        function: The function called and its arguments.
    """

    id: str
    type: str = "function"
    function: ToolCallFunction


class ToolCallDelta(_Frozen):
    """A fragment of a streamed tool call (`delta.tool_calls[i]`): the name comes once, the arguments in pieces.

    Attributes:
        index: Which tool call of the message this fragment belongs to.
        id: The call's id (on its first fragment).
        type: "function" (on its first fragment).
        name: The function's name (on its first fragment).
        arguments: The next piece of the arguments' JSON text.
    """

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
    """The assistant's message in a chat completion.

    Attributes:
        role: Always "assistant".
        content: The answer's text (None for a message of tool calls only).
        tool_calls: The tool calls as sent (typed ones: `ChatCompletion.tool_calls`).
    """

    role: str = "assistant"
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatCompletionChoice(_Frozen):
    """One choice of a chat completion.

    Attributes:
        index: The choice's position.
        message: The assistant's message.
        finish_reason: Why it ended ("stop", "length", "tool_calls", ...).
        logprobs: The tokens' logprobs, when asked for.
    """

    index: int = 0
    message: ChatCompletionMessage
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletion(_Frozen):
    """A non-streaming `/v1/chat/completions` answer.

    Attributes:
        id: The completion's id.
        object: Always "chat.completion".
        created: When it was made (Unix seconds).
        model: The model that answered.
        system_fingerprint: The server's version, as it reports it.
        choices: The answers (one unless `n` asked for more).
        usage: Token counts.
    """

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
    """The new part of the assistant message in a stream chunk.

    Attributes:
        role: "assistant" (on the first chunk).
        content: The new text.
        tool_calls: Fragments of tool calls, as sent (typed ones: `ChatCompletionChunk.tool_calls`).
    """

    role: str | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatCompletionChunkChoice(_Frozen):
    """One choice of a chat completion stream chunk.

    Attributes:
        index: The choice's position.
        delta: What this chunk adds to the message.
        finish_reason: Why it ended, on its last chunk.
        logprobs: The new tokens' logprobs, when asked for.
    """

    index: int = 0
    delta: ChatCompletionDelta = ChatCompletionDelta()
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletionChunk(_Frozen):
    """One `chat.completion.chunk` event of a streamed `/v1/chat/completions` answer.

    Attributes:
        id: The completion's id (the same on every chunk).
        object: Always "chat.completion.chunk".
        created: When it was made (Unix seconds).
        model: The model that answers.
        system_fingerprint: The server's version, as it reports it.
        choices: What this chunk adds to each choice.
        usage: Token counts, on the chunk that carries them (the last one, when the server sends them).
    """

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
