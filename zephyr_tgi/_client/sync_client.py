"""ZephyrClient: the sync shell. It drives the core's flows over its own transport and does nothing else."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Literal, Self, TypeVar, overload

from pydantic import BaseModel

from .._engines import MetricsSummary
from .._errors import ZephyrTGIError
from .._types import ChatCompletion, ChatCompletionChunk, GenerationResult, ServerInfo, StreamChunk, TokenSpan
from . import flows
from .batch import BatchProgress, check_concurrency, default_concurrency
from .core import NativeRequest
from .flows import EFFECTS, Close, Emit, Exclusive, Flow, Items, Read, Send, Sleep
from .params import Grammar, SamplingParams
from .request_id import CallId
from .structured import SchemaInput, grammar_for_schema, parse_json_answer, parse_regex_answer
from .surface import ClientSurface
from .templates import MessagesInput
from .transport import StreamBody, SyncTransport

if TYPE_CHECKING:
    pass

__all__ = ["Stream", "ZephyrClient"]

_T = TypeVar("_T")
_I = TypeVar("_I")
_M = TypeVar("_M", bound=BaseModel)
Outcome = GenerationResult | ZephyrTGIError


class Stream(Generic[_I]):
    """A streamed answer: iterate it for its items; the request goes out on the first `next()`.

    Use it in a `with` block (or call `close()`) to free its connection when you stop early.

    The client's `*_stream` methods make streams; there is no need to build one.

    Args:
        flow: The flow that produces the stream's items.
        client: The client whose connection pool carries the request.
    """

    __slots__ = ("_call", "_client", "_flow", "_opened", "_queued")

    def __init__(self, flow: Flow[Any], client: ZephyrClient) -> None:
        self._flow: Flow[Any] | None = flow
        self._client = client
        self._opened: list[StreamBody] = []
        self._call = CallId()
        self._queued: list[Any] = []  # items the flow handed out together, not yet taken (last first)

    @property
    def request_id(self) -> str:
        """The stream's `X-Request-Id` (the server's own once it has answered with one)."""
        return self._call.value

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> _I:
        """Drive the flow to the next item it emits, performing its effects on the way."""
        queued = self._queued
        if queued:
            return queued.pop()  # type: ignore[no-any-return]
        flow = self._flow
        if flow is None:
            raise StopIteration
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
                        value = effect.body.read(effect.until)
                    else:
                        value = self._client._perform(effect, self._opened, self._call)
                except ZephyrTGIError as exc:
                    value, error = None, exc
        except BaseException as exc:  # the flow ended (StopIteration) or failed: either way the stream is over
            if isinstance(exc, ZephyrTGIError):
                self._call.mark(exc)
            self.close()
            raise

    def close(self) -> None:
        """Stop reading and free the connection."""
        self._queued.clear()
        flow, self._flow = self._flow, None
        if flow is not None:
            flow.close()
        while self._opened:
            self._opened.pop().close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class ZephyrClient(ClientSurface):
    """A client for Zephyr-7B-alpha served by TGI, vLLM or SGLang: templated chat, typed options and results,
    retries. `engine="auto"` (the default) identifies the server on first use; name it to skip that.

    Use it as a context manager, or call `close()`: it owns one connection pool, which every call reuses.
    """

    def _open(self) -> None:
        self._transport = SyncTransport(self._config.shown_url)
        self._owns_transport = True

    def with_options(self, **changes: Any) -> ZephyrClient:
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
        derived = object.__new__(ZephyrClient)
        derived._configure(self._derived_config(changes), self._endpoint, self._ctx.replicas)
        derived._transport = self._transport
        derived._owns_transport = False
        derived._instrumentation = self._instrumentation
        return derived

    # -- lifecycle ------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (a client made by `with_options()` leaves its parent's open)."""
        if self._owns_transport:
            self._transport.close()

    # -- generation -----------------------------------------------------------------------------------

    def chat(
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
        return self._run(flow)

    def chat_stream(
        self,
        messages: MessagesInput,
        *,
        system: str | None = None,
        params: SamplingParams | None = None,
        **overrides: Any,
    ) -> Stream[StreamChunk]:
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
        return Stream(flow, self)

    def generate(self, prompt: str, *, params: SamplingParams | None = None, **overrides: Any) -> GenerationResult:
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
        return self._run(self._traced_generate(flows.generate(self._ctx, request), request, stream=False))

    def generate_stream(
        self, prompt: str, *, params: SamplingParams | None = None, **overrides: Any
    ) -> Stream[StreamChunk]:
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
        return Stream(self._traced_generate(flows.generate_stream(self._ctx, request), request, stream=True), self)

    @overload
    def chat_completion(
        self, messages: MessagesInput, *, stream: Literal[False] = ..., **options: Any
    ) -> ChatCompletion: ...

    @overload
    def chat_completion(
        self, messages: MessagesInput, *, stream: Literal[True], **options: Any
    ) -> Stream[ChatCompletionChunk]: ...

    def chat_completion(
        self, messages: MessagesInput, *, stream: bool = False, **options: Any
    ) -> ChatCompletion | Stream[ChatCompletionChunk]:
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
            return Stream(
                self._traced_chat_completion(flows.chat_completion_stream(self._ctx, body), body, stream=True), self
            )
        flow = flows.chat_completion(self._ctx, body, options.get("max_tokens"))
        return self._run(self._traced_chat_completion(flow, body, stream=False))

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
        return parse_json_answer(self.chat(messages, system=system, params=params, **overrides).text, schema)

    def chat_regex(
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
        self._run(flows.limits_known(self._ctx))
        workers = workers or default_concurrency(self.limits)
        results: list[Outcome | None] = [None] * len(requests)
        with BatchProgress(len(requests), enabled=progress) as bar, ThreadPoolExecutor(workers) as pool:
            futures: dict[Future[GenerationResult], int] = {
                pool.submit(self._run, self._batch_item(requests[index], conversations[index], system)): index
                for index in range(len(requests))
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

    def _batch_item(
        self, request: NativeRequest, messages: MessagesInput, system: str | None
    ) -> Flow[GenerationResult]:
        return self._traced_chat(flows.generate(self._ctx, request), request, messages, system, stream=False)

    def perplexity(self, text: str, *, stride: int | None = None) -> float:
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
        return self._run(flows.perplexity(self._ctx, text, stride))

    # -- server ---------------------------------------------------------------------------------------

    def info(self) -> ServerInfo:
        """The server's `/info`: model, version and limits.

        Returns:
            What the server says about itself, with the engine that serves it.
        """
        return self._run(flows.info(self._ctx))

    def health(self) -> bool:
        """True when `/health` answers 200; False while the server is unreachable or unhealthy.

        With several replicas: True when one of them is healthy; each one's outcome is recorded, and the healthy
        ones whose load signal is due have their `/metrics` read (docs/replicas.md)."""
        return self._run(flows.health(self._ctx))

    def wait_until_ready(self, timeout: float = 600.0, *, interval: float = 0.5) -> ServerInfo:
        """Poll `/health` until it answers 200, then return `/info`.

        Args:
            timeout: Seconds to wait at most.
            interval: Seconds between two polls.

        Returns:
            The server's `/info`, once it is healthy.

        Raises:
            APITimeoutError: not healthy within `timeout` seconds.
        """
        return self._run(flows.wait_until_ready(self._ctx, timeout, interval))

    def tokenize(self, text: str) -> list[TokenSpan]:
        """The server's tokenization of `text` (TGI's `/tokenize`, spans with offsets).

        Args:
            text: The text to tokenize, as sent (no BOS is added).

        Returns:
            One span per token: its id, its text and its character offsets in `text`.

        Raises:
            ConfigurationError: the server is vLLM or SGLang, which give no offsets; `count_tokens()` works there.
        """
        return self._run(flows.tokenize(self._ctx, text))

    def metrics(self) -> dict[str, float]:
        """The engine's Prometheus metrics, as {"name{labels}": value}."""
        return self._run(flows.metrics(self._ctx))

    def metrics_summary(self) -> MetricsSummary:
        """The engine's metrics in one typed summary (running, waiting, succeeded, prompt and generated tokens)."""
        return self._run(flows.metrics_summary(self._ctx))

    def count_tokens(self, text: MessagesInput, *, system: str | None = None) -> int:
        """Tokens the server counts for a prompt, BOS included.

        Uses the local tokenizer when the client has one, else the server's `/tokenize`.

        Args:
            text: A raw prompt, counted as `generate()` sends it, or messages, counted as `chat()` renders them.
            system: The system prompt for messages, as in `chat()`.

        Returns:
            The number of tokens.
        """
        return self._run(flows.count_tokens(self._ctx, self._prompt_of(text, system)))

    # -- the driver -----------------------------------------------------------------------------------

    def _run(self, flow: Flow[_T], call: CallId | None = None) -> _T:
        """Drive a flow that emits nothing to its result: perform its effects, throw their errors back in,
        close what it left open. Its requests carry `call`'s id (a new one for a new public call)."""
        if call is None:
            call = CallId()
        opened: list[StreamBody] = []
        value: Any = None
        error: ZephyrTGIError | None = None
        try:
            while True:
                effect = flow.send(value) if error is None else flow.throw(error)
                error = None
                try:
                    value = self._perform(effect, opened, call)
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
                body.close()

    def _perform(self, effect: Any, opened: list[StreamBody], call: CallId) -> Any:
        if isinstance(effect, Read):
            return effect.body.read(effect.until)
        if isinstance(effect, Send):
            response = self._transport.send(call.stamp(effect.request), effect.until, stream=effect.stream)
            call.heard(response.headers)
            if response.stream is not None:
                opened.append(response.stream)
            return response
        if isinstance(effect, Close):
            effect.body.close()
            opened.remove(effect.body)
            return None
        if isinstance(effect, Sleep):
            time.sleep(effect.seconds)
            return None
        if isinstance(effect, Exclusive):
            with effect.endpoint.lock:
                return self._run(effect.flow, call)
        raise TypeError(f"unknown effect {effect!r}")


def _outcome(future: Future[GenerationResult]) -> Outcome:
    """A finished future's result, or the ZephyrTGIError it raised (anything else is a bug: re-raised)."""
    error = future.exception()
    if error is None:
        return future.result()
    if isinstance(error, ZephyrTGIError):
        return error
    raise error
