"""The sans-I/O core: every public call as a generator flow of effects, driven by the sync or async shell.

A flow yields what it needs done (`Send` a request, `Read` a stream, `Sleep`, `Emit` a chunk to the caller, run
a sub-flow `Exclusive`ly) and gets the outcome back, or the `ZephyrTGIError` it raised thrown in. Everything
else (limits, the token budget, the retry plan with its deadline, the stream session with its keep-alive-proof
gap timer, draining, error mapping, parsing) is written here once, for both clients, in the way httpx's
`auth_flow` is written once for its two clients.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx2

from .._engines import ENGINES, IDENTIFY_ORDER, ChunkAssembler, Engine, MetricsSummary, summarize
from .._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    ConfigurationError,
    MalformedResponseError,
    Redactor,
    ZephyrTGIError,
)
from .._retry import RetryPolicy, is_retryable, log_retry, next_wait
from .._timeout import CallTimes, RouteKind, call_times
from .._types import ChatCompletion, ChatCompletionChunk, GenerationResult, ServerInfo, StreamChunk, TokenSpan
from .budget import fit_budget, needs_count
from .core import ClientConfig, Endpoint, NativeRequest, encode_json, native_request, parse_metrics
from .params import Limits, check_limits
from .perplexity import chunk_text, in_characters, perplexity_of, plan_windows, scored_logprobs
from .replicas import LOAD_READ_TIMEOUT, Lease, Replica, ReplicaSet, fails_over_at_once, waiting_in
from .shaping import parse_answer, parse_chat_chunk
from .sse import SSEDecoder
from .transport import WireRequest, WireResponse

__all__ = [
    "Close",
    "Context",
    "Effect",
    "Emit",
    "Exclusive",
    "Flow",
    "Items",
    "Read",
    "Send",
    "Sleep",
]

logger = logging.getLogger("zephyr_tgi")
_T = TypeVar("_T")

# --- effects --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send a request by `until`; the outcome is a `WireResponse` (its body left open when `stream`)."""

    request: WireRequest
    until: float | None
    stream: bool = False


class Read:
    """The next bytes of an open stream body by `until` (b"" at its end)."""

    # A plain class, not a frozen dataclass: one is made per packet of a stream, and frozen init is slow.
    __slots__ = ("body", "until")

    def __init__(self, body: Any, until: float | None) -> None:
        self.body = body
        self.until = until


@dataclass(frozen=True, slots=True)
class Close:
    """Close an open stream body."""

    body: Any


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait before the next attempt (`attempt` is the number of the one that failed with `cause`)."""

    seconds: float
    attempt: int = 0
    cause: ZephyrTGIError | None = None


class Emit:
    """Hand one item of a stream to the caller."""

    __slots__ = ("item",)  # one per token: kept as light as a Python object gets

    def __init__(self, item: Any) -> None:
        self.item = item


class Items:
    """Hand several items of a stream to the caller, in order: the driver gives them out one per `next()`
    before it resumes the flow (the events of one packet: no flow step per token)."""

    __slots__ = ("items",)

    def __init__(self, items: list[Any]) -> None:
        self.items = items


@dataclass(frozen=True, slots=True)
class Exclusive:
    """Run a sub-flow while holding `endpoint`'s lock (one `/info` for many concurrent first calls); each
    replica has its own, so one replica's first `/info` does not hold up the others."""

    flow: Generator[Any, Any, Any]
    endpoint: Endpoint


Effect = Send | Read | Close | Sleep | Emit | Items | Exclusive
Flow = Generator[Any, Any, _T]
# What a driver performs; anything else a flow yields is for the caller: `Items` several items, `Emit` one that
# could be mistaken for an effect, anything else itself (a lone stream chunk is yielded as it is).
EFFECTS = frozenset({Send, Read, Close, Sleep, Exclusive})


def items_of(effect: Any) -> list[Any]:
    """The items for the caller in something a flow yielded that is not an effect."""
    kind = effect.__class__
    if kind is Items:
        items: list[Any] = effect.items
        return items
    return [effect.item if kind is Emit else effect]


