"""The exception hierarchy of zephyr_tgi.

```
ZephyrTGIError
├── ConfigurationError (also ValueError)        bad arguments or settings
├── PromptError (also ValueError)               what we were asked to send is unsafe or too long
│   ├── PromptInjectionError                    special tokens or role tags in message content
│   └── TokenBudgetError                        prompt + max_new_tokens exceeds the server's window
├── StructuredOutputError                       the answer does not match the requested schema or regex
├── APIError                                    .status_code .error_type .message .body
│   ├── APIConnectionError                      could not connect, or the connection broke (retried)
│   │   └── APITimeoutError                     connect/read timeout or deadline exceeded (retried)
│   ├── APIStatusError                          the server answered with an error
│   │   ├── AuthenticationError      401        wrong or missing api key (never retried)
│   │   ├── InputValidationError     422        TGI rejected the request (never retried)
│   │   ├── GenerationError          424        the model failed while generating (never retried)
│   │   ├── OverloadedError          429        too many concurrent requests (retried, Retry-After)
│   │   ├── IncompleteGenerationError 500       generation stopped early (retried before the first token)
│   │   └── ServerUnavailableError   502-504    proxy error or model still loading (retried)
│   ├── MalformedResponseError                  an answer that is not in TGI's format (never retried)
│   └── PrefillUnavailableError                 no prefill logprobs (TGI lacks --enable-prefill-logprobs)
└── ServerError                                 the launcher
    ├── DockerUnavailableError                  no docker SDK, or the daemon is unreachable
    ├── GPUUnavailableError                     GPUs requested but no GPU runtime
    ├── ContainerStartError                     the container exited while starting (.exit_code .logs)
    └── ServerNotReadyError                     not ready before the timeout (.logs)
```

Exceptions of httpx2 become these at one boundary (the transport), keeping the original as `__cause__`;
what a server sends is turned into them here, by `from_response` and `from_stream_event`, and nothing a server
sends raises anything else. `redact` keeps keys, bearer tokens and URL passwords out of every message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import pydantic_core

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "ConfigurationError",
    "ContainerStartError",
    "DockerUnavailableError",
    "GPUUnavailableError",
    "GenerationError",
    "IncompleteGenerationError",
    "InputValidationError",
    "MalformedResponseError",
    "OverloadedError",
    "PrefillUnavailableError",
    "PromptError",
    "PromptInjectionError",
    "ServerError",
    "ServerNotReadyError",
    "ServerUnavailableError",
    "StructuredOutputError",
    "TokenBudgetError",
    "ZephyrTGIError",
]

_BODY_PREVIEW_CHARS = 300


class ZephyrTGIError(Exception):
    """Base class of every error zephyr_tgi raises.

    `request_id` is the `X-Request-Id` of the client call that failed (the server's own id when it answered with
    one), for finding the call in the server's logs; None for errors raised before a call began.
    """

    request_id: str | None = None


class ConfigurationError(ZephyrTGIError, ValueError):
    """An argument or setting is invalid; nothing was sent."""


class PromptError(ZephyrTGIError, ValueError):
    """The prompt cannot be sent as it is; nothing was sent."""


class PromptInjectionError(PromptError):
    """Message content contains a special token or a role tag of the Zephyr template."""

    def __init__(self, message: str, *, token: str, message_index: int) -> None:
        """The error, with the token found and where.

        Args:
            message: What was found and what to do about it.
            token: The special token or role tag found (kept as `.token`).
            message_index: The index of the message it is in (kept as `.message_index`).
        """
        super().__init__(message)
        self.token = token
        self.message_index = message_index


class TokenBudgetError(PromptError):
    """The prompt plus the requested new tokens do not fit the server's context window."""

    def __init__(
        self,
        message: str,
        *,
        input_tokens: int,
        max_new_tokens: int,
        max_input_tokens: int,
        max_total_tokens: int,
    ) -> None:
        """The error, with the counts that do not fit.

        Args:
            message: What does not fit and what to do about it.
            input_tokens: The prompt's tokens (kept as `.input_tokens`, like the other arguments).
            max_new_tokens: The new tokens asked for.
            max_input_tokens: The server's longest prompt.
            max_total_tokens: The server's limit on prompt + new tokens.
        """
        super().__init__(message)
        self.input_tokens = input_tokens
        self.max_new_tokens = max_new_tokens
        self.max_input_tokens = max_input_tokens
        self.max_total_tokens = max_total_tokens


class StructuredOutputError(ZephyrTGIError):
    """The model's answer is not valid for the requested JSON schema or regex; `raw_text` keeps it."""

    def __init__(self, message: str, *, raw_text: str) -> None:
        """The error, with the answer that did not validate.

        Args:
            message: Why the answer is not valid.
            raw_text: The model's answer as it came (kept as `.raw_text`).
        """
        super().__init__(message)
        self.raw_text = raw_text


