"""The client's settings and request building: what both clients share and that does no I/O.

`ClientConfig` is a client's frozen settings; `Endpoint` what a client learns about its server (its limits, whether
`/info` exists, whether it ever answered), shared by the clients `with_options()` derives from one another.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import urllib.parse
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import SecretStr

from .._engines import Engine, EngineSetting, check_engine_setting, engine_named
from .._errors import ConfigurationError, Redactor
from .._retry import RetryPolicy
from .._timeout import Timeout, TimeoutInput, as_timeout
from .._types import ServerInfo
from .budget import BudgetPolicy
from .params import Limits, SamplingParams, merge_params, stop_sequences, to_wire
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
    from .tokenizer import ZephyrTokenizer

__all__ = [
    "ClientConfig",
    "Endpoint",
    "NativeRequest",
    "encode_json",
    "make_config",
    "normalize_base_url",
    "normalize_base_urls",
    "parse_metrics",
    "settings_from_env",
]

USER_AGENT = "zephyr-tgi"
logger = logging.getLogger("zephyr_tgi")
_N = TypeVar("_N", int, float)

# The Messages API options we pass on; anything else must go through extra_body, on purpose.
CHAT_COMPLETION_OPTIONS = frozenset(
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

_BUDGETS = ("clamp", "raise", "off")
_SPECIAL_TOKEN_POLICIES = ("raise", "strip", "allow")


@dataclass(frozen=True, slots=True)
class NativeRequest:
    """A request for TGI's native generate routes: the prompt, the merged options and their wire form."""

    prompt: str
    params: SamplingParams
    parameters: dict[str, Any]
    stops: tuple[str, ...]

    def payload(self) -> bytes:
        """The JSON body for `/generate` and `/generate_stream`."""
        return encode_json({"inputs": self.prompt, "parameters": self.parameters})

    def with_params(self, params: SamplingParams) -> NativeRequest:
        """The same request with other options."""
        return NativeRequest(self.prompt, params, to_wire(params), tuple(stop_sequences(params)))


def encode_json(payload: Any) -> bytes:
    """A request body; what JSON cannot carry (a set, a circular or absurdly deep value) is the caller's error."""
    try:
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise ConfigurationError(f"the request cannot be sent as JSON: {exc}") from None