@dataclass(slots=True)
class Context:
    """What a flow works with: the client's settings and what it knows of its server.

    With several replicas, the client's context holds their `ReplicaSet`, and each attempt of the retry plan
    runs with a context of its own for the replica it chose (`on()`): its URL, its `Endpoint`, its lease.
    """

    config: ClientConfig
    endpoint: Endpoint
    rng: random.Random = field(default_factory=random.Random)
    replicas: ReplicaSet | None = None
    session: str | None = None  # a Conversation's id: sent as X-Session-ID, and keeps it on one replica
    url: str = ""  # where requests go: the config's URL, or the chosen replica's
    shown_url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    lease: Lease | None = None

    def __post_init__(self) -> None:
        if not self.url:
            self.url, self.shown_url = self.config.base_url, self.config.shown_url
        if not self.headers:
            headers = self.config.headers
            self.headers = headers if self.session is None else {**headers, "x-session-id": self.session}

    @property
    def engine(self) -> Engine:
        """The engine serving the endpoint (TGI until `auto` has identified one)."""
        return self.endpoint.engine or ENGINES["tgi"]

    def for_session(self, session: str) -> Context:
        """This context for the requests of one session (a conversation)."""
        return Context(self.config, self.endpoint, self.rng, self.replicas, session)

    def on(self, replica: Replica, lease: Lease | None = None) -> Context:
        """This context for one attempt on `replica`."""
        return Context(
            self.config,
            replica.endpoint,
            self.rng,
            self.replicas,
            self.session,
            replica.url,
            replica.shown_url,
            self.headers,
            lease,
        )


def relay(flow: Flow[_T], rewrite: Callable[[Any], Any]) -> Flow[_T]:
    """`flow`, each thing it yields (effect or item) passed through `rewrite` on its way to the driver, and
    each outcome or error passed back to it: the way to watch or amend a flow without knowing its steps."""
    outcome: Any = None
    failure: ZephyrTGIError | None = None
    try:
        while True:
            try:
                effect = flow.send(outcome) if failure is None else flow.throw(failure)
            except StopIteration as stop:
                result: _T = stop.value
                return result
            failure = None
            try:
                outcome = yield rewrite(effect)
            except ZephyrTGIError as exc:
                failure = exc
    finally:
        flow.close()


def tap(flow: Flow[_T], on_item: Callable[[Any], None]) -> Flow[_T]:
    """`flow`, with `on_item` called on each item it emits before the caller gets it."""

    def watch(effect: Any) -> Any:
        if effect.__class__ not in EFFECTS:
            for item in items_of(effect):
                on_item(item)
        return effect

    return relay(flow, watch)


# --- one exchange and the retry plan ----------------------------------------------------------------------


def exchange(
    ctx: Context, method: str, path: str, body: bytes | None, times: CallTimes, *, stream: bool = False
) -> Flow[WireResponse]:
    """One request; an error status becomes its exception."""
    response = yield from probe(ctx, method, path, body, times, stream=stream)
    if response.status >= 400:
        raise ctx.engine.error_for(response.status, response.body, response.headers, ctx.config.redactor)
    return response


def probe(
    ctx: Context, method: str, path: str, body: bytes | None, times: CallTimes, *, stream: bool = False
) -> Flow[WireResponse]:
    """One request, whatever status it is answered with."""
    description = f"{method} {path}"
    shown = ctx.shown_url if ctx.replicas is not None else None
    request = WireRequest(method, ctx.url + path, body, ctx.headers, times.httpx, description, shown)
    response: WireResponse = yield Send(request, times.until(), stream)
    return response


def retrying(
    ctx: Context, description: str, times: CallTimes, attempt: Callable[[Context], Flow[_T]], *, hold: bool = False
) -> Flow[_T]:
    """`attempt(ctx)` under the retry policy; every attempt and wait within the call's one deadline.

    With several replicas each attempt goes to the replica `ReplicaSet.choose` gives, and the policy's
    `max_attempts` counts attempts on all of them. A failure that says the replica cannot serve now is tried on
    another one at once when one is available; otherwise the policy's wait applies. With `hold`, a successful
    attempt keeps its lease (a stream stays in flight until it ends): the result's context releases it.
    """
    if ctx.replicas is not None:
        return (yield from _retrying_replicas(ctx, ctx.replicas, description, times, attempt, hold))
    number = 1
    while True:
        try:
            return (yield from attempt(ctx))
        except APIError as exc:
            policy = ctx.config.retry
            wait = next_wait(policy, exc, number, times.deadline_at, ctx.rng)
            if wait is None:
                raise
            log_retry(description, number, policy, exc, wait)
            yield Sleep(wait, number, exc)  # what failed rides along, for telemetry's retry events
            number += 1


