"""What vLLM and SGLang share: the OpenAI completions API as the raw-prompt route, `/v1/models` for limits.

Both engines render nothing here: the client sends the Zephyr prompt it rendered itself to `/v1/completions`,
so the model sees the same text as on TGI. Each engine's own field names, structured-output form and error
body live in its module; reading completions answers and streams is written once, here.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .._errors import (
    APIStatusError,
    GenerationError,
    InputValidationError,
    MalformedResponseError,
    Redactor,
    error_class_for,
    from_response,
)
from .._types import FinishReason, GenerationResult, PrefillToken, ServerInfo, StreamChunk, Token
from .base import ChunkAssembler, Engine

if TYPE_CHECKING:
    from .._client.core import NativeRequest
    from .._client.params import Grammar, SamplingParams

__all__ = ["CompletionsEngine", "finish_reason_of"]

_EOS = "</s>"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Logprobs(_Wire):
    tokens: tuple[str, ...] = ()
    token_logprobs: tuple[float | None, ...] = ()
    top_logprobs: tuple[dict[str, float] | None, ...] | None = None


class _PromptLogprob(_Wire):
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


class _Choice(_Wire):
    index: int = 0
    text: str
    finish_reason: str | None = None
    stop_reason: int | str | None = None  # vLLM: the matched stop string, or a stop token id
    matched_stop: int | str | None = None  # SGLang: the same
    logprobs: _Logprobs | None = None
    token_ids: tuple[int, ...] | None = None
    # vLLM: one entry per prompt token (None for the first), keyed by token id; with `return_token_ids`.
    prompt_logprobs: tuple[dict[str, _PromptLogprob] | None, ...] | None = None
    prompt_token_ids: tuple[int, ...] | None = None


class _Usage(_Wire):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _Completion(_Wire):
    choices: tuple[_Choice, ...]
    usage: _Usage | None = None


class _Model(_Wire):
    id: str
    max_model_len: int | None = None


class _Models(_Wire):
    data: tuple[_Model, ...]


class _Count(_Wire):
    count: int


class _Ids(_Wire):
    tokens: tuple[int, ...]


class _StreamEvent(_Wire):
    choices: tuple[_Choice, ...] = ()
    error: Any = None


def _malformed(exc: ValidationError, engine: str, what: str) -> MalformedResponseError:
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(map(str, first["loc"])) or "top level"
    return MalformedResponseError(f"the server's {what} is not in {engine}'s format: {first['msg']} at {where}")


def _means_off(name: str, value: Any) -> bool:
    """Whether an option's value asks for nothing (so an engine without it loses nothing)."""
    if value is None or value is False:
        return True
    return name in ("best_of", "typical_p") and value == 1


def finish_reason_of(choice_finish: str | None, matched: int | str | None) -> FinishReason | None:
    """TGI's finish reason for an OpenAI one: a matched stop string is `stop_sequence`, a stop token `eos_token`."""
    if choice_finish == "length":
        return "length"
    if choice_finish == "stop":
        return "stop_sequence" if isinstance(matched, str) and matched != _EOS else "eos_token"
    return None


def _prefill(choice: _Choice, engine: str) -> tuple[PrefillToken, ...]:
    """The prompt tokens with their logprobs, in TGI's prefill shape (BOS first, without a logprob)."""
    if choice.prompt_logprobs is None:
        return ()
    ids = choice.prompt_token_ids or ()
    prefill: list[PrefillToken] = []
    for index, entry in enumerate(choice.prompt_logprobs):
        token_id = ids[index] if index < len(ids) else -1
        if entry is None:
            prefill.append(PrefillToken(id=token_id, text="<s>" if token_id == 1 else "", logprob=None))
            continue
        chosen = entry.get(str(token_id)) if token_id >= 0 else None
        if chosen is None and len(entry) == 1:
            (key, chosen), *_ = entry.items()
            token_id = int(key) if key.lstrip("-").isdigit() else token_id
        if chosen is None:
            raise MalformedResponseError(
                f"{engine}'s prompt_logprobs entry {index} does not name the prompt's token {token_id}"
            )
        prefill.append(PrefillToken(id=token_id, text=chosen.decoded_token or "", logprob=chosen.logprob))
    return tuple(prefill)


def _tokens(choice: _Choice) -> tuple[tuple[Token, ...], tuple[tuple[Token, ...], ...]]:
    if choice.logprobs is None:
        return (), ()
    ids = choice.token_ids or ()
    logprobs = choice.logprobs
    tokens = tuple(
        Token(
            id=ids[i] if i < len(ids) else -1,
            text=text,
            logprob=logprobs.token_logprobs[i] if i < len(logprobs.token_logprobs) else None,
        )
        for i, text in enumerate(logprobs.tokens)
    )
    top = tuple(
        tuple(Token(id=-1, text=text, logprob=value) for text, value in (entry or {}).items())
        for entry in logprobs.top_logprobs or ()
    )
    return tokens, top


