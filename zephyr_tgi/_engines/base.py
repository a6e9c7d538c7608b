"""What every engine module provides: its routes, request bodies, answer and error parsing, and identification.

An engine is a stateless object. The client's flows ask it how to say a request on the wire and how to read
the answer; the emulator asks it how the engine writes errors; the launcher asks it for container arguments.
Adding an engine is adding a module with one `Engine` subclass.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Generator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from .._errors import APIStatusError, ConfigurationError, Redactor, from_response
from .._types import GenerationResult, ServerInfo, StreamChunk, TokenSpan

if TYPE_CHECKING:
    from .._client.core import NativeRequest
    from .._client.params import Limits, SamplingParams

__all__ = ["ENGINE_NAMES", "ChunkAssembler", "Engine", "EngineName", "EngineSetting", "SpanExchange"]

EngineName = Literal["tgi", "vllm", "sglang"]
EngineSetting = Literal["auto", "tgi", "vllm", "sglang"]
ENGINE_NAMES: tuple[EngineName, ...] = ("tgi", "vllm", "sglang")

SpanExchange = Generator[tuple[str, bytes], bytes, list[TokenSpan]]
"""A sans-I/O conversation that tokenizes a text into spans: it yields (path, body) for each POST it needs,
is sent each answer's body, and returns the spans."""


class ChunkAssembler(Protocol):
    """Turns one stream event's data into a `StreamChunk` (the last one carries the result)."""

    def feed(self, data: bytes) -> StreamChunk: ...

    def feed_all(self, events: Iterable[bytes], out: list[StreamChunk]) -> None:
        """Append the chunk of each event to `out`, stopping after the last one; an event that fails raises,
        with the chunks before it in `out`."""

    def end_of_stream(self) -> Exception: ...


class Engine(ABC):
    """One inference engine's wire knowledge."""

    name: ClassVar[EngineName]
    title: ClassVar[str]  # how users write it: "TGI", "vLLM", "SGLang"
    generate_path: ClassVar[str]
    stream_path: ClassVar[str]
    tokenize_path: ClassVar[str]
    info_path: ClassVar[str]  # where the limits are read
    identify_path: ClassVar[str]  # a route only this engine answers with its own shape
    metrics_prefix: ClassVar[str]
    # MetricsSummary field -> this engine's metric name.
    summary_names: ClassVar[Mapping[str, str]]
    # Whether a generation must name its token budget (the engine's own default would be far too short).
    needs_max_tokens: ClassVar[bool] = False
    # Where prompt logprobs are asked for (perplexity), with the options that ask for them.
    scoring_path: ClassVar[str]
    scoring_overrides: ClassVar[Mapping[str, Any]] = {"max_new_tokens": 1, "decoder_input_details": True}
    # What to do when a server answers a scoring request without prompt logprobs.
    prefill_hint: ClassVar[str]

    def __repr__(self) -> str:
        return f"<engine {self.name}>"

    def refuse(self, field: str, why: str) -> ConfigurationError:
        """The error for an option this engine lacks or would silently ignore."""
        return ConfigurationError(f"{field} is not supported on {self.title}: {why} (nothing was sent)")

    def check_params(self, params: SamplingParams) -> None:
        """Raise `ConfigurationError` for any option this engine cannot honour."""
        self.generation_fields(params, stream=False)

    @abstractmethod
    def generation_fields(self, params: SamplingParams, *, stream: bool) -> dict[str, Any]:
        """The request fields for these options (raises `ConfigurationError` for what the engine cannot do)."""

    @abstractmethod
    def generate_body(self, request: NativeRequest, *, stream: bool) -> bytes:
        """The body of a raw-prompt generation."""

    @abstractmethod
    def parse_generation(self, body: bytes, request: NativeRequest) -> GenerationResult:
        """A generation answer as a result (raises `MalformedResponseError`)."""

    @abstractmethod
    def stream_assembler(self, request: NativeRequest, redactor: Redactor) -> ChunkAssembler:
        """What reads this engine's generation stream."""

    @abstractmethod
    def tokenize_body(self, text: str, *, add_special_tokens: bool = True) -> bytes:
        """The body that tokenizes `text` (BOS included unless `add_special_tokens` is False)."""

    @abstractmethod
    def span_exchange(self, text: str) -> SpanExchange:
        """Tokenize `text` into TGI's spans (BOS first, byte offsets), in as many requests as the engine needs."""

    def scoring_body(self, request: NativeRequest) -> bytes:
        """The body that asks for the logprob of every prompt token (`request` has `scoring_overrides`)."""
        return self.generate_body(request, stream=False)

    @abstractmethod
    def parse_prompt_logprobs(self, body: bytes, request: NativeRequest) -> list[float | None]:
        """One logprob per prompt token, BOS first (None), from a scoring answer; [] when it carries none."""

    @abstractmethod
    def parse_count(self, body: bytes) -> int:
        """The token count of a tokenize answer."""

    @abstractmethod
    def parse_ids(self, body: bytes) -> list[int]:
        """The token ids of a tokenize answer."""

    @abstractmethod
    def parse_info(self, body: bytes) -> ServerInfo:
        """The common typed view of what `info_path` answers."""

    def limits_of(self, info: ServerInfo) -> Limits:
        """The limits the client checks requests against: those of the common view, on every engine."""
        from .._client.params import Limits

        return Limits(
            max_input_tokens=info.max_input_tokens,
            max_total_tokens=info.max_total_tokens,
            max_stop_sequences=info.max_stop_sequences,
            max_best_of=info.max_best_of,
            max_top_n_tokens=info.max_top_n_tokens,
            max_concurrent_requests=info.max_concurrent_requests,
        )

    def identifies(self, status: int, body: bytes) -> bool:
        """Whether an answer of `identify_path` says the server is this engine: a JSON object it recognises."""
        if status != 200:
            return False
        try:
            answer = json.loads(body)
        except ValueError:
            return False
        return isinstance(answer, dict) and self.recognises(answer)

    @abstractmethod
    def recognises(self, answer: dict[str, Any]) -> bool:
        """Whether the JSON object `identify_path` answered is this engine's own."""

    def chat_body(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """A `/v1/chat/completions` body adapted to this engine (the served model's name, ...)."""
        return dict(payload)

    def error_for(self, status: int, body: bytes, headers: Mapping[str, str], redactor: Redactor) -> APIStatusError:
        """The exception for an error answer."""
        return from_response(status, body, headers, redactor=redactor)

    @abstractmethod
    def error_body(self, status: int, message: str, error_type: str) -> bytes:
        """How this engine writes an error answer (the emulator speaks it)."""