def _retrying_replicas(
    ctx: Context,
    replicas: ReplicaSet,
    description: str,
    times: CallTimes,
    attempt: Callable[[Context], Flow[_T]],
    hold: bool,
) -> Flow[_T]:
    number = 1
    failed: list[Replica] = []
    # A retry plan refreshes at most one stale load reading, before it chooses: one /metrics of at most
    # LOAD_READ_TIMEOUT and a quarter of the time left, per replica every `load_refresh` seconds (claimed).
    if ctx.session is None:
        for stale in replicas.claim_load_reads(limit=1):
            yield from read_load(ctx, replicas, stale, times.deadline_at)
    while True:
        replica = replicas.choose(ctx.session, failed)
        lease = replicas.acquire(replica)
        try:
            result = yield from attempt(ctx.on(replica, lease))
        except APIError as exc:
            replicas.release(lease, exc)
            policy = ctx.config.retry
            failed.append(replica)
            at_once = fails_over_at_once(exc) and replicas.others_available(replica, failed)
            if at_once:
                wait: float | None = _failover_wait(policy, exc, number, times.deadline_at)
            else:
                wait = next_wait(policy, exc, number, times.deadline_at, ctx.rng)
            if wait is None:
                raise
            log_retry(f"{description} on {replica.shown_url}", number, policy, exc, wait)
            # A failover waits 0 s, and still goes through Sleep: telemetry records each retry from it.
            yield Sleep(wait, number, exc)
            number += 1
            continue
        except BaseException:
            replicas.abandon(lease)  # our own error (a ConfigurationError) or the caller closed the flow
            raise
        if not hold:
            replicas.release(lease)
        return result


def read_load(ctx: Context, replicas: ReplicaSet, replica: Replica, deadline_at: float | None) -> Flow[None]:
    """One `GET /metrics` on `replica` for its engine's waiting count, recorded in `replicas`. It never fails:
    an error status, a timeout or a body without the metric leaves the signal unknown. It takes at most
    LOAD_READ_TIMEOUT, and at most a quarter of the time left to the call's deadline, so the call keeps the rest.
    Not retried, not counted in flight, and no outcome about the replica's health."""
    budget = LOAD_READ_TIMEOUT
    now = time.monotonic()
    if deadline_at is not None:
        budget = min(budget, (deadline_at - now) / 4)
    if budget <= 0.001:
        return  # no time to spare: the older reading (if any) stays, aging; the claim waits an interval
    until = now + budget
    timeout = httpx2.Timeout(budget)
    here = ctx.on(replica)
    request = WireRequest("GET", replica.url + "/metrics", None, here.headers, timeout, "GET /metrics", here.shown_url)
    waiting: float | None = None
    try:
        response: WireResponse = yield Send(request, until)
        if response.status == 200:
            waiting = waiting_in(parse_metrics(response.body.decode("utf-8", "replace")))
    except ZephyrTGIError as exc:
        logger.debug("load signal of %s unknown: %s: %s", replica.shown_url, type(exc).__name__, exc)
    replicas.record_load(replica, waiting)


def _failover_wait(policy: RetryPolicy, exc: APIError, number: int, deadline_at: float | None) -> float | None:
    """0 (go to another replica now) when the policy allows another attempt of this failure before the
    deadline, else None. A refused connection goes to another replica even under `retry_refused=False`: that
    setting makes a wrong URL fail at once, and another replica is another URL."""
    refused = isinstance(exc, APIConnectionError) and exc.connect_failed and policy.retry_connection_errors
    if number >= policy.max_attempts or not (refused or is_retryable(policy, exc)):
        return None
    if deadline_at is not None and time.monotonic() >= deadline_at:
        return None
    return 0.0


def release(ctx: Context, error: APIError | None = None) -> None:
    """End the lease a held attempt's context has (a stream that ended, or failed after its first token)."""
    if ctx.lease is not None and ctx.replicas is not None:
        ctx.replicas.release(ctx.lease, error)


def abandon(ctx: Context) -> None:
    """End a held lease without an outcome (the caller stopped reading)."""
    if ctx.lease is not None and ctx.replicas is not None:
        ctx.replicas.abandon(ctx.lease)


def unary(ctx: Context, kind: RouteKind, method: str, path: str, body: bytes | None = None) -> Flow[WireResponse]:
    """A request whose answer is read whole, retried under the policy."""
    times = call_times(ctx.config.timeout, kind)
    return (yield from retrying(ctx, f"{method} {path}", times, lambda c: exchange(c, method, path, body, times)))


# --- what a generation needs first: limits and token counts ---------------------------------------------

_INFO_MISSING_STATUSES = (404, 405, 501)


def info_attempt(ctx: Context, times: CallTimes) -> Flow[ServerInfo]:
    """One read of the engine's limits (`/info`, `/v1/models`); remembers them, or that there are none to read."""
    if ctx.endpoint.engine is None:
        known: ServerInfo | None = yield Exclusive(_identify(ctx, times), ctx.endpoint)
        if known is not None:
            return known
    engine = ctx.engine
    try:
        response = yield from exchange(ctx, "GET", engine.info_path, None, times)
        info = engine.parse_info(response.body)
    except APIError as exc:
        if exc.status_code in _INFO_MISSING_STATUSES or isinstance(exc, MalformedResponseError):
            ctx.endpoint.info_unavailable = True
        raise
    ctx.endpoint.remember(info)
    return info