class CompletionsEngine(Engine):
    """An engine whose raw-prompt route is OpenAI's `/v1/completions`."""

    generate_path = "/v1/completions"
    stream_path = "/v1/completions"
    info_path = "/v1/models"
    # What each status means on these engines (TGI's table reads 500 as an incomplete generation).
    status_classes: ClassVar[Mapping[int, type[APIStatusError]]] = {
        400: InputValidationError,
        500: GenerationError,
    }
    # SamplingParams fields this engine has no counterpart for, with the reason users see.
    refused: ClassVar[Mapping[str, str]]
    # Limits the engine does not report: its own defaults (stop strings are not limited).
    max_top_n_tokens: ClassVar[int] = 20
    max_concurrent_requests: ClassVar[int] = 256

    # --- requests -------------------------------------------------------------------------------------

    @abstractmethod
    def structured(self, grammar: Grammar) -> dict[str, Any]:
        """The request fields that constrain the answer to `grammar`."""

    @abstractmethod
    def truncate_field(self, truncate: int) -> dict[str, Any]:
        """The request field that keeps only the last `truncate` prompt tokens."""

    def prompt_logprobs_fields(self) -> dict[str, Any]:
        """The completions fields that return every prompt token's logprob (TGI's `decoder_input_details`)."""
        raise self.refuse("decoder_input_details=True", self.refused["decoder_input_details"])

    def generation_fields(self, params: SamplingParams, *, stream: bool) -> dict[str, Any]:
        from .._client.params import as_f32

        for name in params.model_fields_set:
            value = getattr(params, name)
            if name in self.refused and not _means_off(name, value):
                raise self.refuse(f"{name}={value!r}", self.refused[name])
        fields: dict[str, Any] = {}
        if params.greedy:
            fields["temperature"] = 0.0  # both engines sample by default; TGI's default is greedy
        else:
            fields["temperature"] = 1.0 if params.temperature is None else params.temperature
            if params.top_p is not None and as_f32(params.top_p) < 1.0:
                fields["top_p"] = params.top_p
            if params.top_k is not None:
                fields["top_k"] = params.top_k
        if params.max_new_tokens is not None:
            fields["max_tokens"] = params.max_new_tokens
        for name in ("repetition_penalty", "frequency_penalty", "seed"):
            value = getattr(params, name)
            if value is not None:
                fields[name] = value
        stops = [stop for stop in params.stop if stop != _EOS]
        if stops:
            fields["stop"] = stops
        if params.truncate is not None:
            fields.update(self.truncate_field(params.truncate))
        if params.return_full_text:
            fields["echo"] = True
        if params.top_n_tokens:
            fields["logprobs"] = params.top_n_tokens
        if params.grammar is not None:
            fields.update(self.structured(params.grammar))
        if params.decoder_input_details:
            fields.update(self.prompt_logprobs_fields())
        options = params.engine_options
        if options is not None:
            if getattr(options, "engine", None) != self.name:
                raise self.refuse(f"engine_options={type(options).__name__}(...)", "they are another engine's options")
            fields.update(options.model_dump(exclude_none=True, exclude={"engine"}))
        return fields

    def generate_body(self, request: NativeRequest, *, stream: bool) -> bytes:
        body: dict[str, Any] = {"prompt": request.prompt, **self.generation_fields(request.params, stream=stream)}
        body["stream"] = stream
        body["return_token_ids"] = True  # the stream's chunks then say which token each one is
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()

    def chat_body(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        body = dict(payload)
        if body.get("model") == "tgi":
            del body["model"]  # "tgi" names TGI's only model; these engines check the name and default to theirs
        return body

    def tokenize_body(self, text: str, *, add_special_tokens: bool = True) -> bytes:
        return json.dumps({"prompt": text, "add_special_tokens": add_special_tokens}, ensure_ascii=False).encode()

    def parse_ids(self, body: bytes) -> list[int]:
        """The token ids of a tokenize answer."""
        try:
            return list(_Ids.model_validate_json(body).tokens)
        except ValidationError as exc:
            raise _malformed(exc, self.title, "tokenize answer") from exc

    # --- answers --------------------------------------------------------------------------------------

    def parse_generation(self, body: bytes, request: NativeRequest) -> GenerationResult:
        try:
            answer = _Completion.model_validate_json(body)
        except ValidationError as exc:
            raise _malformed(exc, self.title, "completion") from exc
        if len(answer.choices) != 1:
            raise MalformedResponseError(f"the server answered {len(answer.choices)} completions for one prompt")
        choice = answer.choices[0]
        matched = choice.stop_reason if choice.stop_reason is not None else choice.matched_stop
        tokens, top = _tokens(choice)
        usage = answer.usage or _Usage()
        # TGI's generated_text keeps a matched stop string; these engines drop it from `text`.
        generated = choice.text + matched if isinstance(matched, str) and matched != _EOS else choice.text
        return GenerationResult.model_construct(
            text=choice.text,
            generated_text=generated,
            finish_reason=finish_reason_of(choice.finish_reason, matched),
            generated_tokens=usage.completion_tokens,
            seed=request.params.seed,
            input_length=usage.prompt_tokens,
            tokens=tokens,
            top_tokens=top,
            best_of_sequences=(),
            prompt=request.prompt,
            prefill=_prefill(choice, self.title),
        )

    def parse_prompt_logprobs(self, body: bytes, request: NativeRequest) -> list[float | None]:
        return [token.logprob for token in self.parse_generation(body, request).prefill]

    def stream_assembler(self, request: NativeRequest, redactor: Redactor) -> ChunkAssembler:
        return CompletionStreamAssembler(self, request, redactor)

    def parse_count(self, body: bytes) -> int:
        try:
            return _Count.model_validate_json(body).count
        except ValidationError as exc:
            raise _malformed(exc, self.title, "tokenize answer") from exc

    def parse_info(self, body: bytes) -> ServerInfo:
        try:
            models = _Models.model_validate_json(body)
        except ValidationError as exc:
            raise _malformed(exc, self.title, "/v1/models answer") from exc
        if not models.data or models.data[0].max_model_len is None:
            raise MalformedResponseError(f"the server's /v1/models names no model with a max_model_len ({self.title})")
        model = models.data[0]
        window = model.max_model_len or 0
        return ServerInfo(
            model_id=model.id,
            max_input_tokens=window - 1,
            max_total_tokens=window,
            max_best_of=1,
            max_stop_sequences=2**31 - 1,
            max_top_n_tokens=self.max_top_n_tokens,
            max_concurrent_requests=self.max_concurrent_requests,
            engine=self.name,
        )

    # --- errors ---------------------------------------------------------------------------------------

    def error_for(self, status: int, body: bytes, headers: Mapping[str, str], redactor: Redactor) -> APIStatusError:
        error = from_response(status, body, headers, redactor=redactor)
        wanted = self.status_classes.get(status)
        if wanted is None or type(error) is wanted:
            return error
        return wanted(error.message, status_code=status, error_type=error.error_type, body=error.body, headers=headers)

    def stream_error(self, error: Any, raw: bytes, redactor: Redactor) -> APIStatusError:
        """An in-band error event: the error envelope on a `data:` line after the 200."""
        text = redactor.scrub(raw.decode("utf-8", "replace"))
        if isinstance(error, dict):
            message = redactor.scrub(str(error.get("message", text)))
            code = error.get("code")
        else:
            message, code = redactor.scrub(str(error)), None
        status = code if isinstance(code, int) else None
        cls = self.status_classes.get(status or 0) or error_class_for(status_code=status, error_type=None)
        return cls(message, status_code=status, error_type=None, body=text)


class CompletionStreamAssembler:
    """Reads a `/v1/completions` stream: text deltas, the finish chunk, `[DONE]`.

    These engines hold back stop strings themselves and never send them, so the deltas join to the answer.
    """

    __slots__ = ("_engine", "_ids", "_parts", "_redactor", "_request", "_seen")

    def __init__(self, engine: CompletionsEngine, request: NativeRequest, redactor: Redactor) -> None:
        self._engine = engine
        self._request = request
        self._redactor = redactor
        self._parts: list[str] = []
        self._ids: list[int] = []
        self._seen = 0

    def feed(self, data: bytes) -> StreamChunk:
        if data.strip() == b"[DONE]":
            raise MalformedResponseError(f"the {self._engine.title} stream ended ([DONE]) without a finish reason")
        try:
            event = _StreamEvent.model_validate_json(data)
        except ValidationError as exc:
            raise _malformed(exc, self._engine.title, "stream event") from exc
        if event.error is not None:
            raise self._engine.stream_error(event.error, data, self._redactor)
        if not event.choices:
            raise MalformedResponseError(f"the {self._engine.title} stream event has no choice")
        choice = event.choices[0]
        self._seen += 1
        ids = choice.token_ids or ()
        self._ids.extend(ids)
        self._parts.append(choice.text)
        token = Token(id=ids[-1] if ids else -1, text=choice.text)
        if choice.finish_reason is None:
            return StreamChunk(index=self._seen, text=choice.text, token=token)
        matched = choice.stop_reason if choice.stop_reason is not None else choice.matched_stop
        text = "".join(self._parts)
        result = GenerationResult.model_construct(
            text=text,
            generated_text=text + matched if isinstance(matched, str) and matched != _EOS else text,
            finish_reason=finish_reason_of(choice.finish_reason, matched),
            generated_tokens=len(self._ids) if self._ids else self._seen,
            seed=self._request.params.seed,
            input_length=None,
            tokens=(),
            prefill=(),
            top_tokens=(),
            best_of_sequences=(),
            prompt=self._request.prompt,
        )
        return StreamChunk.model_construct(
            index=self._seen, text=choice.text, token=token, top_tokens=(), result=result
        )

    def feed_all(self, events: Iterable[bytes], out: list[StreamChunk]) -> None:
        """Append the chunk of each event to `out`, stopping after the finish chunk."""
        for data in events:
            chunk = self.feed(data)
            out.append(chunk)
            if chunk.result is not None:
                return

    def end_of_stream(self) -> Exception:
        from .._errors import APIConnectionError

        return APIConnectionError(
            f"the stream ended after {self._seen} event(s) without its finish chunk (connection lost)"
        )