class APIError(ZephyrTGIError):
    """A request to the server failed."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_type: str | None = None,
        body: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """The error, with what the server answered (when it answered).

        Args:
            message: What failed, with the server's own message when it sent one (kept as `.message`).
            status_code: The HTTP status, or None when no answer came (kept as `.status_code`).
            error_type: The engine's error type (TGI's `error_type`, vLLM's `type`), if the body had one.
            body: The answer's body, capped in size, with secrets redacted.
            headers: The answer's headers (kept lower-cased as `.headers`; `retry_after` reads them).
        """
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.error_type = error_type
        self.body = body
        self.headers: dict[str, str] = {k.lower(): v for k, v in (headers or {}).items()}

    @property
    def retry_after(self) -> float | None:
        """Seconds the server asked us to wait (`Retry-After`), if it said so."""
        return parse_retry_after(self.headers)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, status_code={self.status_code!r}, "
            f"error_type={self.error_type!r})"
        )


class APIConnectionError(APIError):
    """The connection could not be made or broke before a complete answer arrived.

    `connect_failed` is True when no connection could be made at all (refused, unknown host).
    """

    def __init__(self, message: str, *, connect_failed: bool = False, **kwargs: Any) -> None:
        """The error, with whether a connection was made at all.

        Args:
            message: What failed.
            connect_failed: No connection could be made at all (kept as `.connect_failed`).
            **kwargs: `APIError`'s other arguments.
        """
        super().__init__(message, **kwargs)
        self.connect_failed = connect_failed


class APITimeoutError(APIConnectionError):
    """A connect or read timeout, or the overall deadline, was exceeded."""


class APIStatusError(APIError):
    """The server answered with an error status or an in-band error event."""


class AuthenticationError(APIStatusError):
    """401: the server wants `Authorization: Bearer <api_key>` (TGI `--api-key`)."""


class InputValidationError(APIStatusError):
    """422: TGI refused the request's inputs or parameters."""


class GenerationError(APIStatusError):
    """424: the model failed during generation (a shard or CUDA error)."""


class OverloadedError(APIStatusError):
    """429: more requests in flight than TGI's `--max-concurrent-requests`."""


class IncompleteGenerationError(APIStatusError):
    """500: the generation ended without its final token."""


class ServerUnavailableError(APIStatusError):
    """502/503/504: a proxy could not reach TGI, or the model is still loading."""


class MalformedResponseError(APIError):
    """The server answered, but not in TGI's format (a body or event of the wrong shape): not retried."""


class PrefillUnavailableError(APIError):
    """The server returned no prefill logprobs: TGI needs `--enable-prefill-logprobs` for them."""


class ServerError(ZephyrTGIError):
    """Launching or watching a TGI container failed."""


class DockerUnavailableError(ServerError):
    """The docker SDK is not installed or the Docker daemon cannot be reached."""


class GPUUnavailableError(ServerError):
    """GPUs were requested but Docker has no GPU runtime (NVIDIA Container Toolkit)."""


class ContainerStartError(ServerError):
    """The TGI container exited before it became ready."""

    def __init__(self, message: str, *, exit_code: int | None, logs: str) -> None:
        """The error, with the container's exit code and log tail.

        Args:
            message: Why the container stopped, with a hint of what to do.
            exit_code: The container's exit code, None when it did not exit (kept as `.exit_code`).
            logs: The last lines of its log, secrets redacted (kept as `.logs`).
        """
        super().__init__(message)
        self.exit_code = exit_code
        self.logs = logs


class ServerNotReadyError(ServerError):
    """The TGI container did not become ready before the timeout."""

    def __init__(self, message: str, *, logs: str) -> None:
        """The error, with the container's log tail.

        Args:
            message: How long was waited, with a hint of what to do.
            logs: The last lines of the container's log, secrets redacted (kept as `.logs`).
        """
        super().__init__(message)
        self.logs = logs


# --- mapping -------------------------------------------------------------------------------------------

_BY_ERROR_TYPE: dict[str, type[APIStatusError]] = {
    "validation": InputValidationError,
    "template_error": InputValidationError,
    "missing_template_variable": InputValidationError,
    "tool_error": InputValidationError,
    "generation": GenerationError,
    "overloaded": OverloadedError,
    "incomplete_generation": IncompleteGenerationError,
    "incomplete_generation_stream": IncompleteGenerationError,
    "healthcheck": ServerUnavailableError,
    "unavailable": ServerUnavailableError,
}

_BY_STATUS: dict[int, type[APIStatusError]] = {
    401: AuthenticationError,
    403: AuthenticationError,
    422: InputValidationError,
    424: GenerationError,
    429: OverloadedError,
    500: IncompleteGenerationError,
    502: ServerUnavailableError,
    503: ServerUnavailableError,
    504: ServerUnavailableError,
}

# OpenAI-style in-band errors on /v1/* carry only a message (http_status_code is always 422), so the
# message prefix is the only reliable way to tell what happened.
_BY_MESSAGE_PREFIX: tuple[tuple[str, type[APIStatusError]], ...] = (
    ("Model is overloaded", OverloadedError),
    ("Input validation error:", InputValidationError),
    ("Template error:", InputValidationError),
    ("Tool error:", InputValidationError),
    ("Request failed during generation:", GenerationError),
    ("Incomplete generation", IncompleteGenerationError),
)