def _identify(ctx: Context, times: CallTimes) -> Flow[ServerInfo | None]:
    """`engine="auto"`: ask each engine's own route until one answers in its shape; TGI when none does.

    TGI goes first: a TGI's `/info` both identifies it and gives its limits, so a TGI costs no extra request.
    """
    endpoint = ctx.endpoint
    if endpoint.engine is not None:  # identified by another call while this one waited for the lock
        return None
    for engine in IDENTIFY_ORDER:
        response = yield from probe(ctx, "GET", engine.identify_path, None, times)
        if response.status >= 500 or response.status in (401, 403, 429):
            # The server is failing, starting or refusing us: say so, rather than guess an engine.
            raise engine.error_for(response.status, response.body, response.headers, ctx.config.redactor)
        if engine.identifies(response.status, response.body):
            endpoint.engine = engine
            logger.debug("%s is served by %s", ctx.shown_url, engine.title)
            if engine.identify_path != engine.info_path:
                return None
            try:
                info = engine.parse_info(response.body)
            except MalformedResponseError:
                endpoint.info_unavailable = True
                return None
            endpoint.remember(info)
            return info
    endpoint.engine = ENGINES["tgi"]  # a TGI whose /info is missing or not in its shape: TGI's defaults apply
    endpoint.info_unavailable = True
    return None


def _settle_limits(ctx: Context, times: CallTimes) -> Flow[None]:
    if ctx.endpoint.limits_settled:  # another call settled them while this one waited for the lock
        return
    try:
        if ctx.endpoint.engine is None:
            yield from _identify(ctx, times)
            if ctx.endpoint.limits_settled:
                if ctx.endpoint.info_unavailable:
                    _warn_no_info(ctx, "no engine's identification route answered in that engine's shape")
                return
        yield from info_attempt(ctx, times)
    except APIError as exc:
        if not ctx.endpoint.info_unavailable:
            raise  # the server is unreachable or failing: the attempt fails and the retry plan decides
        _warn_no_info(ctx, exc.message)


def _warn_no_info(ctx: Context, why: str) -> None:
    # Said once: the endpoint is settled from now on and no later call asks again.
    logger.warning(
        "%s has no usable %s (%s): TGI's default limits apply to this client's checks",
        ctx.shown_url,
        ctx.engine.info_path,
        why,
    )


def ensure_limits(ctx: Context, times: CallTimes) -> Flow[None]:
    """Read `/info` once per endpoint, within the calling attempt and its deadline."""
    if not ctx.endpoint.limits_settled:
        yield Exclusive(_settle_limits(ctx, times), ctx.endpoint)


def tokenize_attempt(ctx: Context, text: str, times: CallTimes) -> Flow[list[TokenSpan]]:
    """TGI's `/tokenize` spans, from the serving engine's tokenize route(s)."""
    steps = ctx.engine.span_exchange(text)
    answer: bytes | None = None
    try:
        while True:
            path, body = steps.send(answer)  # type: ignore[arg-type]  # the first send must be None
            response = yield from exchange(ctx, "POST", path, body, times)
            answer = response.body
    except StopIteration as done:
        spans: list[TokenSpan] = done.value
        return spans


def count_attempt(ctx: Context, prompt: str, times: CallTimes) -> Flow[int]:
    """Tokens TGI counts for `prompt`, BOS included: the local tokenizer when there is one, else `/tokenize`."""
    tokenizer = ctx.config.tokenizer
    if tokenizer is not None:
        return tokenizer.count(prompt)
    yield from ensure_limits(ctx, times)  # which engine counts, and at which route
    engine = ctx.engine
    response = yield from exchange(ctx, "POST", engine.tokenize_path, engine.tokenize_body(prompt), times)
    return engine.parse_count(response.body)  # BOS included, as a generation counts it


def prepare(
    ctx: Context, request: NativeRequest, times: CallTimes, *, stream: bool, input_tokens: int | None = None
) -> Flow[NativeRequest]:
    """Limits known, the budget applied (counting only when a cheap bound cannot settle it), limits checked."""
    known = ctx.endpoint.engine
    if known is not None:
        known.check_params(request.params)  # before anything is sent
    yield from ensure_limits(ctx, times)
    engine = ctx.engine
    if engine is not known:  # identified just now
        engine.check_params(request.params)
    limits = ctx.endpoint.current_limits()
    if engine.needs_max_tokens and request.params.max_new_tokens is None:
        # The engine's own default is a handful of tokens; TGI's is the rest of the window: say it.
        tokens = input_tokens if input_tokens is not None else (yield from count_attempt(ctx, request.prompt, times))
        input_tokens = tokens
        rest = max(1, limits.max_total_tokens - tokens)
        request = request.with_params(request.params.model_copy(update={"max_new_tokens": rest}))
    policy = ctx.config.budget
    if policy != "off" and needs_count(request.prompt, request.params, limits):
        tokens = input_tokens if input_tokens is not None else (yield from count_attempt(ctx, request.prompt, times))
        params, warning = fit_budget(tokens, request.params, limits, policy)
        if warning is not None:
            logger.warning(warning)
        if params is not request.params:
            request = request.with_params(params)
    check_limits(request.params, limits, stream=stream)
    return request


