"""AsyncZephyrClient: the async shell. It drives the core's flows over its own transport and does nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Literal, Self, TypeVar, overload

from pydantic import BaseModel

from .._engines import MetricsSummary
from .._errors import ZephyrTGIError
from .._types import ChatCompletion, ChatCompletionChunk, GenerationResult, ServerInfo, StreamChunk, TokenSpan
from . import flows
from .batch import BatchProgress, check_concurrency, default_concurrency
from .flows import EFFECTS, Close, Emit, Exclusive, Flow, Items, Read, Send, Sleep
from .params import Grammar, SamplingParams
from .request_id import CallId
from .structured import SchemaInput, grammar_for_schema, parse_json_answer, parse_regex_answer
from .surface import ClientSurface
from .templates import MessagesInput
from .transport import AsyncStreamBody, AsyncTransport

if TYPE_CHECKING:
    pass

__all__ = ["AsyncStream", "AsyncZephyrClient"]

_T = TypeVar("_T")
_I = TypeVar("_I")
_M = TypeVar("_M", bound=BaseModel)
Outcome = GenerationResult | ZephyrTGIError


class AsyncStream(Generic[_I]):
    """A streamed answer: `async for` it; the request goes out on the first `__anext__()`.

    Use it in an `async with` block (or await `aclose()`) to free its connection when you stop early.

    The client's `*_stream` methods make streams; there is no need to build one.

    Args:
        flow: The flow that produces the stream's items.
        client: The client whose connection pool carries the request.
    """

    __slots__ = ("_call", "_client", "_flow", "_opened", "_queued")

    def __init__(self, flow: Flow[Any], client: AsyncZephyrClient) -> None:
        self._flow: Flow[Any] | None = flow
        self._client = client
        self._opened: list[AsyncStreamBody] = []
        self._call = CallId()
        self._queued: list[Any] = []  # items the flow handed out together, not yet taken (last first)

    @property
    def request_id(self) -> str:
        """The stream's `X-Request-Id` (the server's own once it has answered with one)."""
        return self._call.value

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> _I:
        """Drive the flow to the next item it emits, performing its effects on the way."""
        queued = self._queued
        if queued:
            return queued.pop()  # type: ignore[no-any-return]
        flow = self._flow
        if flow is None:
            raise StopAsyncIteration
        value: Any = None
        error: ZephyrTGIError | None = None
        try:
            while True:
                effect = flow.send(value) if error is None else flow.throw(error)
                kind = effect.__class__
                if kind not in EFFECTS:
                    if kind is Items:
                        items: list[_I] = effect.items
                        self._queued = items[:0:-1]
                        return items[0]
                    item: _I = effect.item if kind is Emit else effect
                    return item
                error = None
                try:
                    # A stream's commonest effect, performed here rather than through `_perform`'s dispatch.
                    if kind is Read:
                        value = await effect.body.read(effect.until)
                    else:
                        value = await self._client._perform(effect, self._opened, self._call)
                except ZephyrTGIError as exc:
                    value, error = None, exc
        except StopIteration:  # the flow ended: so does the stream (StopIteration cannot cross a coroutine)
            await self.aclose()
            raise StopAsyncIteration from None
        except BaseException as exc:
            if isinstance(exc, ZephyrTGIError):
                self._call.mark(exc)
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Stop reading and free the connection."""
        self._queued.clear()
        flow, self._flow = self._flow, None
        if flow is not None:
            flow.close()
        while self._opened:
            await self._opened.pop().close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class AsyncZephyrClient(ClientSurface):
    """The async twin of `ZephyrClient`: the same methods, awaited; streams are async iterators."""

    def _open(self) -> None:
        self._transport = AsyncTransport(self._config.shown_url)
        self._owns_transport = True
        self._locks: dict[int, asyncio.Lock] = {}  # by id() of the Endpoint, which lives as long as the client

    def with_options(self, **changes: Any) -> AsyncZephyrClient:
        """A client with some settings changed (timeout, retry, params, ...), sharing this one's pool.

        Closing the derived client leaves the pool open; closing this one closes it.

        Args:
            **changes: New values for `api_key`, `timeout`, `retry`, `params`, `system_prompt`, `special_tokens`,
                `tokenizer` or `budget` (the constructor's arguments of the same names).

        Returns:
            A new client of the same kind, for the same server.

        Raises:
            ConfigurationError: a setting that cannot change (the URL, the engine) or an invalid value.
        """
        derived = object.__new__(AsyncZephyrClient)
        derived._configure(self._derived_config(changes), self._endpoint, self._ctx.replicas)
        derived._transport = self._transport
        derived._owns_transport = False
        derived._instrumentation = self._instrumentation
        derived._locks = {}
        return derived

    # -- lifecycle ------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool (a client made by `with_options()` leaves its parent's open)."""
        if self._owns_transport:
            await self._transport.close()

    # -- generation -----------------------------------------------------------------------------------

    async def chat(
        self,
        messages: MessagesInput,
        *,
        system: str | None = None,
        params: SamplingParams | None = None,
        **overrides: Any,
    ) -> GenerationResult:
        """Answer a conversation: render Zephyr's prompt here and send it to the engine's raw-prompt route (TGI's
        `/generate`, vLLM's and SGLang's `/v1/completions`), so the model sees the same text on every engine.

        Args:
            messages: A user turn as a string, or a list of `Message`s or `{"role": ..., "content": ...}` dicts.
            system: The system prompt of this call; default the client's `system_prompt` (messages that start
                with a system message take neither).
            params: Sampling options of this call, layered over the client's `params`.
            **overrides: Single `SamplingParams` fields (`max_new_tokens=64`, `seed=1`, ...), layered over
                `params`.

        Returns:
            The answer, with its finish reason, token counts and (when asked for) tokens and logprobs.

        Raises:
            PromptInjectionError: a special token in a message's content, with `special_tokens="raise"`.
            TokenBudgetError: the prompt does not fit the server's window, with `budget="raise"`.
            APIError: the server's refusal or a transport failure, after the retries the policy allows.
        """
        request = self._chat_request(messages, system, params, overrides)
        flow = self._traced_chat(flows.generate(self._ctx, request), request, messages, system, stream=False)
        return await self._run(flow)

    def chat_stream(
        self,
        messages: MessagesInput,
        *,
        system: str | None = None,
        params: SamplingParams | None = None,
        **overrides: Any,
    ) -> AsyncStream[StreamChunk]:
        """Like `chat`, streaming: text deltas as they come, the whole result on the last chunk.

        Nothing is sent until the stream is first iterated; close it (or leave its `with` block) to stop early.

        Args:
            messages: A user turn as a string, or a list of `Message`s or `{"role": ..., "content": ...}` dicts.
            system: The system prompt of this call; default the client's `system_prompt` (messages that start
                with a system message take neither).
            params: Sampling options of this call, layered over the client's `params`.
            **overrides: Single `SamplingParams` fields (`max_new_tokens=64`, `seed=1`, ...), layered over
                `params`.

        Returns:
            A stream of chunks; the last one carries the whole `GenerationResult` as `chunk.result`.

        Raises:
            PromptInjectionError: a special token in a message's content, with `special_tokens="raise"`.
            TokenBudgetError: the prompt does not fit the server's window, with `budget="raise"`.
        """
        request = self._chat_request(messages, system, params, overrides)
        flow = self._traced_chat(flows.generate_stream(self._ctx, request), request, messages, system, stream=True)
        return AsyncStream(flow, self)

    async def generate(
        self, prompt: str, *, params: SamplingParams | None = None, **overrides: Any
    ) -> GenerationResult:
        """Generate from a raw prompt (no chat template).

        Args:
            prompt: The exact text the model continues.
            params: Sampling options of this call, layered over the client's `params`.
            **overrides: Single `SamplingParams` fields (`max_new_tokens=64`, `seed=1`, ...), layered over
                `params`.

        Returns:
            The continuation, with its finish reason and token counts.

        Raises:
            TokenBudgetError: the prompt does not fit the server's window, with `budget="raise"`.
            APIError: the server's refusal or a transport failure, after the retries the policy allows.
        """
        request = self._raw_request(prompt, params, overrides)
        return await self._run(self._traced_generate(flows.generate(self._ctx, request), request, stream=False))

    def generate_stream(
        self, prompt: str, *, params: SamplingParams | None = None, **overrides: Any
    ) -> AsyncStream[StreamChunk]:
        """Stream from a raw prompt (no chat template).

        Args:
            prompt: The exact text the model continues.
            params: Sampling options of this call, layered over the client's `params`.
            **overrides: Single `SamplingParams` fields (`max_new_tokens=64`, `seed=1`, ...), layered over
                `params`.

        Returns:
            A stream of chunks; the last one carries the whole `GenerationResult` as `chunk.result`.

        Raises:
            TokenBudgetError: the prompt does not fit the server's window, with `budget="raise"`.
        """
        request = self._raw_request(prompt, params, overrides)
        return AsyncStream(self._traced_generate(flows.generate_stream(self._ctx, request), request, stream=True), self)

    @overload
    async def chat_completion(
        self, messages: MessagesInput, *, stream: Literal[False] = ..., **options: Any
    ) -> ChatCompletion: ...

    @overload
    async def chat_completion(
        self, messages: MessagesInput, *, stream: Literal[True], **options: Any
    ) -> AsyncStream[ChatCompletionChunk]: ...

    async def chat_completion(
        self, messages: MessagesInput, *, stream: bool = False, **options: Any
    ) -> ChatCompletion | AsyncStream[ChatCompletionChunk]:
        """The engine's OpenAI-compatible `/v1/chat/completions` (the server renders the template).

        Args:
            messages: A user turn as a string, or a list of `Message`s or `{"role": ..., "content": ...}` dicts.
            stream: Stream the answer as chunks instead of returning it whole.
            **options: The Messages API's fields: `max_tokens`, `temperature`, `top_p`, `seed`, `stop`,
                `frequency_penalty`, `presence_penalty`, `logprobs`, `top_logprobs`, `response_format`, `tools`,
                `tool_choice`, `stream_options`, ...

        Returns:
            The completion, or with `stream=True` a stream of completion chunks.

        Raises:
            ConfigurationError: an option out of range, or one the engine does not take.
            APIError: the server's refusal or a transport failure, after the retries the policy allows.
        """
        body = self._chat_completion_body(messages, stream, options)
        if stream:
            return AsyncStream(
                self._traced_chat_completion(flows.chat_completion_stream(self._ctx, body), body, stream=True), self
            )
        flow = flows.chat_completion(self._ctx, body, options.get("max_tokens"))
        return await self._run(self._traced_chat_completion(flow, body, stream=False))

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
        """Answer as JSON constrained by the engine's grammar and validated: a model instance, or a dict.

        Args:
            messages: A user turn as a string, or a list of `Message`s or `{"role": ..., "content": ...}` dicts.
            schema: A pydantic model class, or a JSON schema as a dict.
            system: The system prompt of this call; default the client's `system_prompt` (messages that start
                with a system message take neither).
            params: Sampling options of this call, layered over the client's `params`.
            **overrides: Single `SamplingParams` fields (`max_new_tokens=64`, `seed=1`, ...), layered over
                `params`.

        Returns:
            An instance of `schema` when it is a model class, else the parsed dict.

        Raises:
            StructuredOutputError: the answer does not validate (it is kept as `raw_text`).
        """
        overrides = {**overrides, "grammar": grammar_for_schema(schema)}
        return parse_json_answer((await self.chat(messages, system=system, params=params, **overrides)).text, schema)

    async def chat_regex(
        self,
        messages: MessagesInput,
        pattern: str,
        *,
        system: str | None = None,
        params: SamplingParams | None = None,
        **overrides: Any,
    ) -> str:
        """Answer constrained to a regular expression (the engine's regex grammar), checked to match it.

        Args:
            messages: A user turn as a string, or a list of `Message`s or `{"role": ..., "content": ...}` dicts.
            pattern: The regular expression the whole answer must match.
            system: The system prompt of this call; default the client's `system_prompt` (messages that start
                with a system message take neither).
            params: Sampling options of this call, layered over the client's `params`.
            **overrides: Single `SamplingParams` fields (`max_new_tokens=64`, `seed=1`, ...), layered over
                `params`.

        Returns:
            The answer's text.

        Raises:
            StructuredOutputError: the answer does not match `pattern` (it is kept as `raw_text`).
        """
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

        Every input is checked before anything is sent. With `return_exceptions`, a failed item's place holds its
        `ZephyrTGIError`; otherwise the first failure cancels what has not started and is raised. The sync client runs
        the batch on threads, so it also works inside a running event loop (Jupyter); the async one on tasks.

        Args:
            conversations: The conversations, each as `chat()` takes `messages`.
            concurrency: Requests in flight at most; default from the server's `max_concurrent_requests`.
            progress: Show a tqdm progress bar when stderr is a terminal.
            return_exceptions: Put a failed item's error in its place instead of raising it.
            system: The system prompt of this call; default the client's `system_prompt` (messages that start
                with a system message take neither).
            params: Sampling options of this call, layered over the client's `params`.
            **overrides: Single `SamplingParams` fields (`max_new_tokens=64`, `seed=1`, ...), layered over
                `params`.

        Returns:
            One `GenerationResult` (or, with `return_exceptions`, `ZephyrTGIError`) per conversation, in order.

        Raises:
            ConfigurationError: `concurrency` below 1.
            ZephyrTGIError: the first failure, without `return_exceptions`.
        """
        requests = [self._chat_request(c, system, params, overrides) for c in conversations]
        workers = check_concurrency(concurrency)
        await self._run(flows.limits_known(self._ctx))
        workers = workers or default_concurrency(self.limits)
        results: list[Outcome | None] = [None] * len(requests)
        next_index = iter(range(len(requests)))

        async def worker(bar: BatchProgress) -> None:
            # A fixed set of workers pulling indexes keeps exactly `workers` requests in flight.
            for index in next_index:
                try:
                    request = requests[index]
                    flow = self._traced_chat(
                        flows.generate(self._ctx, request), request, conversations[index], system, stream=False
                    )
                    outcome: Outcome = await self._run(flow)
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

        Texts longer than the server's input window are scored in windows moving by `stride` tokens, each token
        once, with the tokens before it in its window as context.

        Args:
            text: The text to score.
            stride: Tokens each window moves by; default half a window.

        Returns:
            exp of the mean negative logprob of the text's tokens.

        Raises:
            PrefillUnavailableError: TGI runs without `--enable-prefill-logprobs`.
            ConfigurationError: the server is vLLM or SGLang (their prompt logprobs are not wired yet).
        """
        return await self._run(flows.perplexity(self._ctx, text, stride))

    # -- server ---------------------------------------------------------------------------------------

    async def info(self) -> ServerInfo:
        """The server's `/info`: model, version and limits.

        Returns:
            What the server says about itself, with the engine that serves it.
        """
        return await self._run(flows.info(self._ctx))

    async def health(self) -> bool:
        """True when `/health` answers 200; False while the server is unreachable or unhealthy.

        With several replicas: True when one of them is healthy; each one's outcome is recorded, and the healthy
        ones whose load signal is due have their `/metrics` read (docs/replicas.md)."""
        return await self._run(flows.health(self._ctx))

    async def wait_until_ready(self, timeout: float = 600.0, *, interval: float = 0.5) -> ServerInfo:
        """Poll `/health` until it answers 200, then return `/info`.

        Args:
            timeout: Seconds to wait at most.
            interval: Seconds between two polls.

        Returns:
            The server's `/info`, once it is healthy.

        Raises:
            APITimeoutError: not healthy within `timeout` seconds.
        """
        return await self._run(flows.wait_until_ready(self._ctx, timeout, interval))

    async def tokenize(self, text: str) -> list[TokenSpan]:
        """The server's tokenization of `text` (TGI's `/tokenize`, spans with offsets).

        Args:
            text: The text to tokenize, as sent (no BOS is added).

        Returns:
            One span per token: its id, its text and its character offsets in `text`.

        Raises:
            ConfigurationError: the server is vLLM or SGLang, which give no offsets; `count_tokens()` works there.
        """
        return await self._run(flows.tokenize(self._ctx, text))

    async def metrics(self) -> dict[str, float]:
        """The engine's Prometheus metrics, as {"name{labels}": value}."""
        return await self._run(flows.metrics(self._ctx))

    async def metrics_summary(self) -> MetricsSummary:
        """The engine's metrics in one typed summary (running, waiting, succeeded, prompt and generated tokens)."""
        return await self._run(flows.metrics_summary(self._ctx))

    async def count_tokens(self, text: MessagesInput, *, system: str | None = None) -> int:
        """Tokens the server counts for a prompt, BOS included.

        Uses the local tokenizer when the client has one, else the server's `/tokenize`.

        Args:
            text: A raw prompt, counted as `generate()` sends it, or messages, counted as `chat()` renders them.
            system: The system prompt for messages, as in `chat()`.

        Returns:
            The number of tokens.
        """
        return await self._run(flows.count_tokens(self._ctx, self._prompt_of(text, system)))

    # -- the driver -----------------------------------------------------------------------------------

    async def _run(self, flow: Flow[_T], call: CallId | None = None) -> _T:
        """Drive a flow that emits nothing to its result: perform its effects, throw their errors back in,
        close what it left open. Its requests carry `call`'s id (a new one for a new public call)."""
        if call is None:
            call = CallId()
        opened: list[AsyncStreamBody] = []
        value: Any = None
        error: ZephyrTGIError | None = None
        try:
            while True:
                effect = flow.send(value) if error is None else flow.throw(error)
                error = None
                try:
                    value = await self._perform(effect, opened, call)
                except ZephyrTGIError as exc:
                    value, error = None, exc
        except StopIteration as stop:
            return call.keep(stop.value)  # type: ignore[no-any-return]
        except ZephyrTGIError as exc:
            call.mark(exc)
            raise
        finally:
            flow.close()
            for body in opened:
                await body.close()

    async def _perform(self, effect: Any, opened: list[AsyncStreamBody], call: CallId) -> Any:
        if isinstance(effect, Read):
            return await effect.body.read(effect.until)
        if isinstance(effect, Send):
            response = await self._transport.send(call.stamp(effect.request), effect.until, stream=effect.stream)
            call.heard(response.headers)
            if response.stream is not None:
                opened.append(response.stream)
            return response
        if isinstance(effect, Close):
            await effect.body.close()
            opened.remove(effect.body)
            return None
        if isinstance(effect, Sleep):
            await asyncio.sleep(effect.seconds)
            return None
        if isinstance(effect, Exclusive):
            # One asyncio lock per endpoint (per replica), made on first use inside the running loop.
            lock = self._locks.get(id(effect.endpoint))
            if lock is None:
                lock = self._locks[id(effect.endpoint)] = asyncio.Lock()
            async with lock:
                return await self._run(effect.flow, call)
        raise TypeError(f"unknown effect {effect!r}")