def normalize_base_url(base_url: object) -> tuple[str, str | None]:
    """`http(s)://host[:port][/prefix]` without a trailing slash or `/v1`, and the password of its userinfo."""
    if not isinstance(base_url, str):
        raise ConfigurationError(
            f"base_url must be a URL string such as 'http://127.0.0.1:8080', got {type(base_url).__name__}"
        )
    url = base_url.strip().rstrip("/")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ConfigurationError(f"base_url is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = Redactor([parts.password]).scrub(base_url)
        raise ConfigurationError(f"base_url must be an http:// or https:// URL, got {shown!r}")
    # OpenAI habits: a URL ending in /v1 points at the Messages API; TGI's own routes live one level up.
    return url.removesuffix("/v1"), parts.password


def normalize_base_urls(base_url: object) -> tuple[tuple[str, ...], list[str | None]]:
    """One URL, or several (a list or tuple of URL strings, one per replica): normalized, with their passwords.

    Raises:
        ConfigurationError: the list is empty, an entry is not a valid http(s) URL, or two entries are the same
            server (the message names the entry, its password redacted).
    """
    if isinstance(base_url, str) or not isinstance(base_url, (list, tuple)):
        url, password = normalize_base_url(base_url)
        return (url,), [password]
    if not base_url:
        raise ConfigurationError("base_url is an empty list; give one URL, or one URL per replica")
    urls: list[str] = []
    passwords: list[str | None] = []
    for index, entry in enumerate(base_url):
        try:
            url, password = normalize_base_url(entry)
        except ConfigurationError as exc:
            raise ConfigurationError(f"base_url[{index}]: {exc}") from None
        if url in urls:
            shown = display_url(url)
            raise ConfigurationError(
                f"base_url[{index}] ({shown!r}) repeats base_url[{urls.index(url)}]; list each replica once"
            )
        urls.append(url)
        passwords.append(password)
    return tuple(urls), passwords


def display_url(url: str) -> str:
    """The URL as it may be shown: without its userinfo's password."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else "***@"
    return urllib.parse.urlunsplit(parts._replace(netloc=user + netloc))


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
    """Client settings from `ZEPHYR_TGI_*` variables.

    URL (several replicas: comma-separated), API_KEY, TIMEOUT, MAX_ATTEMPTS, SYSTEM_PROMPT and ENGINE.
    """
    settings: dict[str, Any] = {}
    if engine := environ.get("ZEPHYR_TGI_ENGINE"):
        try:
            settings["engine"] = check_engine_setting(engine.strip().lower())
        except ConfigurationError:
            raise ConfigurationError(f"ZEPHYR_TGI_ENGINE={engine!r} is not 'auto', 'tgi', 'vllm' or 'sglang'") from None
    if url := environ.get("ZEPHYR_TGI_URL"):
        # Several replicas: comma-separated (a comma cannot be part of a host name, so nothing is ambiguous).
        settings["base_url"] = [part.strip() for part in url.split(",")] if "," in url else url
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


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """A client's settings, validated once; `with_options()` makes another with some of them changed."""

    base_url: str
    shown_url: str
    api_key: SecretStr | None
    timeout: Timeout
    retry: RetryPolicy
    params: SamplingParams
    system_prompt: str | None
    special_tokens: SpecialTokenPolicy
    tokenizer: ZephyrTokenizer | None
    budget: BudgetPolicy
    headers: Mapping[str, str]
    redactor: Redactor
    engine: EngineSetting = "auto"
    replica_urls: tuple[str, ...] = ()  # with several URLs: all of them, normalized (base_url is the first)

    def settings(self) -> dict[str, Any]:
        """The keyword arguments that would make this configuration again."""
        return {
            "base_url": list(self.replica_urls) if self.replica_urls else self.base_url,
            "api_key": self.api_key.get_secret_value() if self.api_key is not None else None,
            "timeout": self.timeout,
            "retry": self.retry,
            "params": self.params,
            "system_prompt": self.system_prompt,
            "special_tokens": self.special_tokens,
            "tokenizer": self.tokenizer,
            "budget": self.budget,
            "engine": self.engine,
        }


def make_config(
    base_url: object,
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
) -> ClientConfig:
    """Validate a client's settings.

    Raises:
        ConfigurationError: any setting is invalid.
    """
    urls, passwords = normalize_base_urls(base_url)
    url = urls[0]
    engine = check_engine_setting(engine)
    if budget not in _BUDGETS:
        raise ConfigurationError(f"budget must be 'clamp', 'raise' or 'off', got {budget!r}")
    if special_tokens not in _SPECIAL_TOKEN_POLICIES:
        raise ConfigurationError(f"special_tokens must be 'raise', 'strip' or 'allow', got {special_tokens!r}")
    if api_key is not None and (not isinstance(api_key, str) or not api_key.isprintable() or not api_key.strip()):
        raise ConfigurationError("api_key must be a non-empty string of printable characters")
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise ConfigurationError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
    if params is not None and not isinstance(params, SamplingParams):
        raise ConfigurationError(f"params must be SamplingParams, got {type(params).__name__}")
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise ConfigurationError(f"system_prompt must be a string, got {type(system_prompt).__name__}")
    if not isinstance(timeout, (Timeout, int, float, type(None))) or isinstance(timeout, bool):
        raise ConfigurationError(f"timeout must be a Timeout, a number of seconds or None, got {timeout!r}")
    if isinstance(timeout, (int, float)) and not (math.isfinite(timeout) and timeout > 0):
        raise ConfigurationError(f"timeout must be a positive number of seconds, got {timeout!r}")
    headers = {"user-agent": USER_AGENT, "content-type": "application/json"}
    if api_key is not None:
        headers["authorization"] = f"Bearer {api_key}"
    return ClientConfig(
        base_url=url,
        shown_url=", ".join(display_url(u) for u in urls),
        api_key=SecretStr(api_key) if api_key is not None else None,
        timeout=as_timeout(timeout) if timeout is not None else Timeout(),
        retry=retry if retry is not None else RetryPolicy(),
        params=params if params is not None else SamplingParams(),
        system_prompt=system_prompt,
        special_tokens=special_tokens,
        tokenizer=tokenizer,
        budget=budget,
        headers=headers,
        redactor=Redactor([api_key, *passwords]),
        engine=engine,
        replica_urls=urls if len(urls) > 1 else (),
    )


_OPTIONS_CACHE_SIZE = 128


@dataclass(slots=True)
class Endpoint:
    """What a client has learnt about its server. Shared by clients made with `with_options()`."""

    limits: Limits | None = None
    info_unavailable: bool = False  # /info answered 404/501 or not in TGI's shape: TGI's defaults apply
    engine: Engine | None = None  # known from the setting, or once `auto` has identified it
    lock: threading.Lock = field(default_factory=threading.Lock)
    options_cache: dict[Hashable, tuple[SamplingParams, dict[str, Any], tuple[str, ...]]] = field(default_factory=dict)

    @property
    def limits_settled(self) -> bool:
        """Whether the limits are known or known to be unknowable."""
        return self.limits is not None or self.info_unavailable

    def current_limits(self) -> Limits:
        """The server's limits, or TGI's defaults while they are not known."""
        return self.limits or Limits()

    @classmethod
    def for_setting(cls, setting: EngineSetting) -> Endpoint:
        """An endpoint that knows its engine when the setting names one."""
        return cls(engine=None if setting == "auto" else engine_named(setting))

    def remember(self, info: ServerInfo) -> None:
        """Keep the limits the engine reported for checking later requests."""
        engine = self.engine or engine_named(info.engine)
        self.limits = engine.limits_of(info)


# --- requests ---------------------------------------------------------------------------------------------


def chat_prompt(config: ClientConfig, messages: MessagesInput, *, system: str | None) -> str:
    """The Zephyr prompt for a conversation.

    When neither `system=` nor the client's `system_prompt` nor the messages give a system message, an empty
    one is sent: the model card's prompt format, and the one Zephyr was trained with.
    """
    built = build_messages(messages)
    if built[0].role != "system":
        system = system if system is not None else config.system_prompt
        built.insert(0, make_message("system", system if system is not None else ""))
    elif system is not None:
        raise ConfigurationError("the messages already start with a system message; drop system= or that message")
    return render_checked(check_special_tokens(built, config.special_tokens))


def raw_prompt(prompt: object) -> str:
    """A raw prompt, checked."""
    if not isinstance(prompt, str) or not prompt:
        raise ConfigurationError("prompt must be a non-empty string (TGI: `inputs` cannot be empty)")
    try:
        check_unicode(prompt, "the prompt")
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    return prompt


def native_request(
    config: ClientConfig,
    endpoint: Endpoint,
    prompt: str,
    params: SamplingParams | None,
    overrides: Mapping[str, Any],
) -> NativeRequest:
    """A native request: the prompt with the merged, validated options in TGI's wire form."""
    if params is not None and not isinstance(params, SamplingParams):
        raise ConfigurationError(f"params must be SamplingParams, got {type(params).__name__}")
    # Most calls repeat the same options: merging and validating them again would be most of the client's own
    # CPU cost for a short request, so the merged options and wire form are cached.
    key: Hashable | None = (config.params, params, tuple(sorted(overrides.items())))
    cache = endpoint.options_cache
    try:
        cached = cache.get(key)
    except TypeError:  # an unhashable option (a grammar's dict): not cached
        key, cached = None, None
    if cached is None:
        merged = merge_params(config.params, params, overrides) if (params or overrides) else config.params
        cached = (merged, to_wire(merged), tuple(stop_sequences(merged)))
        if key is not None:
            if len(cache) >= _OPTIONS_CACHE_SIZE:
                cache.clear()
            cache[key] = cached
    return NativeRequest(prompt, *cached)


def chat_completion_payload(
    config: ClientConfig, messages: MessagesInput, *, stream: bool, options: Mapping[str, Any]
) -> dict[str, Any]:
    """The `/v1/chat/completions` body; TGI's `top_p` quirk smoothed like on the native routes."""
    unknown = set(options) - CHAT_COMPLETION_OPTIONS
    if unknown:
        raise ConfigurationError(
            f"unknown chat_completion option(s) {sorted(unknown)}; known: {sorted(CHAT_COMPLETION_OPTIONS)} "
            "(pass anything else in extra_body={...})"
        )
    built = build_messages(messages)
    if built[0].role != "system" and config.system_prompt is not None:
        built = build_messages(built, system=config.system_prompt)
    checked = check_special_tokens(built, config.special_tokens)
    payload: dict[str, Any] = {
        "model": "tgi",
        "messages": [message.model_dump() for message in checked],
        "stream": stream,
    }
    extra = options.get("extra_body") or {}
    if not isinstance(extra, Mapping):
        raise ConfigurationError("extra_body must be a dict")
    payload.update({k: v for k, v in options.items() if k != "extra_body" and v is not None})
    payload.update(extra)
    temperature = payload.get("temperature")
    if temperature is not None and (not isinstance(temperature, (int, float)) or temperature < 0):
        raise ConfigurationError("temperature must be a number >= 0 (0 means greedy)")
    top_p = payload.get("top_p")
    if top_p is not None:
        if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
            raise ConfigurationError("`top_p` must be > 0.0 and <= 1.0 (1.0 means off and is not sent)")
        if top_p >= 1.0:
            del payload["top_p"]
    if isinstance(payload.get("stop"), str):
        payload["stop"] = [payload["stop"]]
    encode_json(payload)  # what JSON cannot carry is the caller's error now, before the engine is known
    return payload