class _Prepared:
    """A request prepared once per call, whatever the number of attempts (again for another replica: each has
    its own limits)."""

    __slots__ = ("_endpoint", "_input_tokens", "_request", "_stream", "_times", "done")

    def __init__(self, request: NativeRequest, times: CallTimes, *, stream: bool, input_tokens: int | None) -> None:
        self._request, self._times, self._stream = request, times, stream
        self._input_tokens = input_tokens
        self._endpoint: Endpoint | None = None
        self.done: NativeRequest | None = None

    def get(self, ctx: Context) -> Flow[NativeRequest]:
        if self.done is None or self._endpoint is not ctx.endpoint:
            self.done = yield from prepare(
                ctx, self._request, self._times, stream=self._stream, input_tokens=self._input_tokens
            )
            self._endpoint = ctx.endpoint
        return self.done


# --- the routes -----------------------------------------------------------------------------------------


def generate(
    ctx: Context, request: NativeRequest, *, times: CallTimes | None = None, input_tokens: int | None = None
) -> Flow[GenerationResult]:
    """`POST /generate`: one result (`times` when it is part of a larger call; `input_tokens` when counted)."""
    if times is None:
        times = call_times(ctx.config.timeout, "generate", max_new_tokens=request.params.max_new_tokens)
    prepared = _Prepared(request, times, stream=False, input_tokens=input_tokens)

    def attempt(ctx: Context) -> Flow[GenerationResult]:
        ready = yield from prepared.get(ctx)
        engine = ctx.engine
        body = engine.generate_body(ready, stream=False)
        response = yield from exchange(ctx, "POST", engine.generate_path, body, times)
        return engine.parse_generation(response.body, ready)

    return (yield from retrying(ctx, f"POST {ctx.engine.generate_path}", times, attempt))


def chat_completion(ctx: Context, payload: dict[str, Any], max_tokens: int | None) -> Flow[ChatCompletion]:
    """`POST /v1/chat/completions` without streaming."""
    times = call_times(ctx.config.timeout, "generate", max_new_tokens=max_tokens)

    def attempt(ctx: Context) -> Flow[ChatCompletion]:
        body = yield from _chat_body(ctx, payload, times)
        response = yield from exchange(ctx, "POST", "/v1/chat/completions", body, times)
        return parse_answer(ChatCompletion, response.body, what="chat completion")

    return (yield from retrying(ctx, "POST /v1/chat/completions", times, attempt))


def _chat_body(ctx: Context, payload: dict[str, Any], times: CallTimes) -> Flow[bytes]:
    """The chat body for the engine serving the endpoint (identified first under `auto`)."""
    if ctx.endpoint.engine is None:
        yield Exclusive(_identify(ctx, times), ctx.endpoint)
    return encode_json(ctx.engine.chat_body(payload))


def info(ctx: Context) -> Flow[ServerInfo]:
    """`GET /info`, retried."""
    times = call_times(ctx.config.timeout, "admin")
    return (yield from retrying(ctx, "GET /info", times, lambda c: info_attempt(c, times)))


def tokenize(ctx: Context, text: str) -> Flow[list[TokenSpan]]:
    """TGI's token spans (BOS first, byte offsets) on every engine, retried."""
    if not isinstance(text, str):
        raise ConfigurationError(f"text must be a string, got {type(text).__name__}")
    times = call_times(ctx.config.timeout, "admin")
    engine = yield from _engine_known(ctx, times)
    path = engine.tokenize_path
    return (yield from retrying(ctx, f"POST {path}", times, lambda c: tokenize_attempt(c, text, times)))


def token_ids(ctx: Context, text: str) -> Flow[list[int]]:
    """The server's token ids of `text` without BOS, retried: TGI's spans, or the engine's tokenize ids."""
    times = call_times(ctx.config.timeout, "admin")
    engine = yield from _engine_known(ctx, times)
    if engine.name == "tgi":
        return [span.id for span in without_bos((yield from tokenize(ctx, text)))]
    body = engine.tokenize_body(text, add_special_tokens=False)

    def attempt(ctx: Context) -> Flow[list[int]]:
        response = yield from exchange(ctx, "POST", engine.tokenize_path, body, times)
        return engine.parse_ids(response.body)

    return (yield from retrying(ctx, f"POST {engine.tokenize_path}", times, attempt))


