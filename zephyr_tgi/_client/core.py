"""What both clients share and that does no I/O: settings, request building, limits, environment."""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self, TypeVar

from pydantic import SecretStr

from .._errors import ConfigurationError
from .._retry import RetryPolicy
from .._timeout import DEFAULT_TIMEOUT, TimeoutInput, as_timeout
from .._types import ServerInfo
from .budget import BudgetPolicy, fit_budget, needs_count
from .params import Limits, SamplingParams, check_limits, merge_params, stop_sequences, to_wire
from .templates import (
    MessagesInput,
    SpecialTokenPolicy,
    build_messages,
    check_special_tokens,
    check_unicode,
    make_message,
    render_checked,
)

if TYPE_CHECKING:
    import httpx2

    from .tokenizer import ZephyrTokenizer

__all__ = ["ClientCore", "NativeRequest", "normalize_base_url", "parse_metrics", "settings_from_env"]

_USER_AGENT = "zephyr-tgi"
_NO_TOKEN = "no-token-sent"  # see hub_client_kwargs: never sent, only stops a token lookup
logger = logging.getLogger("zephyr_tgi")
_N = TypeVar("_N", int, float)

# The Messages API options we pass on; anything else must go through extra_body, on purpose.
_CHAT_COMPLETION_OPTIONS = frozenset(
    {
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "max_tokens",
        "model",
        "n",
        "presence_penalty",
        "response_format",
        "seed",
        "stop",
        "stream_options",
        "temperature",
        "tool_choice",
        "tool_prompt",
        "tools",
        "top_logprobs",
        "top_p",
        "extra_body",
    }
)
_HUB_CHAT_KWARGS = _CHAT_COMPLETION_OPTIONS - {"extra_body"} | {"messages", "stream"}


@dataclass(frozen=True, slots=True)
class NativeRequest:
    """A request for TGI's native generate routes: the prompt, the merged options and their wire form."""

    prompt: str
    params: SamplingParams
    parameters: dict[str, Any]
    stops: tuple[str, ...]

    def stream_payload(self) -> dict[str, Any]:
        """The JSON body for `/generate_stream`."""
        return {"inputs": self.prompt, "parameters": self.parameters}

    def with_params(self, params: SamplingParams) -> NativeRequest:
        """The same request with other options."""
        return NativeRequest(self.prompt, params, to_wire(params), tuple(stop_sequences(params)))


def normalize_base_url(base_url: str) -> str:
    """`http(s)://host[:port][/prefix]` without a trailing slash or a trailing `/v1`."""
    url = base_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1]) == 0:
        raise ConfigurationError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
    # OpenAI habits: a URL ending in /v1 points at the Messages API; TGI's own routes live one level up.
    return url.removesuffix("/v1")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition as {"name{labels}": value}; comments and malformed lines are skipped."""
    metrics: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        end = line.rfind("}")
        if "{" in line and end != -1:
            name, rest = line[: end + 1], line[end + 1 :].split()
        else:
            name, *rest = line.split()
        if not rest:
            continue
        try:
            metrics[name] = float(rest[0])
        except ValueError:
            continue
    return metrics


def settings_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Client settings from `ZEPHYR_TGI_*` variables (URL, API_KEY, TIMEOUT, MAX_ATTEMPTS, SYSTEM_PROMPT)."""
    settings: dict[str, Any] = {}
    if url := environ.get("ZEPHYR_TGI_URL"):
        settings["base_url"] = url
    if api_key := environ.get("ZEPHYR_TGI_API_KEY"):
        settings["api_key"] = api_key
    if timeout := environ.get("ZEPHYR_TGI_TIMEOUT"):
        settings["timeout"] = _env_number("ZEPHYR_TGI_TIMEOUT", timeout, float)
    if attempts := environ.get("ZEPHYR_TGI_MAX_ATTEMPTS"):
        settings["retry"] = RetryPolicy(max_attempts=_env_number("ZEPHYR_TGI_MAX_ATTEMPTS", attempts, int))
    if "ZEPHYR_TGI_SYSTEM_PROMPT" in environ:
        settings["system_prompt"] = environ["ZEPHYR_TGI_SYSTEM_PROMPT"]
    return settings


def _env_number(name: str, raw: str, kind: type[_N]) -> _N:
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{name}={raw!r} must be a positive number")
    return value


_OPTIONS_CACHE_SIZE = 128


