"""What both clients show users that does no I/O: settings as read-only properties, request building, repr.

The plumbing (settings, what is known of the server, the flows' context) is composed in private attributes,
so `dir(client)` lists what users call.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self, TypeVar

from .._engines import EngineSetting
from .._errors import ConfigurationError
from .._retry import RetryPolicy
from .._telemetry.settings import TelemetryInput, instrumentation_for
from .._timeout import Timeout, TimeoutInput
from .budget import BudgetPolicy
from .core import (
    ClientConfig,
    Endpoint,
    NativeRequest,
    chat_completion_payload,
    chat_prompt,
    display_url,
    make_config,
    native_request,
    raw_prompt,
    settings_from_env,
)
from .flows import Context, Flow
from .params import Limits, SamplingParams
from .replicas import EndpointStatus, Replica, ReplicaSet, check_load_signal
from .templates import Message, MessagesInput, SpecialTokenPolicy, build_messages

if TYPE_CHECKING:
    from huggingface_hub import InferenceClient

    from .._telemetry._instrument import Instrumentation
    from .tokenizer import ZephyrTokenizer

__all__ = ["ClientSurface"]

_T = TypeVar("_T")

_DERIVED = frozenset(
    {"api_key", "timeout", "retry", "params", "system_prompt", "special_tokens", "tokenizer", "budget"}
)


class ClientSurface(ABC):
    """The settings and pure helpers of `ZephyrClient` and `AsyncZephyrClient`."""

    _config: ClientConfig
    _endpoint: Endpoint
    _ctx: Context
    _instrumentation: Instrumentation | None = None  # OpenTelemetry, when `telemetry=` turned it on

    def __init__(
        self,
        base_url: str | Sequence[str],
        *,
        api_key: str | None = None,
        timeout: TimeoutInput = None,
        retry: RetryPolicy | None = None,
        params: SamplingParams | None = None,
        system_prompt: str | None = None,
        special_tokens: SpecialTokenPolicy = "raise",
        tokenizer: ZephyrTokenizer | None = None,
        budget: BudgetPolicy = "clamp",
        engine: EngineSetting = "auto",
        telemetry: TelemetryInput = False,
        load_signal: bool | float = True,
    ) -> None:
        """Check the settings and open the client's connection pool; nothing is sent until the first call.

        Args:
            base_url: The server's base URL, e.g. `http://127.0.0.1:8080`, or a list of URLs of replicas that
                serve the same model: each call goes to a healthy one, the least busy first (docs/replicas.md).
            api_key: Sent as `Authorization: Bearer ...` (TGI's `--api-key`); never an implicit HF token.
            timeout: A `Timeout`, or seconds of read timeout (the connect timeout at most 5 s); None, `Timeout()`.
            retry: When and how long to retry; default `RetryPolicy()`.
            params: Default sampling options of every generation; a call's own options are layered over them.
            system_prompt: The system prompt used when a conversation has none.
            special_tokens: What to do with special tokens in message content: "raise", "strip" or "allow".
            tokenizer: A local `ZephyrTokenizer` to count tokens with, instead of the server's `/tokenize`.
            budget: When prompt + max_new_tokens exceed the server's window: "clamp" max_new_tokens, "raise"
                `TokenBudgetError`, or "off" (send as is).
            engine: The engine serving the model ("tgi", "vllm", "sglang"), or "auto" to identify it on first use.
            telemetry: OpenTelemetry spans and metrics for each generation call (extra `otel`): True for the
                global providers, a `Telemetry` for chosen ones, False (the default) for none.
            load_signal: With several replicas, also rank them by the requests their engine says are waiting
                (its `/metrics`, read at most once per replica every 5 s, by a call or `health()`, in at most
                0.25 s): True (the default), a number of seconds between reads, or False for this client's
                in-flight counts alone. One URL never reads it (docs/replicas.md).

        Raises:
            ConfigurationError: a malformed URL or an invalid setting.
        """
        load_refresh = check_load_signal(load_signal)
        instrumentation = instrumentation_for(telemetry, os.environ)
        config = make_config(
            base_url,
            api_key=api_key,
            timeout=timeout,
            retry=retry,
            params=params,
            system_prompt=system_prompt,
            special_tokens=special_tokens,
            tokenizer=tokenizer,
            budget=budget,
            engine=engine,
        )
        replicas = replica_set(config, load_refresh) if config.replica_urls else None
        endpoint = replicas.replicas[0].endpoint if replicas is not None else Endpoint.for_setting(config.engine)
        self._configure(config, endpoint, replicas)
        self._instrumentation = instrumentation
        self._open()

    @abstractmethod
    def _open(self) -> None:
        """Create the client's transport (each shell has its own)."""

    def _configure(self, config: ClientConfig, endpoint: Endpoint, replicas: ReplicaSet | None) -> None:
        self._config = config
        self._endpoint = endpoint
        self._ctx = Context(config, endpoint, replicas=replicas)

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """A client configured from the environment; keyword arguments win over it.

        The variables are `ZEPHYR_TGI_URL` (several replicas: comma-separated), `ZEPHYR_TGI_API_KEY`,
        `ZEPHYR_TGI_TIMEOUT`, `ZEPHYR_TGI_MAX_ATTEMPTS`, `ZEPHYR_TGI_SYSTEM_PROMPT` and `ZEPHYR_TGI_ENGINE`.

        Args:
            **overrides: The constructor's arguments, by name (`base_url=`, `timeout=`, ...).

        Returns:
            A new client.

        Raises:
            ConfigurationError: no URL in the arguments or the environment, or a malformed variable.
        """
        settings = {**settings_from_env(os.environ), **overrides}
        if "base_url" not in settings:
            raise ConfigurationError("set ZEPHYR_TGI_URL (e.g. http://127.0.0.1:8080) or pass base_url=")
        return cls(**settings)

    def _derived_config(self, changes: Mapping[str, Any]) -> ClientConfig:
        unknown = set(changes) - _DERIVED
        if unknown:
            raise ConfigurationError(
                f"with_options() cannot change {sorted(unknown)}; it changes {sorted(_DERIVED)} "
                "(a client for another URL is a new client)"
            )
        return make_config(**{**self._config.settings(), **changes})

    # -- settings, read-only ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The server's base URL (a password in it shown as `***`); with several replicas, their URLs joined
        by ", " (`endpoints` shows each)."""
        return self._config.shown_url

    @property
    def endpoints(self) -> tuple[EndpointStatus, ...]:
        """The state of each replica, in the order of the URLs: healthy or ejected, requests in flight,
        consecutive failures, the engine and limits once known, the engine's waiting count and its age. One
        entry for a client of one URL (which does no health tracking: it is always shown healthy, with its
        engine and limits once known)."""
        replicas = self._ctx.replicas
        if replicas is not None:
            return replicas.statuses()
        endpoint = self._endpoint
        return (
            EndpointStatus(
                url=self._config.shown_url,
                healthy=True,
                ejected_for=0.0,
                in_flight=0,
                requests=0,
                failures=0,
                last_error=None,
                engine=endpoint.engine.name if endpoint.engine is not None else None,
                limits=endpoint.limits,
            ),
        )

    @property
    def timeout(self) -> Timeout:
        """Timeouts and deadline (unset fields take each route's default)."""
        return self._config.timeout

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy."""
        return self._config.retry

    @property
    def params(self) -> SamplingParams:
        """The default sampling options of every generation."""
        return self._config.params

    @property
    def system_prompt(self) -> str | None:
        """The system prompt used when a conversation has none."""
        return self._config.system_prompt

    @property
    def special_tokens(self) -> SpecialTokenPolicy:
        """What happens to special tokens in message content: "raise", "strip" or "allow"."""
        return self._config.special_tokens

    @property
    def tokenizer(self) -> ZephyrTokenizer | None:
        """The local tokenizer counting tokens, if any (else the server's `/tokenize` counts)."""
        return self._config.tokenizer

    @property
    def budget(self) -> BudgetPolicy:
        """What happens when prompt + max_new_tokens do not fit: "clamp", "raise" or "off"."""
        return self._config.budget

    @property
    def engine(self) -> str:
        """The engine serving the model: "tgi", "vllm" or "sglang"; "auto" until the first call has identified it
        (with several replicas: the first replica's engine that is known)."""
        engine = self._known_endpoint().engine
        return engine.name if engine is not None else "auto"

    @property
    def limits(self) -> Limits:
        """The server's limits from `/info`, or TGI's defaults until it has been read (with several replicas:
        the first replica's that are known; `endpoints` shows each)."""
        return self._known_endpoint().current_limits()

    def _known_endpoint(self) -> Endpoint:
        replicas = self._ctx.replicas
        if replicas is None or self._endpoint.limits_settled:
            return self._endpoint
        return next((r.endpoint for r in replicas.replicas if r.endpoint.limits_settled), self._endpoint)

    @property
    def inference_client(self) -> InferenceClient:
        """huggingface_hub's `InferenceClient` bound to this server and its api key (never an implicit HF token),
        for the routes this client does not wrap."""
        from .hub import inference_client_for

        return inference_client_for(self._config)

    def chat_prompt(self, messages: MessagesInput, *, system: str | None = None) -> str:
        """The exact Zephyr prompt `chat()` sends for these messages.

        Args:
            messages: A user turn as a string, or a list of `Message`s or `{"role": ..., "content": ...}` dicts.
            system: The system prompt, as in `chat()`.

        Returns:
            The rendered prompt, ending with the assistant's turn marker.

        Raises:
            PromptInjectionError: a special token in a message's content, with `special_tokens="raise"`.
        """
        return chat_prompt(self._config, messages, system=system)

    def __repr__(self) -> str:
        key = "'**********'" if self._config.api_key is not None else "None"
        return f"{type(self).__name__}(base_url={self.base_url!r}, api_key={key}, timeout={self.timeout!r})"

    # -- request building (no I/O) ------------------------------------------------------------------------

    def _chat_request(
        self, messages: MessagesInput, system: str | None, params: SamplingParams | None, overrides: Mapping[str, Any]
    ) -> NativeRequest:
        prompt = chat_prompt(self._config, messages, system=system)
        return native_request(self._config, self._endpoint, prompt, params, overrides)

    def _raw_request(self, prompt: str, params: SamplingParams | None, overrides: Mapping[str, Any]) -> NativeRequest:
        return native_request(self._config, self._endpoint, raw_prompt(prompt), params, overrides)

    def _prompt_of(self, text: MessagesInput, system: str | None) -> str:
        return text if isinstance(text, str) else chat_prompt(self._config, text, system=system)

    def _chat_completion_body(
        self, messages: MessagesInput, stream: bool, options: Mapping[str, Any]
    ) -> dict[str, Any]:
        return chat_completion_payload(self._config, messages, stream=stream, options=options)

    # -- telemetry (a flow is returned as it is when telemetry is off) -------------------------------------

    def _traced_chat(
        self, flow: Flow[_T], request: NativeRequest, messages: MessagesInput, system: str | None, *, stream: bool
    ) -> Flow[_T]:
        """A `chat()`-like call's flow, recorded as a `chat` span when telemetry is on."""
        instrumentation = self._instrumentation
        if instrumentation is None:
            return flow
        built = None
        if instrumentation.capture_content:
            built = build_messages(messages)
            system = system if system is not None else self._config.system_prompt
            if built[0].role != "system" and system is not None:
                built = build_messages(built, system=system)
        return self._traced_native(flow, "chat", request.params, stream=stream, messages=built)

    def _traced_generate(self, flow: Flow[_T], request: NativeRequest, *, stream: bool) -> Flow[_T]:
        """A `generate()` call's flow, recorded as a `text_completion` span when telemetry is on."""
        instrumentation = self._instrumentation
        if instrumentation is None:
            return flow
        prompt = request.prompt if instrumentation.capture_content else None
        return self._traced_native(flow, "text_completion", request.params, stream=stream, prompt=prompt)

    def _traced_native(
        self,
        flow: Flow[_T],
        operation: str,
        params: SamplingParams,
        *,
        stream: bool,
        messages: Sequence[Message] | None = None,
        prompt: str | None = None,
    ) -> Flow[_T]:
        """A native-route call's flow recorded as an `operation` span (telemetry is on); content when given."""
        from .._telemetry._describe import native_operation

        instrumentation = self._instrumentation
        assert instrumentation is not None
        described = native_operation(
            operation, params, model=instrumentation.model, stream=stream, messages=messages, prompt=prompt
        )
        return instrumentation.observe(flow, described, self._provider_name)

    def _traced_chat_completion(self, flow: Flow[_T], payload: Mapping[str, Any], *, stream: bool) -> Flow[_T]:
        """A `chat_completion()` call's flow, recorded as a `chat` span when telemetry is on."""
        instrumentation = self._instrumentation
        if instrumentation is None:
            return flow
        from .._telemetry._describe import chat_completion_operation

        operation = chat_completion_operation(
            payload, model=instrumentation.model, stream=stream, capture=instrumentation.capture_content
        )
        return instrumentation.observe(flow, operation, self._provider_name)

    def _provider_name(self) -> str | None:
        # gen_ai.provider.name has no registered value for these engines: the engine's own name is used.
        engine = self._endpoint.engine
        return engine.name if engine is not None else None


def replica_set(config: ClientConfig, load_refresh: float | None) -> ReplicaSet:
    """One `Replica` per URL of `config`, each with an `Endpoint` of its own; `load_refresh` is the seconds
    between reads of each one's load signal (None: off)."""
    return ReplicaSet(
        [
            Replica(index, url, display_url(url), Endpoint.for_setting(config.engine))
            for index, url in enumerate(config.replica_urls)
        ],
        load_refresh=load_refresh,
    )
