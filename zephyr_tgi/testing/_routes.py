"""The emulated TGI router: routing, auth, faults and every route's handler."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ._faults import FaultState, error_for_type, faults_changes_from_json
from ._generation import Generation, GenToken, generate
from ._http import HTTPConnection, HTTPRequest
from ._performance import BatchScheduler, PerformanceModel
from ._replies import render_zephyr_prompt
from ._requests import (
    BodyError,
    ChatRequest,
    CompletionRequest,
    GenerateParameters,
    GenerateRequest,
    parse_chat_request,
    parse_completion_request,
    parse_generate_request,
    read_json_body,
)
from ._sse import (
    DONE,
    KEEP_ALIVE,
    chat_chunk,
    completion_chunk,
    dumps,
    native_error,
    openai_stream_error,
    sse,
    stream_event,
    token_sse,
)
from ._stats import RecordedRequest, Recorder
from ._tokenizer import BOS_ID, EmulatorTokenizer, TokenSpan
from ._validation import Limits, ValidationError, ValidRequest, validate, validate_best_of

__all__ = ["TGI_SHA", "TGI_VERSION", "AppConfig", "EmulatorApp"]

TGI_VERSION = "3.3.6-dev0"
TGI_SHA = "db931fcf42da018a3657580c64bf2720f167f9ab"
_FINGERPRINT = f"{TGI_VERSION}-native"
_JSON = ("content-type", "application/json")
_TEXT = ("content-type", "text/plain; charset=utf-8")
_GENERATION_ROUTES = frozenset({"/", "/generate", "/generate_stream", "/v1/chat/completions", "/v1/completions"})
# Routes behind --api-key: TGI's `base_routes` (POST / but not GET /; /chat_tokenize is an info route).
_PROTECTED_ROUTES = _GENERATION_ROUTES | {"/tokenize"}
_OPENAI_FINISH = {"eos_token": "stop", "length": "length", "stop_sequence": "stop_sequence"}
_KEEP_ALIVE_EVERY = 15.0
_VALIDATION_PREFIX = "Input validation error: "
_YIELD_EVERY = 8

Handler = Callable[[HTTPConnection, HTTPRequest], Awaitable[None]]
EncodeToken = Callable[[int, GenToken, "list[GenToken] | None", bool], bytes]
EncodeError = Callable[[str, str], bytes]
_Outcome = Literal["complete", "failed", "dropped"]


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
    compute_type: str = "gpu+optimized"
    performance: PerformanceModel | None = None


class _HTTPError(Exception):
    """A JSON error answer decided before any byte of the response was sent."""

    def __init__(self, status: int, message: str, error_type: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type


@dataclass(slots=True)
class _Plan:
    """A validated request with its generated sequences."""

    valid: ValidRequest
    generations: list[Generation]
    queued: float


class EmulatorApp:
    """Routes requests to handlers; owns no sockets."""

    def __init__(
        self,
        config: AppConfig,
        tokenizer: EmulatorTokenizer,
        faults: FaultState,
        recorder: Recorder,
        on_reset: Callable[[], None],
    ) -> None:
        self._config = config
        self._tokenizer = tokenizer
        self._faults = faults
        self._recorder = recorder
        self._on_reset = on_reset
        # With a performance model, every generation goes through one emulated GPU batch (see _performance).
        self._scheduler = BatchScheduler(config.performance) if config.performance is not None else None
        self._model_sha = hashlib.sha1(f"{config.model_id}@{config.revision}".encode()).hexdigest()
        self._routes: dict[str, dict[str, Handler]] = {
            "/": {"GET": self._health, "POST": self._compat_generate},
            "/health": {"GET": self._health},
            "/ping": {"GET": self._health},
            "/info": {"GET": self._info},
            "/metrics": {"GET": self._metrics},
            "/v1/models": {"GET": self._models},
            "/generate": {"POST": self._generate},
            "/generate_stream": {"POST": self._generate_stream},
            "/v1/chat/completions": {"POST": self._chat_completions},
            "/v1/completions": {"POST": self._completions},
            "/tokenize": {"POST": self._tokenize},
            "/chat_tokenize": {"POST": self._chat_tokenize},
        }
        self._admin_routes: dict[str, dict[str, Handler]] = {
            "/__emulator__/stats": {"GET": self._admin_stats},
            "/__emulator__/faults": {"GET": self._admin_get_faults, "POST": self._admin_set_faults},
            "/__emulator__/reset": {"POST": self._admin_reset},
        }

    # --- dispatch -----------------------------------------------------------------------------------

    async def handle(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        """Answer one request (or deliberately not, for connection faults)."""
        admin = self._admin_routes.get(request.path)
        routes = admin if admin is not None else self._routes.get(request.path)
        if admin is None:
            recorded = RecordedRequest(request.method, request.path, dict(request.headers), request.json_or_none())
            self._recorder.record(recorded, request.path if routes is not None else "*")
        if routes is None:
            await conn.respond(404, b"", [])
            return
        handler = routes.get(request.method)
        if handler is None:
            await conn.respond(405, b"", [("allow", ",".join(routes))])
            return
        if self._config.api_key is not None and request.path in _PROTECTED_ROUTES and request.method == "POST":
            expected = f"Bearer {self._config.api_key}".lower()
            if request.headers.get("authorization", "").lower() != expected:
                await conn.respond(401, b"", [])
                return
        if request.method == "POST" and request.path in _GENERATION_ROUTES:
            if self._faults.unavailable():
                await self._error(conn, *self._status_error("unavailable"))
                return
            if self._faults.take("drop_before_first_byte_next"):
                conn.abort()
                return
            scripted = self._faults.pop_scripted()
            if scripted is not None:
                body = scripted.body.encode("utf-8") if isinstance(scripted.body, str) else scripted.body
                headers = list(scripted.headers.items())
                if scripted.content_type is not None:
                    headers.append(("content-type", scripted.content_type))
                await conn.respond(scripted.status, body, headers)
                return
        try:
            await handler(conn, request)
        except BodyError as exc:
            await conn.respond(exc.status, exc.text.encode("utf-8"), [_TEXT])
        except _HTTPError as exc:
            await self._error(conn, exc.status, exc.message, exc.error_type)

    # --- helpers ------------------------------------------------------------------------------------

    async def _json(self, conn: HTTPConnection, status: int, obj: Any, headers: list[tuple[str, str]]) -> None:
        await conn.respond(status, dumps(obj), [_JSON, *headers])

    async def _error(self, conn: HTTPConnection, status: int, message: str, error_type: str) -> None:
        headers: list[tuple[str, str]] = []
        retry_after = self._faults.faults.retry_after
        if retry_after is not None and status in (429, 503):
            headers.append(("retry-after", retry_after))
        await self._json(conn, status, native_error(message, error_type), headers)

    @staticmethod
    def _status_error(error_type: str) -> tuple[int, str, str]:
        status, message = error_for_type(error_type)
        return status, message, error_type

    def _latencies(self) -> tuple[float, float]:
        faults = self._faults.faults
        token = faults.token_latency if faults.token_latency > 0 else self._config.token_latency
        return token, faults.first_token_latency

    def _acquire(self) -> bool:
        """The permit check TGI does before validation; False means "overloaded"."""
        if self._faults.take("overload_next") or not self._recorder.try_acquire():
            self._recorder.overloaded()
            return False
        return True

    def _body(self, request: HTTPRequest) -> tuple[Any, str]:
        raw = read_json_body(request.headers, request.body)
        return raw, request.body.decode("utf-8", "replace")

    def _validate(self, request: GenerateRequest) -> ValidRequest:
        return validate(request, self._config.limits, self._tokenizer, grammar_support=self._config.grammar_support)

    def _plan(self, request: GenerateRequest) -> _Plan:
        """Validate and generate every sequence (raises ValidationError)."""
        valid = self._validate(request)
        queued = time.monotonic()
        generations = [
            generate(
                valid,
                self._tokenizer,
                replies=self._config.replies,
                sequence=sequence,
                seed_salt=self._config.seed_salt,
                prefill_logprobs=self._config.enable_prefill_logprobs,
            )
            for sequence in range(valid.best_of)
        ]
        return _Plan(valid, generations, queued)

    def _injected_failure(self, *, stream: bool) -> tuple[str, str] | None:
        """A consumed stream_error fault as (message, error_type); streams-only faults pass other requests by."""
        if not stream and self._faults.faults.stream_error_streams_only:
            return None
        if not self._faults.take("stream_error_next"):
            return None
        error_type = self._faults.faults.stream_error_type
        return error_for_type(error_type)[1], error_type

    async def aclose(self) -> None:
        """Stop background work (the performance model's engine task)."""
        if self._scheduler is not None:
            await self._scheduler.aclose()

    async def _sleep_for_tokens(self, n_tokens: int, valid: ValidRequest | None = None) -> None:
        """Non-streaming latency: the first-token delay plus one token delay per token."""
        token_latency, first = self._latencies()
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

    async def _stream_sleep(self, conn: HTTPConnection, seconds: float) -> None:
        # Long silences carry axum's keep-alive comment, which SSE parsers must skip.
        while seconds > _KEEP_ALIVE_EVERY:
            await asyncio.sleep(_KEEP_ALIVE_EVERY)
            seconds -= _KEEP_ALIVE_EVERY
            await conn.send_chunk(KEEP_ALIVE)
        await asyncio.sleep(seconds)

    def _timing_headers(
        self, started: float, queued: float, inputs: str, input_length: int, generated: int
    ) -> list[tuple[str, str]]:
        now = time.monotonic()
        total = now - started
        inference = now - queued
        return [
            ("x-compute-type", self._config.compute_type),
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

    def _stream_headers(self, characters: int) -> list[tuple[str, str]]:
        return [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
            ("x-compute-type", self._config.compute_type),
            ("x-compute-characters", str(characters)),
            ("x-accel-buffering", "no"),
        ]

    @staticmethod
    def _details(generation: Generation) -> dict[str, Any]:
        details: dict[str, Any] = {
            "finish_reason": generation.finish_reason,
            "generated_tokens": len(generation.tokens),
            "seed": generation.seed,
            "prefill": generation.prefill,
            "tokens": [token.to_json() for token in generation.tokens],
        }
        if generation.top_tokens:
            details["top_tokens"] = [[t.to_json() for t in step] for step in generation.top_tokens]
        return details

    # --- native generation --------------------------------------------------------------------------

    async def _compat_generate(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        raw, text = self._body(request)
        parsed = parse_generate_request(raw, compat=True, text=text)
        if parsed.parameters.return_full_text is None:
            # The model's pipeline tag is text-generation, for which TGI's compat route echoes the prompt.
            parsed.parameters.return_full_text = True
        if parsed.stream:
            await self._native_stream(conn, parsed)
        else:
            await self._native_once(conn, parsed, compat=True)

    async def _generate(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        raw, text = self._body(request)
        await self._native_once(conn, parse_generate_request(raw, text=text), compat=False)

    async def _generate_stream(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        raw, text = self._body(request)
        await self._native_stream(conn, parse_generate_request(raw, text=text))

    async def _run_once(self, request: GenerateRequest) -> _Plan:
        """Permit, validation and generation for a non-streaming request (raises _HTTPError)."""
        best_of = request.parameters.best_of
        try:
            if best_of is not None and best_of > 1:
                validate_best_of(best_of, self._config.limits)
        except ValidationError as exc:
            self._recorder.tgi_failure("validation")
            raise _HTTPError(422, _VALIDATION_PREFIX + str(exc), "validation") from None
        if not self._acquire():
            raise _HTTPError(*self._status_error("overloaded"))
        try:
            try:
                plan = self._plan(request)
            except ValidationError as exc:
                self._recorder.tgi_failure("validation")
                raise _HTTPError(422, _VALIDATION_PREFIX + str(exc), "validation") from None
            failure = self._injected_failure(stream=False)
            if failure is not None:
                await self._sleep_for_tokens(0)
                self._recorder.tgi_failure(failure[1])
                raise _HTTPError(error_for_type(failure[1])[0], *failure)
            await self._sleep_for_tokens(len(plan.generations[0].tokens), plan.valid)
            return plan
        finally:
            self._recorder.release()

    async def _native_once(self, conn: HTTPConnection, request: GenerateRequest, *, compat: bool) -> None:
        started = time.monotonic()
        self._recorder.tgi_request()
        plan = await self._run_once(request)
        valid = plan.valid
        prefix = request.inputs if valid.return_full_text else ""
        main = plan.generations[0]
        body: dict[str, Any] = {"generated_text": prefix + main.text}
        if valid.details or valid.decoder_input_details:
            details = self._details(main)
            if len(plan.generations) > 1:
                sequences = []
                for other in plan.generations[1:]:
                    sequence = {"generated_text": prefix + other.text, **self._details(other)}
                    sequences.append(sequence)
                top = details.pop("top_tokens", None)
                details["best_of_sequences"] = sequences
                if top is not None:
                    details["top_tokens"] = top
            body["details"] = details
        headers = self._timing_headers(started, plan.queued, request.inputs, valid.input_length, len(main.tokens))
        self._recorder.tgi_success(valid.input_length, len(main.tokens), time.monotonic() - started)
        await self._json(conn, 200, [body] if compat else body, headers)

    async def _native_stream(self, conn: HTTPConnection, request: GenerateRequest) -> None:
        started = time.monotonic()
        self._recorder.tgi_request()
        await conn.start_stream(200, self._stream_headers(len(request.inputs)))
        prefix = request.inputs if request.parameters.return_full_text else ""
        want_details = request.parameters.details

        def encode_error(message: str, error_type: str) -> bytes:
            return sse(native_error(message, error_type))

        def encode_token_for(plan: _Plan) -> EncodeToken:
            generation = plan.generations[0]

            def encode(index: int, token: GenToken, top: list[GenToken] | None, last: bool) -> bytes:
                if not last:
                    return token_sse(index + 1, token) if top is None else sse(stream_event(index + 1, token, top))
                details = None
                if want_details:
                    details = {
                        "finish_reason": generation.finish_reason,
                        "generated_tokens": len(generation.tokens),
                        "seed": generation.seed,
                        "input_length": plan.valid.input_length,
                    }
                return sse(stream_event(index + 1, token, top, prefix + generation.text, details))

            return encode

        await self._stream(conn, request, started, encode_token_for, encode_error, trailer=None)

    async def _stream(
        self,
        conn: HTTPConnection,
        request: GenerateRequest,
        started: float,
        encode_token_for: Callable[[_Plan], EncodeToken],
        encode_error: EncodeError,
        *,
        trailer: bytes | None,
    ) -> None:
        """The body of a streaming response whose head is already sent: errors are in-band."""
        params = request.parameters
        if (1 if params.best_of is None else params.best_of) != 1:
            message = "`best_of` != 1 is not supported when streaming tokens"
        elif params.decoder_input_details:
            message = "`decoder_input_details` == true is not supported when streaming tokens"
        else:
            message = ""
        if message:
            self._recorder.tgi_failure("validation")
            await conn.send_chunk(encode_error(_VALIDATION_PREFIX + message, "validation"))
        elif not self._acquire():
            await conn.send_chunk(encode_error(error_for_type("overloaded")[1], "overloaded"))
        else:
            try:
                try:
                    plan = self._plan(request)
                except ValidationError as exc:
                    self._recorder.tgi_failure("validation")
                    await conn.send_chunk(encode_error(_VALIDATION_PREFIX + str(exc), "validation"))
                else:
                    generation = plan.generations[0]
                    tokens, tops, encode_token = generation.tokens, generation.top_tokens, encode_token_for(plan)
                    last = len(tokens) - 1

                    def encode(index: int) -> bytes:
                        return encode_token(index, tokens[index], tops[index] if tops else None, index == last)

                    outcome = await self._emit(conn, len(tokens), encode, encode_error, plan.valid)
                    if outcome == "dropped":
                        return
                    if outcome == "complete":
                        duration = time.monotonic() - started
                        self._recorder.tgi_success(plan.valid.input_length, len(tokens), duration)
            finally:
                self._recorder.release()
        if trailer is not None:
            await conn.send_chunk(trailer)
        await conn.end_stream()

    async def _emit(
        self,
        conn: HTTPConnection,
        count: int,
        encode: Callable[[int], bytes],
        encode_error: EncodeError,
        valid: ValidRequest | None = None,
    ) -> _Outcome:
        """Send `count` events with latency and stream faults."""
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
    ) -> _Outcome:
        """The event loop of `_emit`: `next_token` (the performance model) replaces `token_latency`."""
        drop_at = error_at = None
        failure: tuple[str, str] | None = None
        if self._faults.take("drop_mid_stream_next"):
            drop_at = min(self._faults.faults.drop_after_tokens, count - 1)
        else:
            failure = self._injected_failure(stream=True)
            if failure is not None:
                error_at = min(self._faults.faults.stream_error_after_tokens, count - 1)
        token_latency, first_latency = self._latencies()
        for index in range(count):
            if drop_at is not None and index >= drop_at:
                await conn.flush()
                conn.abort()
                return "dropped"
            if failure is not None and error_at is not None and index >= error_at:
                self._recorder.tgi_failure(failure[1])
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
            await conn.send_chunk(encode(index))
        return "complete"

    # --- OpenAI-compatible routes -------------------------------------------------------------------

    def _chat_prompt(self, chat: ChatRequest) -> str:
        """Template errors come before permits and validation, as in TGI's try_into_generate."""
        if chat.response_format is not None and chat.tools is not None:
            raise _HTTPError(422, "Tool error: Grammar and tools are mutually exclusive", "tool_error")
        if not self._config.chat_template:
            raise _HTTPError(*self._status_error("template_error"))
        return render_zephyr_prompt(chat.messages)

    @staticmethod
    def _sampling(temperature: float | None) -> tuple[bool, float | None]:
        """Chat and completions turn temperature 0 into greedy decoding and otherwise sample."""
        if temperature == 0.0:
            return False, None
        return True, temperature

    def _openai_model(self, requested: str | None) -> str:
        return requested if requested not in (None, "tgi") else self._config.model_id

    async def _chat_completions(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        started = time.monotonic()
        raw, text = self._body(request)
        chat = parse_chat_request(raw, text=text)
        self._recorder.tgi_request()
        prompt = self._chat_prompt(chat)
        do_sample, temperature = self._sampling(chat.temperature)
        generate_request = GenerateRequest(
            inputs=prompt,
            parameters=GenerateParameters(
                temperature=temperature,
                repetition_penalty=None if chat.presence_penalty is None else chat.presence_penalty + 2.0,
                frequency_penalty=chat.frequency_penalty,
                top_p=chat.top_p,
                do_sample=do_sample,
                max_new_tokens=chat.max_tokens,
                stop=list(chat.stop or []),
                details=True,
                seed=chat.seed,
                top_n_tokens=chat.top_logprobs,
                grammar=chat.response_format,
                adapter_id=self._openai_model(chat.model),
            ),
            add_special_tokens=False,
        )
        model = self._openai_model(chat.model)
        created = int(time.time())
        if chat.stream:
            await self._chat_stream(conn, chat, generate_request, model, created, started)
            return
        plan = await self._run_once(generate_request)
        generation = plan.generations[0]
        logprobs = None
        if chat.logprobs:
            logprobs = {
                "content": [
                    _chat_logprob(token, generation.top_tokens[i] if generation.top_tokens else None)
                    for i, token in enumerate(generation.tokens)
                ]
            }
        usage = _usage(plan.valid.input_length, len(generation.tokens))
        body = {
            "object": "chat.completion",
            "id": "",
            "created": created,
            "model": model,
            "system_fingerprint": _FINGERPRINT,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": generation.text},
                    "logprobs": logprobs,
                    "finish_reason": _OPENAI_FINISH[generation.finish_reason],
                }
            ],
            "usage": usage,
        }
        headers = self._timing_headers(started, plan.queued, prompt, plan.valid.input_length, len(generation.tokens))
        self._recorder.tgi_success(plan.valid.input_length, len(generation.tokens), time.monotonic() - started)
        await self._json(conn, 200, body, headers)

    async def _chat_stream(
        self,
        conn: HTTPConnection,
        chat: ChatRequest,
        request: GenerateRequest,
        model: str,
        created: int,
        started: float,
    ) -> None:
        await conn.start_stream(200, self._stream_headers(len(request.inputs)))

        def encode_token_for(plan: _Plan) -> EncodeToken:
            generation = plan.generations[0]

            def encode(index: int, token: GenToken, top: list[GenToken] | None, last: bool) -> bytes:
                out = sse(
                    chat_chunk(
                        model=model,
                        fingerprint=_FINGERPRINT,
                        created=created,
                        content="" if token.special else token.text,
                        finish_reason=_OPENAI_FINISH[generation.finish_reason] if last else None,
                        logprobs={"content": [_chat_logprob(token, top)]} if chat.logprobs else None,
                    )
                )
                if last and chat.include_usage:
                    usage = _usage(plan.valid.input_length, len(generation.tokens))
                    out += sse(
                        chat_chunk(model=model, fingerprint=_FINGERPRINT, created=created, content=None, usage=usage)
                    )
                return out

            return encode

        await self._stream(conn, request, started, encode_token_for, _openai_error_event, trailer=DONE)

    def _completion_requests(self, completion: CompletionRequest) -> list[GenerateRequest]:
        do_sample, temperature = self._sampling(completion.temperature)
        return [
            GenerateRequest(
                inputs=prompt,
                parameters=GenerateParameters(
                    temperature=temperature,
                    repetition_penalty=completion.repetition_penalty,
                    frequency_penalty=completion.frequency_penalty,
                    top_p=completion.top_p,
                    do_sample=do_sample,
                    # TGI's completions route defaults max_tokens to 100.
                    max_new_tokens=100 if completion.max_tokens is None else completion.max_tokens,
                    stop=list(completion.stop or []),
                    details=True,
                    seed=completion.seed,
                    adapter_id=self._openai_model(completion.model),
                ),
            )
            for prompt in completion.prompts
        ]

    async def _completions(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        started = time.monotonic()
        raw, text = self._body(request)
        completion = parse_completion_request(raw, text=text)
        self._recorder.tgi_request()
        if completion.suffix is not None:
            self._recorder.tgi_failure("validation")
            raise _HTTPError(
                422, "Suffix is not supported and can be achieved by preprocessing the prompt.", "suffix not supported"
            )
        limit = self._config.limits.max_client_batch_size
        if len(completion.prompts) > limit:
            self._recorder.tgi_failure("validation")
            raise _HTTPError(
                422, f"Number of prompts exceeds the maximum allowed batch size of {limit}", "batch size exceeded"
            )
        requests = self._completion_requests(completion)
        model = self._openai_model(completion.model)
        created = int(time.time())
        if completion.stream:
            await self._completions_stream(conn, requests, model, created, started)
            return
        plans = [await self._run_once(generate_request) for generate_request in requests]
        choices = []
        prompt_tokens = completion_tokens = 0
        for index, plan in enumerate(plans):
            generation = plan.generations[0]
            prompt_tokens += plan.valid.input_length
            completion_tokens += len(generation.tokens)
            choices.append(
                {
                    "index": index,
                    "text": generation.text,
                    "logprobs": None,
                    "finish_reason": _OPENAI_FINISH[generation.finish_reason],
                }
            )
            self._recorder.tgi_success(plan.valid.input_length, len(generation.tokens), time.monotonic() - started)
        body = {
            "object": "text_completion",
            "id": "",
            "created": created,
            "model": model,
            "system_fingerprint": _FINGERPRINT,
            "choices": choices,
            "usage": _usage(prompt_tokens, completion_tokens),
        }
        headers = self._timing_headers(
            started, plans[0].queued, "".join(completion.prompts), prompt_tokens, completion_tokens
        )
        await self._json(conn, 200, body, headers)

    async def _completions_stream(
        self, conn: HTTPConnection, requests: list[GenerateRequest], model: str, created: int, started: float
    ) -> None:
        """Several prompts interleaved round-robin; each ends with a chunk carrying usage."""
        await conn.start_stream(200, self._stream_headers(sum(len(r.inputs) for r in requests)))
        queues: list[list[bytes]] = []
        held = 0
        try:
            for index, generate_request in enumerate(requests):
                if not self._acquire():
                    queues.append([sse(openai_stream_error(error_for_type("overloaded")[1]))])
                    continue
                held += 1
                try:
                    plan = self._plan(generate_request)
                except ValidationError as exc:
                    self._recorder.tgi_failure("validation")
                    queues.append([sse(openai_stream_error(_VALIDATION_PREFIX + str(exc)))])
                    continue
                generation = plan.generations[0]
                events = []
                for position, token in enumerate(generation.tokens):
                    last = position == len(generation.tokens) - 1
                    events.append(
                        sse(
                            completion_chunk(
                                model=model,
                                fingerprint=_FINGERPRINT,
                                created=created,
                                index=index,
                                text=token.text,
                                finish_reason=generation.finish_reason if last else "",
                                usage=_usage(plan.valid.input_length, len(generation.tokens)) if last else None,
                            )
                        )
                    )
                self._recorder.tgi_success(plan.valid.input_length, len(generation.tokens), time.monotonic() - started)
                queues.append(events)
            interleaved = [
                queue[i] for i in range(max(map(len, queues), default=0)) for queue in queues if i < len(queue)
            ]
            outcome = await self._emit(conn, len(interleaved), interleaved.__getitem__, _openai_error_event)
            if outcome == "dropped":
                return
        finally:
            for _ in range(held):
                self._recorder.release()
        await conn.send_chunk(DONE)
        await conn.end_stream()

    # --- tokenization -------------------------------------------------------------------------------

    async def _tokenize(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        raw, text = self._body(request)
        parsed = parse_generate_request(raw, text=text)
        # The encoding includes BOS with offsets (0, 0), which TGI renders as empty text.
        spans = [TokenSpan(BOS_ID, "", 0, 0), *self._tokenizer.encode(parsed.inputs)]
        truncate = parsed.parameters.truncate
        if truncate is not None and len(spans) > truncate:
            spans = spans[-truncate:]
        await self._json(conn, 200, [_simple_token(span) for span in spans], [])

    async def _chat_tokenize(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        raw, text = self._body(request)
        chat = parse_chat_request(raw, text=text)
        self._recorder.tgi_request()
        prompt = self._chat_prompt(chat)
        spans = self._tokenizer.encode(prompt)
        body = {"tokenize_response": [_simple_token(span) for span in spans], "templated_text": prompt}
        await self._json(conn, 200, body, [])

    # --- info routes --------------------------------------------------------------------------------

    async def _health(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        if self._faults.unavailable():
            await self._error(conn, 503, "unhealthy", "healthcheck")
        else:
            await conn.respond(200, b"", [])

    def info(self) -> dict[str, Any]:
        """The /info document."""
        limits = self._config.limits
        return {
            "model_id": self._config.model_id,
            "model_sha": self._model_sha,
            "model_pipeline_tag": "text-generation",
            "max_concurrent_requests": limits.max_concurrent_requests,
            "max_best_of": limits.max_best_of,
            "max_stop_sequences": limits.max_stop_sequences,
            "max_input_tokens": limits.max_input_tokens,
            "max_total_tokens": limits.max_total_tokens,
            "validation_workers": 2,
            "max_client_batch_size": limits.max_client_batch_size,
            "router": "text-generation-router",
            "version": TGI_VERSION,
            "sha": TGI_SHA,
            "docker_label": None,
        }

    async def _info(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        await self._json(conn, 200, self.info(), [])

    async def _metrics(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        await conn.respond(200, self._recorder.prometheus().encode("utf-8"), [_TEXT])

    async def _models(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        model_id = self._config.model_id
        body = {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": model_id}]}
        await self._json(conn, 200, body, [])

    # --- admin routes -------------------------------------------------------------------------------

    async def _admin_stats(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        await self._json(conn, 200, self._recorder.snapshot().to_json(), [])

    async def _admin_get_faults(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        await self._json(conn, 200, self._faults.to_json(), [])

    async def _admin_set_faults(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        try:
            self._faults.update(faults_changes_from_json(request.json_or_none()))
        except ValueError as exc:
            await self._json(conn, 400, {"error": str(exc), "error_type": "emulator"}, [])
            return
        await self._json(conn, 200, self._faults.to_json(), [])

    async def _admin_reset(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        self._on_reset()
        await self._json(conn, 200, {}, [])


def _openai_error_event(message: str, _error_type: str) -> bytes:
    return sse(openai_stream_error(message))


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _chat_logprob(token: GenToken, top: list[GenToken] | None) -> dict[str, Any]:
    return {
        "token": token.text,
        "logprob": token.logprob,
        "top_logprobs": [{"token": t.text, "logprob": t.logprob} for t in top or []],
    }


def _simple_token(span: TokenSpan) -> dict[str, Any]:
    return {"id": span.id, "text": span.text, "start": span.start, "stop": span.stop}
