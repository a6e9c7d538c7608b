"""ZephyrClient and AsyncZephyrClient, side by side.

Both are thin shells: request building, validation, error mapping and retry rules live in plain
functions (`_core.py`, `_params.py`, `_errors.py`, `_retry.py`, `_shaping.py`). Non-streaming calls go
through huggingface_hub's InferenceClient/AsyncInferenceClient; streams are read by a lean SSE loop over
the very same httpx2 connection pool (huggingface_hub's global `httpx2.Client` for the sync client, the
`AsyncInferenceClient`'s own `httpx2.AsyncClient` for the async one).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar, overload

import httpx2
import tenacity
from pydantic import BaseModel

from .._errors import (
    SHAPE_ERRORS,
    APIConnectionError,
    APIError,
    APITimeoutError,
    ConfigurationError,
    ZephyrTGIError,
    from_response,
    translate,
)
from .._retry import RetryPolicy, first_retry_wait, log_retry, tenacity_kwargs
from .._timeout import DEFAULT_TIMEOUT, TimeoutInput
from .._types import ChatCompletion, ChatCompletionChunk, GenerationResult, ServerInfo, StreamChunk, TokenSpan
from .batch import BatchProgress, default_concurrency
from .budget import BudgetPolicy
from .core import ClientCore, NativeRequest, parse_metrics
from .params import Grammar, SamplingParams
from .perplexity import chunk_text, perplexity_of, plan_windows, scored_logprobs
from .shaping import StreamAssembler, parse_answer, parse_answers, parse_chat_chunk, result_from_output
from .sse import aiter_sse_data, iter_sse_data
from .structured import SchemaInput, grammar_for_schema, parse_json_answer, parse_regex_answer
from .templates import MessagesInput, SpecialTokenPolicy

if TYPE_CHECKING:
    from huggingface_hub import AsyncInferenceClient, InferenceClient

    from .tokenizer import ZephyrTokenizer

__all__ = ["AsyncZephyrClient", "ZephyrClient"]

_T = TypeVar("_T")
_M = TypeVar("_M", bound=BaseModel)
Outcome = GenerationResult | ZephyrTGIError
# What huggingface_hub and httpx2 raise; everything else is a bug and must not be disguised.
_TRANSLATED = (httpx2.HTTPError, OSError, ValueError)


class ZephyrClient(ClientCore):
    """A client for TGI serving Zephyr-7B-alpha: templated chat, typed options and results, retries.

    Use it as a context manager, or call `close()`. Every call reuses one connection pool.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: TimeoutInput = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        params: SamplingParams | None = None,
        system_prompt: str | None = None,
        special_tokens: SpecialTokenPolicy = "raise",
        tokenizer: ZephyrTokenizer | None = None,
        budget: BudgetPolicy = "clamp",
        hub_client: InferenceClient | None = None,
    ) -> None:
        super().__init__(
            base_url,
            api_key=api_key,
            timeout=timeout,
            retry=retry,
            params=params,
            system_prompt=system_prompt,
            special_tokens=special_tokens,
            tokenizer=tokenizer,
            budget=budget,
        )
        if hub_client is None:
            from .hub import GuardedInferenceClient

            hub_client = GuardedInferenceClient(model=self.base_url, **self.hub_client_kwargs())
        self._hub = hub_client

    # -- lifecycle ------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release open responses (the shared connection pool stays up for other clients)."""
        self._hub.close()  # type: ignore[no-untyped-call]

    # -- generation -----------------------------------------------------------------------------------

    def chat(
        self,
        messages: MessagesInput,
        *,
        system: str | None = None,
        params: SamplingParams | None = None,
        **overrides: Any,
    ) -> GenerationResult:
        """Answer a conversation: render Zephyr's prompt here and generate with TGI's `/generate`."""
        return self._generate(self.chat_request(messages, system=system, params=params, overrides=overrides))

    def chat_stream(
        self,
        messages: MessagesInput,
        *,
        system: str | None = None,
        params: SamplingParams | None = None,
        **overrides: Any,
    ) -> Iterator[StreamChunk]:
        """Like `chat`, streaming: text deltas as they come, the whole result on the last chunk."""
        return self._stream(self.chat_request(messages, system=system, params=params, overrides=overrides))

    def generate(self, prompt: str, *, params: SamplingParams | None = None, **overrides: Any) -> GenerationResult:
        """Generate from a raw prompt (no chat template)."""
        return self._generate(self.raw_request(prompt, params=params, overrides=overrides))

    def generate_stream(
        self, prompt: str, *, params: SamplingParams | None = None, **overrides: Any
    ) -> Iterator[StreamChunk]:
        """Stream from a raw prompt (no chat template)."""
        return self._stream(self.raw_request(prompt, params=params, overrides=overrides))

    @overload
    def chat_completion(
        self, messages: MessagesInput, *, stream: Literal[False] = ..., **options: Any
    ) -> ChatCompletion: ...

    @overload
    def chat_completion(
        self, messages: MessagesInput, *, stream: Literal[True], **options: Any
    ) -> Iterator[ChatCompletionChunk]: ...

    def chat_completion(
        self, messages: MessagesInput, *, stream: bool = False, **options: Any
    ) -> ChatCompletion | Iterator[ChatCompletionChunk]:
        """TGI's OpenAI-compatible `/v1/chat/completions` (the server renders the template).

        `options` are the Messages API's: max_tokens, temperature, top_p, seed, stop, frequency_penalty,
        presence_penalty, logprobs, top_logprobs, response_format, tools, tool_choice, stream_options, ...
        """
        payload = self.chat_completion_payload(messages, stream=stream, options=options)
        if stream:
            return self._stream_chat_completion(payload)
        output = self._call(
            "POST /v1/chat/completions",
            lambda: self._hub.chat_completion(**self.hub_chat_kwargs(payload)),
        )
        return parse_answer(ChatCompletion, output, what="chat completion")

    @overload
    def chat_json(
        self,
        messages: MessagesInput,
        schema: type[_M],
        *,
        system: str | None = None,
        params: SamplingParams | None = None,
        **overrides: Any,
    ) -> _M: ...

    @overload
    def chat_json(
        self,
        messages: MessagesInput,
        schema: Mapping[str, Any],
        *,
        system: str | None = None,
        params: SamplingParams | None = None,
        **overrides: Any,
    ) -> dict[str, Any]: ...

    def chat_json(
        self,
        messages: MessagesInput,
        schema: SchemaInput,
        *,
        system: str | None = None,
        params: SamplingParams | None = None,
        **overrides: Any,
    ) -> Any:
        """Answer as JSON constrained by TGI's grammar and validated: a model instance, or a dict for a dict schema.

        Raises:
            StructuredOutputError: the answer does not validate (it is kept as `raw_text`).
        """
        overrides = {**overrides, "grammar": grammar_for_schema(schema)}
        result = self.chat(messages, system=system, params=params, **overrides)
        return parse_json_answer(result.text, schema)

    def chat_regex(
        self,
        messages: MessagesInput,
        pattern: str,
        *,
        system: str | None = None,
        params: SamplingParams | None = None,
        **overrides: Any,
    ) -> str:
        """Answer constrained to a regular expression (TGI's regex grammar), checked to match it."""
        overrides = {**overrides, "grammar": Grammar.regex(pattern)}
        return parse_regex_answer(self.chat(messages, system=system, params=params, **overrides).text, pattern)

    def batch_chat(
        self,
        conversations: Sequence[MessagesInput],
        *,
        concurrency: int | None = None,
        progress: bool = True,
        return_exceptions: bool = True,
        system: str | None = None,
        params: SamplingParams | None = None,
        **overrides: Any,
    ) -> list[Outcome]:
        """Answer many conversations with at most `concurrency` requests in flight; results in input order.

        Every input is checked before anything is sent. With `return_exceptions`, a failed item's place holds
        its `ZephyrTGIError`; otherwise the first failure cancels what has not started and is raised. Runs on
        threads, so it also works inside a running event loop (Jupyter).
        """
        requests = [self.chat_request(c, system=system, params=params, overrides=overrides) for c in conversations]
        self._ensure_limits()
        workers = check_concurrency(concurrency) or default_concurrency(self.limits)
        results: list[Outcome | None] = [None] * len(requests)
        with BatchProgress(len(requests), enabled=progress) as bar, ThreadPoolExecutor(workers) as pool:
            futures: dict[Future[GenerationResult], int] = {
                pool.submit(self._generate, request): index for index, request in enumerate(requests)
            }
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    outcome = _outcome(future)
                    if isinstance(outcome, ZephyrTGIError) and not return_exceptions:
                        for other in pending:
                            other.cancel()
                        raise outcome
                    results[futures[future]] = outcome
                    bar.done(outcome)
        return [outcome for outcome in results if outcome is not None]

    def perplexity(self, text: str, *, stride: int | None = None) -> float:
        """Perplexity of `text` under the served model, from TGI's prefill logprobs.

        Texts longer than the server's input window are scored in windows moving by `stride` tokens (default:
        half a window), each token once, with the tokens before it in its window as context.

        Raises:
            PrefillUnavailableError: TGI runs without `--enable-prefill-logprobs`.
        """
        self._ensure_limits()
        spans = self._text_spans(text)
        window = self.limits.max_input_tokens - 2  # BOS, and a token of slack for re-tokenizing a chunk
        logprobs: list[float] = []
        for part in plan_windows(len(spans), window, stride or max(1, window // 2)):
            result = self.generate(chunk_text(text, spans, part), max_new_tokens=1, decoder_input_details=True)
            logprobs.extend(scored_logprobs(result, part))
        return perplexity_of(logprobs)

    def _text_spans(self, text: str) -> list[TokenSpan]:
        if self.tokenizer is not None:
            return self.tokenizer.encode_spans(text, add_bos=False)
        return without_bos(self.tokenize(text))

    # -- server ---------------------------------------------------------------------------------------

    def info(self) -> ServerInfo:
        """The server's `/info`: model, version and limits."""
        response = self._call("GET /info", lambda: self._request("GET", "/info"))
        info = parse_answer(ServerInfo, response.content, what="/info")
        self.remember_limits(info)
        return info

    def health(self) -> bool:
        """True when `/health` answers 200; False while the server is unreachable or unhealthy."""
        try:
            self._request("GET", "/health", raise_for_status=False).raise_for_status()
        except (httpx2.HTTPError, OSError):
            return False
        return True

    def wait_until_ready(self, timeout: float = 600.0, *, interval: float = 0.5) -> ServerInfo:
        """Poll `/health` until it answers 200, then return `/info`.

        Raises:
            APITimeoutError: not healthy within `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while not self.health():
            if time.monotonic() + interval > deadline:
                raise APITimeoutError(f"{self.base_url} was not healthy within {timeout:g} s")
            time.sleep(interval)
            interval = min(interval * 1.5, 5.0)
        return self.info()

    def tokenize(self, text: str) -> list[TokenSpan]:
        """The server's tokenization of `text` (TGI's `/tokenize`)."""
        response = self._call("POST /tokenize", lambda: self._request("POST", "/tokenize", json={"inputs": text}))
        return parse_answers(TokenSpan, response.content, what="/tokenize answer")

    def metrics(self) -> dict[str, float]:
        """TGI's Prometheus metrics, as {"name{labels}": value}."""
        response = self._call("GET /metrics", lambda: self._request("GET", "/metrics"))
        return parse_metrics(response.text)

    def count_tokens(self, text: MessagesInput, *, system: str | None = None) -> int:
        """Tokens TGI counts for a prompt, BOS included: a string as `generate()` sends it, messages as
        `chat()` renders them. Uses the local tokenizer when the client has one, else the server's `/tokenize`."""
        return self._count_prompt(self.prompt_of(text, system=system))

    # -- plumbing -------------------------------------------------------------------------------------

    def _ensure_limits(self) -> None:
        if self.limits_known:
            return
        with contextlib.suppress(APIError):  # defaults apply; the request itself reports a real problem
            self.info()

    def _prepare(self, request: NativeRequest, *, stream: bool) -> NativeRequest:
        self._ensure_limits()
        if self.budget_needs_count(request):
            request = self.fit_to_budget(request, self._count_prompt(request.prompt))
        self.check_request(request, stream=stream)
        return request

    def _count_prompt(self, prompt: str) -> int:
        if self.tokenizer is not None:
            return self.tokenizer.count(prompt)
        return len(self.tokenize(prompt))  # TGI's /tokenize includes BOS, as /generate counts it

    def _generate(self, request: NativeRequest) -> GenerationResult:
        request = self._prepare(request, stream=False)
        output = self._call(
            "POST /generate",
            lambda: self._hub.text_generation(request.prompt, model=self.generate_url, **request.parameters),
        )
        return result_from_output(output, stops=request.stops, prompt=request.prompt)

    def _call(self, description: str, fn: Callable[[], _T]) -> _T:
        def attempt() -> _T:
            try:
                return fn()
            except ZephyrTGIError:
                raise
            except (*_TRANSLATED, *SHAPE_ERRORS) as exc:
                raise translate(exc, url=self.base_url) from exc

        return self._with_retries(description, self.deadline_at(), attempt)

    def _with_retries(self, description: str, deadline_at: float | None, fn: Callable[..., _T], *args: Any) -> _T:
        """`fn(*args)` under the retry policy: a plain first attempt, tenacity for the rest."""
        try:
            return fn(*args)
        except ZephyrTGIError as exc:
            wait = first_retry_wait(self.retry, exc, deadline_at, self._rng)
            if wait is None:
                raise
            log_retry(description, 1, self.retry, exc, wait)
        time.sleep(wait)
        kwargs = tenacity_kwargs(self.retry, description=description, deadline_at=deadline_at, attempts_done=1)
        return tenacity.Retrying(**kwargs)(fn, *args)

    def _request(self, method: str, path: str, *, json: Any = None, raise_for_status: bool = True) -> httpx2.Response:
        from huggingface_hub import get_session

        response = get_session().request(
            method, self.base_url + path, json=json, headers=self.headers, timeout=self.httpx_timeout()
        )
        if raise_for_status and response.status_code >= 400:
            raise from_response(response.status_code, response.content, response.headers)
        return response

    def _open(self, path: str, payload: Mapping[str, Any]) -> httpx2.Response:
        from huggingface_hub import get_session

        session = get_session()
        request = session.build_request(
            "POST", self.base_url + path, json=payload, headers=self.headers, timeout=self.httpx_timeout()
        )
        try:
            response = session.send(request, stream=True)
        except _TRANSLATED as exc:
            raise translate(exc, url=self.base_url) from exc
        if response.status_code >= 400:
            try:
                body = response.read()
            except httpx2.HTTPError:
                body = b""
            finally:
                response.close()
            raise from_response(response.status_code, body, response.headers)
        return response

    def _stream(self, request: NativeRequest) -> Iterator[StreamChunk]:
        request = self._prepare(request, stream=True)
        deadline_at = self.deadline_at()
        # Retried only up to and including the first event: after a token was read, never again.
        response, events, assembler, first = self._with_retries(
            "POST /generate_stream", deadline_at, self._open_generate_stream, request
        )
        return self._finish_stream(response, events, assembler, first, deadline_at)

    def _open_generate_stream(
        self, request: NativeRequest
    ) -> tuple[httpx2.Response, Iterator[str], StreamAssembler, StreamChunk]:
        response = self._open("/generate_stream", request.stream_payload())
        try:
            events = _translating(iter_sse_data(response.iter_bytes()), self.base_url)
            assembler = StreamAssembler(request.stops, request.prompt)
            data = next(events, None)
            if data is None:
                raise assembler.end_of_stream()
            return response, events, assembler, assembler.feed(data)
        except BaseException:
            response.close()
            raise

    def _finish_stream(
        self,
        response: httpx2.Response,
        events: Iterator[str],
        assembler: StreamAssembler,
        first: StreamChunk,
        deadline_at: float | None,
    ) -> Iterator[StreamChunk]:
        try:
            chunk = first
            while not chunk.is_last:
                yield chunk
                _check_deadline(deadline_at)
                data = next(events, None)
                if data is None:
                    raise assembler.end_of_stream()
                chunk = assembler.feed(data)
            # Read the end of the body before handing out the last chunk, so the connection goes back to the
            # pool even when the caller stops iterating there.
            _drain(events)
            yield chunk
        finally:
            response.close()

    def _stream_chat_completion(self, payload: Mapping[str, Any]) -> Iterator[ChatCompletionChunk]:
        deadline_at = self.deadline_at()
        response, events, first = self._with_retries(
            "POST /v1/chat/completions", deadline_at, self._open_chat_stream, payload
        )
        return self._finish_chat_stream(response, events, first, deadline_at)

    def _open_chat_stream(
        self, payload: Mapping[str, Any]
    ) -> tuple[httpx2.Response, Iterator[str], ChatCompletionChunk | None]:
        response = self._open("/v1/chat/completions", payload)
        try:
            events = _translating(iter_sse_data(response.iter_bytes()), self.base_url)
            data = next(events, None)
            if data is None:
                raise APIConnectionError("the chat stream ended before its first event (connection lost)")
            return response, events, parse_chat_chunk(data)
        except BaseException:
            response.close()
            raise

    def _finish_chat_stream(
        self,
        response: httpx2.Response,
        events: Iterator[str],
        first: ChatCompletionChunk | None,
        deadline_at: float | None,
    ) -> Iterator[ChatCompletionChunk]:
        try:
            chunk = first
            while chunk is not None:
                if _is_final_chat_chunk(chunk):
                    # What follows (a usage chunk, then [DONE]) comes at once: read it before handing out the
                    # finish chunk, so the connection goes back to the pool even if the caller stops there.
                    rest = list(_chat_chunks_until_done(events))
                    yield chunk
                    yield from rest
                    return
                yield chunk
                _check_deadline(deadline_at)
                data = next(events, None)
                if data is None:
                    raise APIConnectionError("the chat stream ended without [DONE] (connection lost)")
                chunk = parse_chat_chunk(data)
            _drain(events)
        finally:
            response.close()


class AsyncZephyrClient(ClientCore):
    """The async twin of `ZephyrClient`: the same methods, awaited; streams are async iterators."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: TimeoutInput = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        params: SamplingParams | None = None,
        system_prompt: str | None = None,
        special_tokens: SpecialTokenPolicy = "raise",
        tokenizer: ZephyrTokenizer | None = None,
        budget: BudgetPolicy = "clamp",
        hub_client: AsyncInferenceClient | None = None,
    ) -> None:
        super().__init__(
            base_url,
            api_key=api_key,
            timeout=timeout,
            retry=retry,
            params=params,
            system_prompt=system_prompt,
            special_tokens=special_tokens,
            tokenizer=tokenizer,
            budget=budget,
        )
        if hub_client is None:
            from .hub import GuardedAsyncInferenceClient

            hub_client = GuardedAsyncInferenceClient(model=self.base_url, **self.hub_client_kwargs())
        self._hub = hub_client
        self._limits_lock: asyncio.Lock | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close this client's connection pool and open responses."""
        await self._hub.close()  # type: ignore[no-untyped-call]

    # -- generation -----------------------------------------------------------------------------------

    async def chat(
        self,
        messages: MessagesInput,
        *,
        system: str | None = None,
        params: SamplingParams | None = None,
        **overrides: Any,
    ) -> GenerationResult:
        """Answer a conversation: render Zephyr's prompt here and generate with TGI's `/generate`."""
        return await self._generate(self.chat_request(messages, system=system, params=params, overrides=overrides))

    def chat_stream(
        self,
        messages: MessagesInput,
        *,
        system: str | None = None,
        params: SamplingParams | None = None,
        **overrides: Any,
    ) -> AsyncIterator[StreamChunk]:
        """Like `chat`, streaming (`async for chunk in client.chat_stream(...)`)."""
        return self._stream(self.chat_request(messages, system=system, params=params, overrides=overrides))

    async def generate(
        self, prompt: str, *, params: SamplingParams | None = None, **overrides: Any
    ) -> GenerationResult:
        """Generate from a raw prompt (no chat template)."""
        return await self._generate(self.raw_request(prompt, params=params, overrides=overrides))

    def generate_stream(
        self, prompt: str, *, params: SamplingParams | None = None, **overrides: Any
    ) -> AsyncIterator[StreamChunk]:
        """Stream from a raw prompt (no chat template)."""
        return self._stream(self.raw_request(prompt, params=params, overrides=overrides))

    @overload
    async def chat_completion(
        self, messages: MessagesInput, *, stream: Literal[False] = ..., **options: Any
    ) -> ChatCompletion: ...

    @overload
    async def chat_completion(
        self, messages: MessagesInput, *, stream: Literal[True], **options: Any
    ) -> AsyncIterator[ChatCompletionChunk]: ...

    async def chat_completion(
        self, messages: MessagesInput, *, stream: bool = False, **options: Any
    ) -> ChatCompletion | AsyncIterator[ChatCompletionChunk]:
        """TGI's OpenAI-compatible `/v1/chat/completions`; with `stream=True` await it, then iterate."""
        payload = self.chat_completion_payload(messages, stream=stream, options=options)
        if stream:
            return await self._stream_chat_completion(payload)

        async def call() -> Any:
            return await self._hub.chat_completion(**self.hub_chat_kwargs(payload))

        output = await self._call("POST /v1/chat/completions", call)
        return parse_answer(ChatCompletion, output, what="chat completion")

    @overload
    async def chat_json(
        self,
        messages: MessagesInput,
        schema: type[_M],
        *,
        system: str | None = None,
        params: SamplingParams | None = None,
        **overrides: Any,
    ) -> _M: ...

    @overload
    async def chat_json(
        self,
        messages: MessagesInput,
        schema: Mapping[str, Any],
        *,
        system: str | None = None,
        params: SamplingParams | None = None,
        **overrides: Any,
    ) -> dict[str, Any]: ...

    async def chat_json(
        self,
        messages: MessagesInput,
        schema: SchemaInput,
        *,
        system: str | None = None,
        params: SamplingParams | None = None,
        **overrides: Any,
    ) -> Any:
        """Answer as JSON constrained by TGI's grammar and validated: a model instance, or a dict for a dict schema.

        Raises:
            StructuredOutputError: the answer does not validate (it is kept as `raw_text`).
        """
        overrides = {**overrides, "grammar": grammar_for_schema(schema)}
        result = await self.chat(messages, system=system, params=params, **overrides)
        return parse_json_answer(result.text, schema)

    async def chat_regex(
        self,
        messages: MessagesInput,
        pattern: str,
        *,
        system: str | None = None,
        params: SamplingParams | None = None,
        **overrides: Any,
    ) -> str:
        """Answer constrained to a regular expression (TGI's regex grammar), checked to match it."""
        overrides = {**overrides, "grammar": Grammar.regex(pattern)}
        result = await self.chat(messages, system=system, params=params, **overrides)
        return parse_regex_answer(result.text, pattern)

    async def batch_chat(
        self,
        conversations: Sequence[MessagesInput],
        *,
        concurrency: int | None = None,
        progress: bool = True,
        return_exceptions: bool = True,
        system: str | None = None,
        params: SamplingParams | None = None,
        **overrides: Any,
    ) -> list[Outcome]:
        """Answer many conversations with at most `concurrency` requests in flight; results in input order.

        Every input is checked before anything is sent. With `return_exceptions`, a failed item's place holds
        its `ZephyrTGIError`; otherwise the first failure cancels the rest and is raised.
        """
        requests = [self.chat_request(c, system=system, params=params, overrides=overrides) for c in conversations]
        await self._ensure_limits()
        workers = check_concurrency(concurrency) or default_concurrency(self.limits)
        results: list[Outcome | None] = [None] * len(requests)
        next_index = iter(range(len(requests)))

        async def worker(bar: BatchProgress) -> None:
            # A fixed set of workers pulling indexes keeps exactly `workers` requests in flight.
            for index in next_index:
                try:
                    outcome: Outcome = await self._generate(requests[index])
                except ZephyrTGIError as exc:
                    if not return_exceptions:
                        raise
                    outcome = exc
                results[index] = outcome
                bar.done(outcome)

        with BatchProgress(len(requests), enabled=progress) as bar:
            try:
                async with asyncio.TaskGroup() as group:
                    for _ in range(min(workers, len(requests))):
                        group.create_task(worker(bar))
            except BaseExceptionGroup as failures:
                # The first failure cancelled the other workers: raise it as itself, not wrapped in a group.
                first = next((e for e in failures.exceptions if isinstance(e, ZephyrTGIError)), None)
                if first is None:
                    raise
                raise first from None
        return [outcome for outcome in results if outcome is not None]

    async def perplexity(self, text: str, *, stride: int | None = None) -> float:
        """Perplexity of `text` under the served model, from TGI's prefill logprobs.

        Texts longer than the server's input window are scored in windows moving by `stride` tokens (default:
        half a window), each token once, with the tokens before it in its window as context.

        Raises:
            PrefillUnavailableError: TGI runs without `--enable-prefill-logprobs`.
        """
        await self._ensure_limits()
        spans = await self._text_spans(text)
        window = self.limits.max_input_tokens - 2  # BOS, and a token of slack for re-tokenizing a chunk
        logprobs: list[float] = []
        for part in plan_windows(len(spans), window, stride or max(1, window // 2)):
            result = await self.generate(chunk_text(text, spans, part), max_new_tokens=1, decoder_input_details=True)
            logprobs.extend(scored_logprobs(result, part))
        return perplexity_of(logprobs)

    async def _text_spans(self, text: str) -> list[TokenSpan]:
        if self.tokenizer is not None:
            return self.tokenizer.encode_spans(text, add_bos=False)
        return without_bos(await self.tokenize(text))

    # -- server ---------------------------------------------------------------------------------------

    async def info(self) -> ServerInfo:
        """The server's `/info`: model, version and limits."""
        response = await self._call("GET /info", lambda: self._request("GET", "/info"))
        info = parse_answer(ServerInfo, response.content, what="/info")
        self.remember_limits(info)
        return info

    async def health(self) -> bool:
        """True when `/health` answers 200; False while the server is unreachable or unhealthy."""
        try:
            (await self._request("GET", "/health", raise_for_status=False)).raise_for_status()
        except (httpx2.HTTPError, OSError):
            return False
        return True

    async def wait_until_ready(self, timeout: float = 600.0, *, interval: float = 0.5) -> ServerInfo:
        """Poll `/health` until it answers 200, then return `/info`.

        Raises:
            APITimeoutError: not healthy within `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while not await self.health():
            if time.monotonic() + interval > deadline:
                raise APITimeoutError(f"{self.base_url} was not healthy within {timeout:g} s")
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, 5.0)
        return await self.info()

    async def tokenize(self, text: str) -> list[TokenSpan]:
        """The server's tokenization of `text` (TGI's `/tokenize`)."""
        response = await self._call("POST /tokenize", lambda: self._request("POST", "/tokenize", json={"inputs": text}))
        return parse_answers(TokenSpan, response.content, what="/tokenize answer")

    async def metrics(self) -> dict[str, float]:
        """TGI's Prometheus metrics, as {"name{labels}": value}."""
        response = await self._call("GET /metrics", lambda: self._request("GET", "/metrics"))
        return parse_metrics(response.text)

    async def count_tokens(self, text: MessagesInput, *, system: str | None = None) -> int:
        """Tokens TGI counts for a prompt, BOS included: a string as `generate()` sends it, messages as
        `chat()` renders them. Uses the local tokenizer when the client has one, else the server's `/tokenize`."""
        return await self._count_prompt(self.prompt_of(text, system=system))

    # -- plumbing -------------------------------------------------------------------------------------

    async def _ensure_limits(self) -> None:
        if self.limits_known:
            return
        if self._limits_lock is None:
            self._limits_lock = asyncio.Lock()
        async with self._limits_lock:  # many concurrent first calls fetch /info once
            if self.limits_known:
                return
            with contextlib.suppress(APIError):  # defaults apply; the request itself reports a real problem
                await self.info()

    async def _prepare(self, request: NativeRequest, *, stream: bool) -> NativeRequest:
        await self._ensure_limits()
        if self.budget_needs_count(request):
            request = self.fit_to_budget(request, await self._count_prompt(request.prompt))
        self.check_request(request, stream=stream)
        return request

    async def _count_prompt(self, prompt: str) -> int:
        if self.tokenizer is not None:
            return self.tokenizer.count(prompt)
        return len(await self.tokenize(prompt))  # TGI's /tokenize includes BOS, as /generate counts it

    async def _generate(self, request: NativeRequest) -> GenerationResult:
        request = await self._prepare(request, stream=False)

        async def call() -> Any:
            return await self._hub.text_generation(request.prompt, model=self.generate_url, **request.parameters)

        output = await self._call("POST /generate", call)
        return result_from_output(output, stops=request.stops, prompt=request.prompt)

    async def _call(self, description: str, fn: Callable[[], Any]) -> Any:
        deadline_at = self.deadline_at()

        async def attempt() -> Any:
            try:
                if deadline_at is None:
                    return await fn()
                async with asyncio.timeout(max(0.0, deadline_at - time.monotonic())):
                    return await fn()
            except ZephyrTGIError:
                raise
            except (*_TRANSLATED, *SHAPE_ERRORS) as exc:
                raise translate(exc, url=self.base_url) from exc

        return await self._with_retries(description, deadline_at, attempt)

    async def _with_retries(
        self, description: str, deadline_at: float | None, fn: Callable[..., Awaitable[_T]], *args: Any
    ) -> _T:
        """`await fn(*args)` under the retry policy: a plain first attempt, tenacity for the rest."""
        try:
            return await fn(*args)
        except ZephyrTGIError as exc:
            wait = first_retry_wait(self.retry, exc, deadline_at, self._rng)
            if wait is None:
                raise
            log_retry(description, 1, self.retry, exc, wait)
        await asyncio.sleep(wait)
        kwargs = tenacity_kwargs(self.retry, description=description, deadline_at=deadline_at, attempts_done=1)
        result: _T = await tenacity.AsyncRetrying(**kwargs)(fn, *args)
        return result

    async def _client(self) -> httpx2.AsyncClient:
        # The AsyncInferenceClient's own pool: one pool for the hub's calls and our streams.
        client: httpx2.AsyncClient = await self._hub._get_async_client()  # type: ignore[no-untyped-call]
        return client

    async def _request(
        self, method: str, path: str, *, json: Any = None, raise_for_status: bool = True
    ) -> httpx2.Response:
        client = await self._client()
        response = await client.request(
            method, self.base_url + path, json=json, headers=self.headers, timeout=self.httpx_timeout()
        )
        if raise_for_status and response.status_code >= 400:
            raise from_response(response.status_code, response.content, response.headers)
        return response

    async def _open(self, path: str, payload: Mapping[str, Any]) -> httpx2.Response:
        client = await self._client()
        request = client.build_request(
            "POST", self.base_url + path, json=payload, headers=self.headers, timeout=self.httpx_timeout()
        )
        try:
            response = await client.send(request, stream=True)
        except _TRANSLATED as exc:
            raise translate(exc, url=self.base_url) from exc
        if response.status_code >= 400:
            try:
                body = await response.aread()
            except httpx2.HTTPError:
                body = b""
            finally:
                await response.aclose()
            raise from_response(response.status_code, body, response.headers)
        return response

    async def _stream(self, request: NativeRequest) -> AsyncIterator[StreamChunk]:
        request = await self._prepare(request, stream=True)
        deadline_at = self.deadline_at()
        # Retried only up to and including the first event: after a token was read, never again.
        response, events, assembler, first = await self._with_retries(
            "POST /generate_stream", deadline_at, self._open_generate_stream, request
        )
        try:
            chunk = first
            while not chunk.is_last:
                yield chunk
                _check_deadline(deadline_at)
                data = await anext(events, None)
                if data is None:
                    raise assembler.end_of_stream()
                chunk = assembler.feed(data)
            # Read the end of the body before handing out the last chunk, so the connection goes back to the
            # pool even when the caller stops iterating there.
            await _adrain(events)
            yield chunk
        finally:
            await response.aclose()

    async def _open_generate_stream(
        self, request: NativeRequest
    ) -> tuple[httpx2.Response, AsyncIterator[str], StreamAssembler, StreamChunk]:
        response = await self._open("/generate_stream", request.stream_payload())
        try:
            events = _atranslating(aiter_sse_data(response.aiter_bytes()), self.base_url)
            assembler = StreamAssembler(request.stops, request.prompt)
            data = await anext(events, None)
            if data is None:
                raise assembler.end_of_stream()
            return response, events, assembler, assembler.feed(data)
        except BaseException:
            await response.aclose()
            raise

    async def _stream_chat_completion(self, payload: Mapping[str, Any]) -> AsyncIterator[ChatCompletionChunk]:
        deadline_at = self.deadline_at()
        response, events, first = await self._with_retries(
            "POST /v1/chat/completions", deadline_at, self._open_chat_stream, payload
        )
        return self._finish_chat_stream(response, events, first, deadline_at)

    async def _open_chat_stream(
        self, payload: Mapping[str, Any]
    ) -> tuple[httpx2.Response, AsyncIterator[str], ChatCompletionChunk | None]:
        response = await self._open("/v1/chat/completions", payload)
        try:
            events = _atranslating(aiter_sse_data(response.aiter_bytes()), self.base_url)
            data = await anext(events, None)
            if data is None:
                raise APIConnectionError("the chat stream ended before its first event (connection lost)")
            return response, events, parse_chat_chunk(data)
        except BaseException:
            await response.aclose()
            raise

    async def _finish_chat_stream(
        self,
        response: httpx2.Response,
        events: AsyncIterator[str],
        first: ChatCompletionChunk | None,
        deadline_at: float | None,
    ) -> AsyncIterator[ChatCompletionChunk]:
        try:
            chunk = first
            while chunk is not None:
                if _is_final_chat_chunk(chunk):
                    # What follows (a usage chunk, then [DONE]) comes at once: read it before handing out the
                    # finish chunk, so the connection goes back to the pool even if the caller stops there.
                    rest = [c async for c in _achat_chunks_until_done(events)]
                    yield chunk
                    for item in rest:
                        yield item
                    return
                yield chunk
                _check_deadline(deadline_at)
                data = await anext(events, None)
                if data is None:
                    raise APIConnectionError("the chat stream ended without [DONE] (connection lost)")
                chunk = parse_chat_chunk(data)
            await _adrain(events)
        finally:
            await response.aclose()


def _check_deadline(deadline_at: float | None) -> None:
    if deadline_at is not None and time.monotonic() > deadline_at:
        raise APITimeoutError("the call's overall deadline passed while streaming")


def _translating(events: Iterator[str], url: str) -> Iterator[str]:
    """Re-raise transport errors met while reading a stream as ours."""
    try:
        yield from events
    except _TRANSLATED as exc:
        raise translate(exc, url=url) from exc


async def _atranslating(events: AsyncIterator[str], url: str) -> AsyncIterator[str]:
    """Re-raise transport errors met while reading a stream as ours (async)."""
    try:
        async for data in events:
            yield data
    except _TRANSLATED as exc:
        raise translate(exc, url=url) from exc


def _outcome(future: Future[GenerationResult]) -> Outcome:
    """A finished future's result, or the ZephyrTGIError it raised (anything else is a bug: re-raised)."""
    error = future.exception()
    if error is None:
        return future.result()
    if isinstance(error, ZephyrTGIError):
        return error
    raise error


def check_concurrency(concurrency: int | None) -> int | None:
    """Validate a batch's concurrency argument."""
    if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
        raise ConfigurationError(f"concurrency must be a positive integer, got {concurrency!r}")
    return concurrency


def without_bos(spans: list[TokenSpan]) -> list[TokenSpan]:
    """`/tokenize` spans without TGI's leading BOS entry."""
    return spans[1:] if spans and spans[0].id == 1 and spans[0].stop == 0 else spans


def _is_final_chat_chunk(chunk: ChatCompletionChunk) -> bool:
    return any(choice.finish_reason for choice in chunk.choices)


def _drain(events: Iterator[str]) -> None:
    """Read what is left of a finished stream; a failure here only means the connection is not reused."""
    with contextlib.suppress(ZephyrTGIError):
        for _ in events:
            pass


async def _adrain(events: AsyncIterator[str]) -> None:
    """Read what is left of a finished stream (async); a failure only means the connection is not reused."""
    with contextlib.suppress(ZephyrTGIError):
        async for _ in events:
            pass


def _chat_chunks_until_done(events: Iterator[str]) -> Iterator[ChatCompletionChunk]:
    """The chunks after a finish chunk, up to [DONE] (or the end of the body)."""
    for data in events:
        chunk = parse_chat_chunk(data)
        if chunk is None:
            _drain(events)
            return
        yield chunk


async def _achat_chunks_until_done(events: AsyncIterator[str]) -> AsyncIterator[ChatCompletionChunk]:
    """The chunks after a finish chunk, up to [DONE] (or the end of the body) (async)."""
    async for data in events:
        chunk = parse_chat_chunk(data)
        if chunk is None:
            await _adrain(events)
            return
        yield chunk