_HINTS: dict[type[APIStatusError], str] = {
    AuthenticationError: "pass the server's --api-key as api_key= (or ZEPHYR_TGI_API_KEY)",
    OverloadedError: "lower the concurrency or raise TGI's --max-concurrent-requests",
    ServerUnavailableError: "the server is starting or a proxy cannot reach it; wait_until_ready() helps",
    GenerationError: "the model failed on the GPU; check the server logs",
}


def error_class_for(*, status_code: int | None, error_type: str | None, message: str = "") -> type[APIStatusError]:
    """Pick the exception class: TGI's `error_type` first, then the message prefix, then the status."""
    if error_type and error_type in _BY_ERROR_TYPE:
        return _BY_ERROR_TYPE[error_type]
    for prefix, cls in _BY_MESSAGE_PREFIX:
        if message.startswith(prefix):
            return cls
    if status_code is not None:
        if status_code in _BY_STATUS:
            return _BY_STATUS[status_code]
        if status_code >= 500:
            return ServerUnavailableError
    return APIStatusError


def _decode_json_error(body: str) -> tuple[str | None, str | None]:
    """Return (message, error_type) from a TGI error body, or (None, None) if it is not one."""
    try:
        # pydantic-core's parser has a nesting limit (json.loads would raise RecursionError on deep JSON).
        data = pydantic_core.from_json(body)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    error = data.get("error")
    if isinstance(error, str):
        error_type = data.get("error_type")
        return error, error_type if isinstance(error_type, str) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"], None
    if isinstance(data.get("message"), str):
        return data["message"], None
    return None, None


def from_response(
    status_code: int,
    body: bytes | str,
    headers: Mapping[str, str] | None = None,
    *,
    redactor: Redactor | None = None,
) -> APIStatusError:
    """Build the error for an HTTP error answer; never fails, whatever the body is (callers cap its size)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    scrub = redactor.scrub if redactor is not None else redact
    text = scrub(text)
    message, error_type = _decode_json_error(text)
    if message is None:
        preview = " ".join(text[: 4 * _BODY_PREVIEW_CHARS].split())[:_BODY_PREVIEW_CHARS]
        message = f"HTTP {status_code}" + (f": {preview}" if preview else " with an empty body")
    cls = error_class_for(status_code=status_code, error_type=error_type, message=message)
    hint = _HINTS.get(cls)
    full = f"{message} ({hint})" if hint else message
    return cls(full, status_code=status_code, error_type=error_type, body=text, headers=headers)


def from_stream_event(event: Mapping[str, Any], raw: str, *, redactor: Redactor | None = None) -> APIStatusError:
    """Build the error for an in-band SSE error event in either of TGI's two shapes."""
    scrub = redactor.scrub if redactor is not None else redact
    raw = scrub(raw)
    error = event.get("error")
    if isinstance(error, dict):  # /v1/*: {"error": {"message", "http_status_code"}}
        message = scrub(str(error.get("message", raw)))
        status = error.get("http_status_code")
        cls = error_class_for(status_code=None, error_type=None, message=message)
        code = status if cls is APIStatusError and isinstance(status, int) else _status_of(cls)
        return cls(message, status_code=code, error_type=None, body=raw)
    message = scrub(str(error))
    error_type = event.get("error_type")
    error_type = error_type if isinstance(error_type, str) else None
    cls = error_class_for(status_code=None, error_type=error_type, message=message)
    return cls(message, status_code=_status_of(cls), error_type=error_type, body=raw)


def _status_of(cls: type[APIStatusError]) -> int | None:
    """The HTTP status TGI would have used for this error outside a stream."""
    for status, candidate in _BY_STATUS.items():
        if candidate is cls:
            return status
    return None


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (seconds or an HTTP date); None when absent or bad."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in lowered:
        try:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime  # rare path: keep it off import time

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    import time

    return max(0.0, when.timestamp() - time.time())


# --- redaction -----------------------------------------------------------------------------------------

_BEARER = re.compile(r"(?i)\b(bearer|basic|token)(\s+)[A-Za-z0-9._~+/=-]{6,}")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@:]*:[^/\s@]*@")
_MASK = "***"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without bearer/basic credentials, URL passwords, or any of `secrets`."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, _MASK)
    if "@" in text:
        text = _USERINFO.sub(rf"\1{_MASK}@", text)
    return _BEARER.sub(rf"\1\2{_MASK}", text) if _may_hold_credentials(text) else text


def _may_hold_credentials(text: str) -> bool:
    # A cheap test first: the regular expression runs only on the rare text that could match it.
    lowered = text.lower()
    return "bearer" in lowered or "basic" in lowered or "token" in lowered


class Redactor:
    """Redaction with the secrets one client knows (its api key, its URL's password)."""

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Iterable[str | None]) -> None:
        # Longest first, so that a secret containing another is removed whole.
        self._secrets = tuple(sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        """`text` without this client's secrets or any credential-looking token."""
        return redact(text, self._secrets)