def _engine_known(ctx: Context, times: CallTimes) -> Flow[Engine]:
    """The engine serving the call (identified first under `auto`, retried). All replicas of a client are
    expected to serve the same engine: the one the chosen replica runs is taken for all."""
    if ctx.replicas is None:
        if ctx.endpoint.engine is not None:
            return ctx.engine
    elif (engine := ctx.replicas.choose(ctx.session).endpoint.engine) is not None:
        return engine  # known for the replica the call would go to: no attempt needed
    return (yield from retrying(ctx, "identify the engine", times, lambda c: _identified(c, times)))


def _identified(ctx: Context, times: CallTimes) -> Flow[Engine]:
    yield from ensure_limits(ctx, times)
    return ctx.engine


def count_tokens(ctx: Context, prompt: str) -> Flow[int]:
    """Tokens of a prompt, retried when counted by the server."""
    times = call_times(ctx.config.timeout, "admin")
    return (yield from retrying(ctx, "POST /tokenize", times, lambda c: count_attempt(c, prompt, times)))


def metrics(ctx: Context) -> Flow[dict[str, float]]:
    """`GET /metrics`, parsed."""
    response = yield from unary(ctx, "admin", "GET", "/metrics")
    return parse_metrics(response.body.decode("utf-8", "replace"))


def metrics_summary(ctx: Context) -> Flow[MetricsSummary]:
    """`GET /metrics` as one typed summary in the serving engine's names."""
    times = call_times(ctx.config.timeout, "admin")
    engine = yield from _engine_known(ctx, times)
    return summarize(engine.name, engine.summary_names, (yield from metrics(ctx)))


def health(ctx: Context) -> Flow[bool]:
    """One `GET /health` (no retries: the answer is about now); False when unreachable or unhealthy.

    With several replicas: one `GET /health` per replica, each outcome recorded (a 200 brings an ejected
    replica back at once, anything else ejects it); True when at least one is healthy. Then one `/metrics` per
    healthy replica whose load signal is due (`read_load`: bounded, never a failure of the call).
    """
    times = call_times(ctx.config.timeout, "admin")
    if ctx.replicas is None:
        try:
            yield from exchange(ctx, "GET", "/health", None, times)
        except APIError:
            return False
        return True
    replicas = ctx.replicas
    healthy = False
    for replica in replicas.replicas:
        try:
            yield from exchange(ctx.on(replica), "GET", "/health", None, times)
        except APIError as exc:
            replicas.mark_health(replica, False, f"GET /health: {type(exc).__name__}: {exc}")
            continue
        replicas.mark_health(replica, True)
        healthy = True
    for stale in replicas.claim_load_reads():  # the healthy ones whose reading is due: at most one per interval
        yield from read_load(ctx, replicas, stale, times.deadline_at)
    return healthy


def wait_until_ready(ctx: Context, timeout: float, interval: float) -> Flow[ServerInfo]:
    """Poll `/health` until it answers 200, then read `/info`; `APITimeoutError` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (yield from health(ctx)):
        if time.monotonic() + interval > deadline:
            raise APITimeoutError(f"{ctx.shown_url} was not healthy within {timeout:g} s")
        yield Sleep(interval)
        interval = min(interval * 1.5, 5.0)
    return (yield from info(ctx))


def perplexity(ctx: Context, text: str, stride: int | None) -> Flow[float]:
    """Perplexity of `text` from prefill logprobs, scored in windows when it is longer than the input window."""
    if not isinstance(text, str) or not text:
        raise ConfigurationError("text must be a non-empty string")
    if stride is not None and (not isinstance(stride, int) or stride < 1):
        raise ConfigurationError(f"stride must be a positive integer, got {stride!r}")
    limits = yield from limits_known(ctx)
    engine = yield from _engine_known(ctx, call_times(ctx.config.timeout, "admin"))
    tokenizer = ctx.config.tokenizer
    if tokenizer is not None:
        spans = tokenizer.encode_spans(text, add_bos=False)
    else:
        spans = in_characters(text, without_bos((yield from tokenize(ctx, text))))
    window = limits.max_input_tokens - 2  # BOS, and a token of slack for re-tokenizing
    # One deadline for the whole call when the caller set one; otherwise each window is a request of its own.
    shared = call_times(ctx.config.timeout, "generate") if "deadline" in ctx.config.timeout.model_fields_set else None
    logprobs: list[float] = []
    for part in plan_windows(len(spans), window, stride or max(1, window // 2)):
        overrides = dict(engine.scoring_overrides)
        request = native_request(ctx.config, ctx.endpoint, chunk_text(text, spans, part), None, overrides)
        prompt_logprobs = yield from score(ctx, request, times=shared)
        logprobs.extend(scored_logprobs(prompt_logprobs, part, engine.prefill_hint))
    return perplexity_of(logprobs)


def score(ctx: Context, request: NativeRequest, *, times: CallTimes | None) -> Flow[list[float | None]]:
    """One logprob per prompt token (BOS first), from the engine's scoring route, retried."""
    if times is None:
        times = call_times(ctx.config.timeout, "generate", max_new_tokens=request.params.max_new_tokens)
    prepared = _Prepared(request, times, stream=False, input_tokens=None)

    def attempt(ctx: Context) -> Flow[list[float | None]]:
        ready = yield from prepared.get(ctx)
        engine = ctx.engine
        response = yield from exchange(ctx, "POST", engine.scoring_path, engine.scoring_body(ready), times)
        return engine.parse_prompt_logprobs(response.body, ready)

    return (yield from retrying(ctx, f"POST {ctx.engine.scoring_path}", times, attempt))


