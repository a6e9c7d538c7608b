"""What every route family of the emulated router shares: permits, validation, generation and streaming."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ._faults import FaultState, error_for_type
from ._generation import Generation, GenToken, generate
from ._http import HTTPConnection, HTTPRequest
from ._performance import BatchScheduler, PerformanceModel
from ._requests import GenerateRequest, read_json_body
from ._sse import KEEP_ALIVE, dumps, native_error
from ._stats import Recorder
from ._tokenizer import EmulatorTokenizer
from ._tools import ToolCallTokenizer
from ._validation import Limits, ValidationError, ValidRequest, validate, validate_best_of

__all__ = [
    "JSON",
    "TEXT",
    "TGI_DOCKER_LABEL",
    "TGI_SHA",
    "TGI_VERSION",
    "VALIDATION_PREFIX",
    "AppConfig",
    "EncodeError",
    "EncodeToken",
    "Handler",
    "Outcome",
    "Plan",
    "RouteError",
    "RouterCore",
]

# What an official 3.3.7 image reports: the tag's commit, and a version string that was never bumped (TGI.md §0).
TGI_VERSION = "3.3.6-dev0"
TGI_SHA = "dfb3fbe78e0d1d69251bd33065591c61bafdfaa8"
# Official images are built with DOCKER_LABEL=sha-<7 hex> (TGI.md §9).
TGI_DOCKER_LABEL = f"sha-{TGI_SHA[:7]}"
JSON = ("content-type", "application/json")
TEXT = ("content-type", "text/plain; charset=utf-8")
VALIDATION_PREFIX = "Input validation error: "
_KEEP_ALIVE_EVERY = 15.0
_YIELD_EVERY = 8

Handler = Callable[[HTTPConnection, HTTPRequest], Awaitable[None]]
EncodeToken = Callable[[int, GenToken, "list[GenToken] | None", bool], bytes]
EncodeError = Callable[[str, str], bytes]
# "replaced": the encoder declined the plan (a tool stream whose model chose `no_tool`).
Outcome = Literal["complete", "failed", "dropped", "replaced"]


@dataclass(frozen=True, slots=True)
class AppConfig:
    """Everything the router needs that does not change while it runs."""

    model_id: str
    revision: str
    api_key: str | None
    limits: Limits
    replies: Mapping[str, str] | None
    token_latency: float
    enable_prefill_logprobs: bool
    chat_template: bool
    grammar_support: bool
    seed_salt: int | None = None
    payload_limit: int = 2_000_000
    # The launcher sets COMPUTE_TYPE from nvidia-smi as `<gpu count>-<gpu name>` (TGI.md §9).
    compute_type: str = "1-nvidia-a10g"
    performance: PerformanceModel | None = None
    # Which engine's API the emulator speaks: "tgi", "vllm" or "sglang".
    engine: str = "tgi"

    @property
    def fingerprint(self) -> str:
        """`system_fingerprint`: `<version>-<docker_label>`."""
        return f"{TGI_VERSION}-{TGI_DOCKER_LABEL}"


class RouteError(Exception):
    """A JSON error answer decided before any byte of the response was sent."""

    def __init__(self, status: int, message: str, error_type: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type


@dataclass(slots=True)
class Plan:
    """A validated request with its generated sequences."""

    valid: ValidRequest
    generations: list[Generation]
    queued: float


class RouterCore:
    """The machinery behind TGI's generate_internal / generate_stream_internal, used by every route family."""

    def __init__(self, config: AppConfig, tokenizer: EmulatorTokenizer, faults: FaultState, recorder: Recorder) -> None:
        # With a performance model, every generation goes through one emulated GPU batch (see _performance).
        self._scheduler = BatchScheduler(config.performance) if config.performance is not None else None
        self.config = config
        self.tokenizer = tokenizer
        self.faults = faults
        self.recorder = recorder

    @property
    def queued(self) -> int:
        """Requests waiting for a batch slot of the performance model now (0 without one: nothing queues)."""
        return self._scheduler.queued if self._scheduler is not None else 0

    # --- responses ----------------------------------------------------------------------------------

    async def json(self, conn: HTTPConnection, status: int, obj: Any, headers: list[tuple[str, str]]) -> None:
        """A compact JSON answer."""
        await conn.respond(status, dumps(obj), [JSON, *headers])

    async def error(self, conn: HTTPConnection, status: int, message: str, error_type: str) -> None:
        """TGI's `ErrorResponse`, with the Retry-After fault on 429."""
        headers: list[tuple[str, str]] = []
        retry_after = self.faults.faults.retry_after
        if retry_after is not None and status == 429:
            headers.append(("retry-after", retry_after))
        await self.json(conn, status, native_error(message, error_type), headers)

    @staticmethod
    def status_error(error_type: str) -> tuple[int, str, str]:
        """(status, message, error_type) as TGI's InferError renders `error_type`."""
        status, message = error_for_type(error_type)
        return status, message, error_type

    @staticmethod
    def body(request: HTTPRequest) -> tuple[Any, str]:
        """The parsed JSON body and its text (for serde-style error positions)."""
        raw = read_json_body(request.headers, request.body)
        return raw, request.body.decode("utf-8", "replace")

    def timing_headers(
        self, started: float, queued: float, inputs: str, input_length: int, generated: int
    ) -> list[tuple[str, str]]:
        """The x-* headers of a non-streaming generation."""
        now = time.monotonic()
        total = now - started
        inference = now - queued
        return [
            ("x-compute-type", self.config.compute_type),
            ("x-compute-time", repr(total)),
            ("x-compute-characters", str(len(inputs))),
            ("x-total-time", str(int(total * 1000))),
            ("x-validation-time", str(int((queued - started) * 1000))),
            ("x-queue-time", "0"),
            ("x-inference-time", str(int(inference * 1000))),
            ("x-time-per-token", str(int(inference * 1000 / max(generated, 1)))),
            ("x-prompt-tokens", str(input_length)),
            ("x-generated-tokens", str(generated)),
        ]

    def stream_headers(self, characters: int) -> list[tuple[str, str]]:
        """The head of an SSE answer."""
        return [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
            ("x-compute-type", self.config.compute_type),
            ("x-compute-characters", str(characters)),
            ("x-accel-buffering", "no"),
        ]

    # --- permits, validation, generation ------------------------------------------------------------

    def latencies(self) -> tuple[float, float]:
        """(per-token, first-token) latency in seconds."""
        faults = self.faults.faults
        token = faults.token_latency if faults.token_latency > 0 else self.config.token_latency
        return token, faults.first_token_latency

    def acquire(self) -> bool:
        """The permit check TGI does before validation; False means "overloaded"."""
        if self.faults.take("overload_next") or not self.recorder.try_acquire():
            self.recorder.overloaded()
            return False
        return True

    def plan(self, request: GenerateRequest) -> Plan:
        """Validate and generate every sequence (raises ValidationError)."""
        config = self.config
        valid = validate(request, config.limits, self.tokenizer, grammar_support=config.grammar_support)
        queued = time.monotonic()
        # Tool calls are written with the token boundaries zephyr's vocabulary has (see ToolCallTokenizer).
        reply_tokenizer = self.tokenizer if request.reply is None else ToolCallTokenizer(self.tokenizer)
        generations = [
            generate(
                valid,
                reply_tokenizer,
                replies=config.replies,
                sequence=sequence,
                seed_salt=config.seed_salt,
                prefill_logprobs=config.enable_prefill_logprobs,
            )
            for sequence in range(valid.best_of)
        ]
        return Plan(valid, generations, queued)

    def injected_failure(self, *, stream: bool) -> tuple[str, str] | None:
        """A consumed stream_error fault as (message, error_type); streams-only faults pass other requests by."""
        if not stream and self.faults.faults.stream_error_streams_only:
            return None
        if not self.faults.take("stream_error_next"):
            return None
        error_type = self.faults.faults.stream_error_type
        return error_for_type(error_type)[1], error_type

    async def aclose(self) -> None:
        """Stop background work (the performance model's engine task)."""
        if self._scheduler is not None:
            await self._scheduler.aclose()

    async def _sleep_for_tokens(self, n_tokens: int, valid: ValidRequest | None = None) -> None:
        """Non-streaming latency: the first-token delay plus one token delay per token (or the performance
        model's batch, when there is one)."""
        token_latency, first = self.latencies()
        if self._scheduler is not None and valid is not None and n_tokens:
            if first > 0:
                await asyncio.sleep(first)
            async with self._scheduler.sequence(valid.input_length, n_tokens, valid.max_new_tokens) as ticket:
                for _ in range(n_tokens):
                    await ticket.next_token()
            return
        delay = first + (token_latency * n_tokens if token_latency > 0 else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)

    async def run_once(self, request: GenerateRequest) -> Plan:
        """Permit, validation and generation for a non-streaming request (raises RouteError)."""
        best_of = request.parameters.best_of
        try:
            if best_of is not None and best_of > 1:
                validate_best_of(best_of, self.config.limits)
        except ValidationError as exc:
            self.recorder.tgi_failure("validation")
            raise RouteError(422, VALIDATION_PREFIX + str(exc), "validation") from None
        if not self.acquire():
            raise RouteError(*self.status_error("overloaded"))
        try:
            try:
                plan = self.plan(request)
            except ValidationError as exc:
                self.recorder.tgi_failure("validation")
                raise RouteError(422, VALIDATION_PREFIX + str(exc), "validation") from None
            failure = self.injected_failure(stream=False)
            if failure is not None:
                await self._sleep_for_tokens(0)
                self.recorder.tgi_failure(failure[1])
                raise RouteError(error_for_type(failure[1])[0], *failure)
            await self._sleep_for_tokens(len(plan.generations[0].tokens), plan.valid)
            return plan
        finally:
            self.recorder.release()

    # --- streams ------------------------------------------------------------------------------------

    async def stream(
        self,
        conn: HTTPConnection,
        request: GenerateRequest,
        started: float,
        encode_token_for: Callable[[Plan], EncodeToken | None],
        encode_error: EncodeError,
    ) -> Outcome:
        """Events of one generation on a stream whose head is already sent: every error is in-band."""
        params = request.parameters
        if (1 if params.best_of is None else params.best_of) != 1:
            message = "`best_of` != 1 is not supported when streaming tokens"
        elif params.decoder_input_details:
            message = "`decoder_input_details` == true is not supported when streaming tokens"
        else:
            message = ""
        if message:
            self.recorder.tgi_failure("validation")
            await conn.send_chunk(encode_error(VALIDATION_PREFIX + message, "validation"))
            return "failed"
        if not self.acquire():
            await conn.send_chunk(encode_error(error_for_type("overloaded")[1], "overloaded"))
            return "failed"
        try:
            try:
                plan = self.plan(request)
            except ValidationError as exc:
                self.recorder.tgi_failure("validation")
                await conn.send_chunk(encode_error(VALIDATION_PREFIX + str(exc), "validation"))
                return "failed"
            generation = plan.generations[0]
            encode_token = encode_token_for(plan)
            if encode_token is None:
                return "replaced"
            tokens, tops = generation.tokens, generation.top_tokens
            last = len(tokens) - 1

            def encode(index: int) -> bytes:
                return encode_token(index, tokens[index], tops[index] if tops else None, index == last)

            outcome = await self.emit(conn, len(tokens), encode, encode_error, plan.valid)
            if outcome == "complete":
                self.recorder.tgi_success(plan.valid.input_length, len(tokens), time.monotonic() - started)
            return outcome
        finally:
            self.recorder.release()

    async def _stream_sleep(self, conn: HTTPConnection, seconds: float) -> None:
        # Long silences carry axum's keep-alive comment, which SSE parsers must skip.
        while seconds > _KEEP_ALIVE_EVERY:
            await asyncio.sleep(_KEEP_ALIVE_EVERY)
            seconds -= _KEEP_ALIVE_EVERY
            await conn.send_chunk(KEEP_ALIVE)
        await asyncio.sleep(seconds)

    async def emit(
        self,
        conn: HTTPConnection,
        count: int,
        encode: Callable[[int], bytes],
        encode_error: EncodeError,
        valid: ValidRequest | None = None,
    ) -> Outcome:
        """Send `count` token events with latency and stream faults: the one place generated tokens leave."""
        if count == 0:
            return "complete"
        if self._scheduler is not None and valid is not None:
            async with self._scheduler.sequence(valid.input_length, count, valid.max_new_tokens) as ticket:
                return await self._emit_events(conn, count, encode, encode_error, ticket.next_token)
        return await self._emit_events(conn, count, encode, encode_error, None)

    async def _emit_events(
        self,
        conn: HTTPConnection,
        count: int,
        encode: Callable[[int], bytes],
        encode_error: EncodeError,
        next_token: Callable[[], Awaitable[None]] | None,
    ) -> Outcome:
        """The event loop of `emit`: `next_token` (the performance model) replaces `token_latency`."""
        drop_at = error_at = None
        failure: tuple[str, str] | None = None
        if self.faults.take("drop_mid_stream_next"):
            drop_at = min(self.faults.faults.drop_after_tokens, count - 1)
        else:
            failure = self.injected_failure(stream=True)
            if failure is not None:
                error_at = min(self.faults.faults.stream_error_after_tokens, count - 1)
        token_latency, first_latency = self.latencies()
        for index in range(count):
            if drop_at is not None and index >= drop_at:
                await conn.flush()
                conn.abort()
                return "dropped"
            if failure is not None and error_at is not None and index >= error_at:
                self.recorder.tgi_failure(failure[1])
                await conn.send_chunk(encode_error(*failure))
                return "failed"
            delay = (0.0 if next_token is not None else token_latency) + (first_latency if index == 0 else 0.0)
            if next_token is not None:
                if delay > 0:
                    await self._stream_sleep(conn, delay)
                await next_token()
            elif delay > 0:
                await self._stream_sleep(conn, delay)
            elif index % _YIELD_EVERY == 0:
                # Let other streams progress now and then even without latency.
                await asyncio.sleep(0)
            if conn.client_gone:
                return "dropped"
            event = encode(index)
            if event:
                await conn.send_chunk(event)
        return "complete"