class ClientCore:
    """Settings and request building shared by `ZephyrClient` and `AsyncZephyrClient`."""

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
    ) -> None:
        if budget not in ("clamp", "raise", "off"):
            raise ConfigurationError(f"budget must be 'clamp', 'raise' or 'off', got {budget!r}")
        if special_tokens not in ("raise", "strip", "allow"):
            raise ConfigurationError(f"special_tokens must be 'raise', 'strip' or 'allow', got {special_tokens!r}")
        self.base_url = normalize_base_url(base_url)
        self.generate_url = self.base_url + "/generate"
        self._api_key = SecretStr(api_key) if api_key else None
        self.timeout = as_timeout(timeout)
        self.retry = retry if retry is not None else RetryPolicy()
        self.params = params if params is not None else SamplingParams()
        self.system_prompt = system_prompt
        self.special_tokens: SpecialTokenPolicy = special_tokens
        self.headers: dict[str, str] = {"user-agent": _USER_AGENT}
        if self._api_key is not None:
            self.headers["authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        self.tokenizer = tokenizer
        self.budget: BudgetPolicy = budget
        self._limits: Limits | None = None
        self._rng = random.Random()  # retry jitter
        self._options_cache: dict[Hashable, tuple[SamplingParams, dict[str, Any], tuple[str, ...]]] = {}

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """A client configured from `ZEPHYR_TGI_URL`, `ZEPHYR_TGI_API_KEY`, `ZEPHYR_TGI_TIMEOUT`,
        `ZEPHYR_TGI_MAX_ATTEMPTS` and `ZEPHYR_TGI_SYSTEM_PROMPT`; keyword arguments win over the environment.

        Raises:
            ConfigurationError: no URL in the arguments or the environment, or a malformed variable.
        """
        settings = {**settings_from_env(os.environ), **overrides}
        if "base_url" not in settings:
            raise ConfigurationError("set ZEPHYR_TGI_URL (e.g. http://127.0.0.1:8080) or pass base_url=")
        return cls(**settings)

    def __repr__(self) -> str:
        key = "'**********'" if self._api_key is not None else "None"
        return f"{type(self).__name__}(base_url={self.base_url!r}, api_key={key}, timeout={self.timeout!r})"

    # -- huggingface_hub wiring -----------------------------------------------------------------------

    def hub_client_kwargs(self) -> dict[str, Any]:
        """Arguments for InferenceClient/AsyncInferenceClient.

        Without an api key, huggingface_hub would send the saved Hugging Face login or HF_TOKEN to any URL; a
        `None` authorization header is the documented way to stop that. It would also look that token up (env
        and token file, twice per request): a placeholder key skips the lookup, and the `None` header still
        keeps anything from being sent.
        """
        if self._api_key is not None:
            return {
                "api_key": self._api_key.get_secret_value(),
                "headers": {"user-agent": _USER_AGENT},
                "timeout": self.httpx_timeout(),
            }
        headers: dict[str, Any] = {"user-agent": _USER_AGENT, "authorization": None}
        return {"api_key": _NO_TOKEN, "headers": headers, "timeout": self.httpx_timeout()}

    def httpx_timeout(self) -> httpx2.Timeout:
        """The httpx2 timeout for one attempt."""
        return self.timeout.for_httpx(self.timeout.deadline)

    def deadline_at(self) -> float | None:
        """When this call's overall deadline passes (a `time.monotonic()` value), if there is one."""
        return None if self.timeout.deadline is None else time.monotonic() + self.timeout.deadline

    # -- requests -------------------------------------------------------------------------------------

    def chat_prompt(self, messages: MessagesInput, *, system: str | None) -> str:
        """The Zephyr prompt for a conversation.

        When neither `system=` nor the client's `system_prompt` nor the messages give a system message,
        an empty one is sent: the model card's prompt format, and the one Zephyr was trained with.
        """
        built = build_messages(messages)
        if built[0].role != "system":
            system = system if system is not None else self.system_prompt
            built.insert(0, make_message("system", system if system is not None else ""))
        elif system is not None:
            raise ConfigurationError("the messages already start with a system message; drop system= or that message")
        return render_checked(check_special_tokens(built, self.special_tokens))

    def chat_request(
        self,
        messages: MessagesInput,
        *,
        system: str | None,
        params: SamplingParams | None,
        overrides: Mapping[str, Any],
    ) -> NativeRequest:
        """A native request for a templated conversation."""
        return self._native_request(self.chat_prompt(messages, system=system), params, overrides)

    def raw_request(self, prompt: str, *, params: SamplingParams | None, overrides: Mapping[str, Any]) -> NativeRequest:
        """A native request for a raw prompt."""
        if not isinstance(prompt, str) or not prompt:
            raise ConfigurationError("prompt must be a non-empty string (TGI: `inputs` cannot be empty)")
        try:
            check_unicode(prompt, "the prompt")
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        return self._native_request(prompt, params, overrides)

    def _native_request(
        self, prompt: str, params: SamplingParams | None, overrides: Mapping[str, Any]
    ) -> NativeRequest:
        # Most calls repeat the same options: merging and validating them again would be most of the
        # client's own CPU cost for a short request, so the merged options and wire form are cached.
        key: Hashable | None = (self.params, params, tuple(sorted(overrides.items())))
        try:
            cached = self._options_cache.get(key)
        except TypeError:  # an unhashable option (a grammar's dict): not cached
            key, cached = None, None
        if cached is None:
            merged = merge_params(self.params, params, overrides) if (params or overrides) else self.params
            cached = (merged, to_wire(merged), tuple(stop_sequences(merged)))
            if key is not None:
                if len(self._options_cache) >= _OPTIONS_CACHE_SIZE:
                    self._options_cache.clear()
                self._options_cache[key] = cached
        return NativeRequest(prompt, *cached)

    def check_request(self, request: NativeRequest, *, stream: bool) -> None:
        """Check the request against the server's limits (TGI's defaults until `/info` was read)."""
        check_limits(request.params, self.limits, stream=stream)

    @property
    def limits(self) -> Limits:
        """The server's limits from `/info`, or TGI's defaults until it has been read."""
        return self._limits or Limits()

    def budget_needs_count(self, request: NativeRequest) -> bool:
        """Whether the prompt must be counted exactly to know it fits (a cheap bound settles most cases)."""
        return self.budget != "off" and needs_count(request.prompt, request.params, self.limits)

    def fit_to_budget(self, request: NativeRequest, input_tokens: int) -> NativeRequest:
        """Clamp max_new_tokens to the window (logging it) or raise `TokenBudgetError`, by the budget policy."""
        params, warning = fit_budget(input_tokens, request.params, self.limits, self.budget)
        if warning is not None:
            logger.warning(warning)
        return request if params is request.params else request.with_params(params)

    def prompt_of(self, text: MessagesInput, *, system: str | None = None) -> str:
        """What `count_tokens` counts: a string as a raw prompt, messages as the rendered chat prompt."""
        return text if isinstance(text, str) else self.chat_prompt(text, system=system)

    @property
    def limits_known(self) -> bool:
        """Whether the server's limits have been read from `/info`."""
        return self._limits is not None

    def remember_limits(self, info: ServerInfo) -> None:
        """Keep the limits of `/info` for checking later requests."""
        self._limits = Limits(
            max_input_tokens=info.max_input_tokens,
            max_total_tokens=info.max_total_tokens,
            max_stop_sequences=info.max_stop_sequences,
            max_best_of=info.max_best_of,
            max_top_n_tokens=info.max_top_n_tokens,
            max_concurrent_requests=info.max_concurrent_requests,
        )

    def chat_completion_payload(
        self, messages: MessagesInput, *, stream: bool, options: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The `/v1/chat/completions` body; TGI's `top_p` quirk smoothed like on the native routes."""
        unknown = set(options) - _CHAT_COMPLETION_OPTIONS
        if unknown:
            raise ConfigurationError(
                f"unknown chat_completion option(s) {sorted(unknown)}; known: {sorted(_CHAT_COMPLETION_OPTIONS)} "
                "(pass anything else in extra_body={...})"
            )
        built = build_messages(messages)
        if built[0].role != "system" and self.system_prompt is not None:
            built = build_messages(built, system=self.system_prompt)
        checked = check_special_tokens(built, self.special_tokens)
        payload: dict[str, Any] = {
            "model": "tgi",
            "messages": [message.model_dump() for message in checked],
            "stream": stream,
        }
        extra = options.get("extra_body") or {}
        payload.update({k: v for k, v in options.items() if k != "extra_body" and v is not None})
        payload.update(extra)
        temperature = payload.get("temperature")
        if temperature is not None and temperature < 0:
            raise ConfigurationError("temperature must be >= 0 (0 means greedy)")
        top_p = payload.get("top_p")
        if top_p is not None:
            if not 0 < top_p <= 1:
                raise ConfigurationError("`top_p` must be > 0.0 and <= 1.0 (1.0 means off and is not sent)")
            if top_p >= 1.0:
                del payload["top_p"]
        if isinstance(payload.get("stop"), str):
            payload["stop"] = [payload["stop"]]
        return payload

    @staticmethod
    def hub_chat_kwargs(payload: Mapping[str, Any]) -> dict[str, Any]:
        """InferenceClient.chat_completion keyword arguments for a Messages API body."""
        kwargs = {k: v for k, v in payload.items() if k in _HUB_CHAT_KWARGS}
        extra = {k: v for k, v in payload.items() if k not in _HUB_CHAT_KWARGS}
        if extra:
            kwargs["extra_body"] = extra
        return kwargs