def without_bos(spans: list[TokenSpan]) -> list[TokenSpan]:
    """`/tokenize` spans without TGI's leading BOS entry."""
    return spans[1:] if spans and spans[0].id == 1 and spans[0].stop == 0 else spans


def limits_known(ctx: Context) -> Flow[Limits]:
    """Settle the server's limits before a batch fans out, and return them (a failure leaves TGI's defaults).

    With several replicas: those of the replica the call goes to (a session's own).
    """
    times = call_times(ctx.config.timeout, "admin")
    endpoint = ctx.endpoint if ctx.replicas is None else ctx.replicas.choose(ctx.session).endpoint
    if endpoint.limits_settled:  # nothing to ask: no attempt
        return endpoint.current_limits()
    try:
        return (yield from retrying(ctx, "GET /info", times, lambda c: _limits_of(c, times)))
    except APIError:
        return ctx.endpoint.current_limits()  # the batch's own requests report a real problem


def _limits_of(ctx: Context, times: CallTimes) -> Flow[Limits]:
    yield from ensure_limits(ctx, times)
    return ctx.endpoint.current_limits()


# --- streams --------------------------------------------------------------------------------------------


class _StreamSession:
    """An open SSE body: events decoded in linear time, each wait for an event bounded by the gap timer and the
    deadline. The timer starts when the wait starts, so a slow consumer is not blamed on the server, and bytes
    that complete no event (keep-alive comments, a trickle) do not restart it."""

    __slots__ = ("_times", "body", "decoder", "path", "pending")

    def __init__(self, body: Any, times: CallTimes, path: str) -> None:
        self.body = body
        self.path = path
        self.decoder = SSEDecoder()
        self._times = times
        self.pending: deque[bytes] = deque()  # events decoded and not yet handed out

    def next_event(self) -> Flow[bytes | None]:
        """The next event's data; None at the end of the body."""
        pending = self.pending
        if not pending:
            until = self._times.until()
            while not pending:
                try:
                    data = yield Read(self.body, until)
                except APITimeoutError as exc:
                    raise self.timeout_error(until) from exc
                if not data:
                    return None
                pending.extend(self.decoder.feed(data))
        return pending.popleft()

    def timeout_error(self, until: float | None) -> APITimeoutError:
        """The error for a wait that ended at `until` without an event."""
        times = self._times
        if times.deadline_at is not None and until == times.deadline_at:
            return APITimeoutError(f"the call's deadline passed while streaming POST {self.path}")
        return APITimeoutError(
            f"no event on POST {self.path} for {times.read:g} s (the read timeout; keep-alive comments do not count)"
        )

    def drain(self) -> Flow[None]:
        """Read what is left of a finished stream briefly, so the connection can be reused."""
        until = time.monotonic() + _DRAIN_SECONDS
        if self._times.deadline_at is not None:
            until = min(until, self._times.deadline_at)
        try:
            while (yield Read(self.body, until)):
                pass
        except ZephyrTGIError:
            pass  # the connection is just not reused
        yield Close(self.body)


_DRAIN_SECONDS = 0.5


def _open_stream(ctx: Context, path: str, body: bytes, times: CallTimes) -> Flow[_StreamSession]:
    response = yield from exchange(ctx, "POST", path, body, times, stream=True)
    return _StreamSession(response.stream, times, path)


def generate_stream(ctx: Context, request: NativeRequest, *, input_tokens: int | None = None) -> Flow[None]:
    """`POST /generate_stream`: emits `StreamChunk`s; retried only until the first token has arrived."""
    times = call_times(ctx.config.timeout, "stream")
    prepared = _Prepared(request, times, stream=True, input_tokens=input_tokens)

    def first_chunk(ctx: Context) -> Flow[tuple[_StreamSession, ChunkAssembler, StreamChunk, Context]]:
        ready = yield from prepared.get(ctx)
        engine = ctx.engine
        session = yield from _open_stream(ctx, engine.stream_path, engine.generate_body(ready, stream=True), times)
        assembler = engine.stream_assembler(ready, ctx.config.redactor)
        try:
            chunk = yield from _next_chunk(session, assembler)
        except ZephyrTGIError:
            yield Close(session.body)
            raise
        return session, assembler, chunk, ctx

    session, assembler, chunk, used = yield from retrying(
        ctx, f"POST {ctx.engine.stream_path}", times, first_chunk, hold=True
    )
    feed_bytes, feed_all = session.decoder.feed, assembler.feed_all
    read = Read(session.body, None)  # one for the whole stream: only its time limit changes from wait to wait
    batch = [chunk]
    # What the first packet held after the first event (nothing, when that event was already the last).
    events: Iterable[bytes] = session.pending if chunk.result is None else ()
    try:
        while True:
            # The hot path: each packet's events become chunks in one call and go to the caller as one batch,
            # so there is no flow step per token. An event that fails ends the stream after the chunks before it.
            failure: ZephyrTGIError | None = None
            if events:
                try:
                    feed_all(events, batch)
                except ZephyrTGIError as exc:
                    failure = exc
            if failure is None and batch and batch[-1].result is not None:
                break
            if batch:
                yield batch[0] if len(batch) == 1 else Items(batch)
                batch = []
            if failure is not None:
                raise failure
            # The same wait, timer and errors as `_StreamSession.next_event`, written out here.
            read.until = until = times.until()
            events = ()
            while not events:
                try:
                    data = yield read
                except APITimeoutError as exc:
                    raise session.timeout_error(until) from exc
                if not data:
                    raise assembler.end_of_stream()
                events = feed_bytes(data)
        # Read the end of the body before handing out the last chunk, so the connection goes back to the pool
        # even when the caller stops iterating there.
        yield from session.drain()
        release(used)
    except APIError as exc:  # after the first token: never retried, but the replica's record keeps it
        release(used, exc)
        raise
    finally:
        abandon(used)  # the caller stopped early (a no-op once released)
    yield batch[0] if len(batch) == 1 else Items(batch)


def _next_chunk(session: _StreamSession, assembler: ChunkAssembler) -> Flow[StreamChunk]:
    data = yield from session.next_event()
    if data is None:
        raise assembler.end_of_stream()
    return assembler.feed(data)


def chat_completion_stream(ctx: Context, payload: dict[str, Any]) -> Flow[None]:
    """`POST /v1/chat/completions` streamed: emits `ChatCompletionChunk`s; retried only before the first event."""
    times = call_times(ctx.config.timeout, "stream")
    redactor = ctx.config.redactor

    def first_event(ctx: Context) -> Flow[tuple[_StreamSession, ChatCompletionChunk | None, Context]]:
        body = yield from _chat_body(ctx, payload, times)
        session = yield from _open_stream(ctx, "/v1/chat/completions", body, times)
        try:
            data = yield from session.next_event()
            if data is None:
                raise MalformedResponseError("the chat stream ended before its first event")
            return session, parse_chat_chunk(data, redactor), ctx
        except ZephyrTGIError:
            yield Close(session.body)
            raise

    session, chunk, used = yield from retrying(ctx, "POST /v1/chat/completions", times, first_event, hold=True)
    try:
        yield from _chat_events(session, chunk, redactor)
        release(used)
    except APIError as exc:  # after the first event: never retried
        release(used, exc)
        raise
    finally:
        abandon(used)


def _chat_events(session: _StreamSession, chunk: ChatCompletionChunk | None, redactor: Redactor) -> Flow[None]:
    while chunk is not None:
        if any(choice.finish_reason for choice in chunk.choices):
            # What follows (a usage chunk, then [DONE]) comes at once: read it before handing out the finish
            # chunk, so the connection goes back to the pool even if the caller stops there.
            rest = yield from _chat_chunks_until_done(session, redactor)
            yield from session.drain()
            yield Items([chunk, *rest])
            return
        yield Emit(chunk)
        data = yield from session.next_event()
        if data is None:
            raise MalformedResponseError("the chat stream ended without [DONE] (connection lost)")
        chunk = parse_chat_chunk(data, redactor)
    yield from session.drain()


def _chat_chunks_until_done(session: _StreamSession, redactor: Redactor) -> Flow[list[ChatCompletionChunk]]:
    chunks: list[ChatCompletionChunk] = []
    while True:
        data = yield from session.next_event()
        if data is None:
            return chunks
        chunk = parse_chat_chunk(data, redactor)
        if chunk is None:
            return chunks
        chunks.append(chunk)
