"""Fault injection knobs (`Faults`) and the TGI errors they produce."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

__all__ = [
    "PROXY_UNAVAILABLE_BODY",
    "FaultState",
    "Faults",
    "ScriptedResponse",
    "check_fault_changes",
    "error_for_type",
    "faults_changes_from_json",
]

DEFAULT_EXIT_MESSAGE = "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"

# error_type -> (HTTP status, message), as TGI's InferError renders them.
_ERRORS: dict[str, tuple[int, str]] = {
    "generation": (424, "Request failed during generation: CUDA out of memory"),
    "overloaded": (429, "Model is overloaded"),
    "validation": (422, "Input validation error: `inputs` cannot be empty"),
    "incomplete_generation": (500, "Incomplete generation"),
    "incomplete_generation_stream": (500, "Incomplete generation stream"),
    "template_error": (422, "Template error: template not found"),
    "tool_error": (422, "Tool error: injected by the emulator"),
    "stream_serialization_error": (500, "Stream event serialization error"),
}
# What the proxy fault answers: not TGI's words (TGI never sends 503 on a generation route), a proxy's.
PROXY_UNAVAILABLE_BODY = b"503 Service Unavailable"


def error_for_type(error_type: str) -> tuple[int, str]:
    """The HTTP status and message TGI uses for an `error_type` (500 for unknown types)."""
    return _ERRORS.get(error_type, (500, f"Injected {error_type} error"))


@dataclass
class ScriptedResponse:
    """A canned answer for the next generation request, sent verbatim.

    Args:
        status: The HTTP status.
        body: The body, sent as is (a string is UTF-8 encoded).
        content_type: The `Content-Type` header, if any.
        headers: More headers.
    """

    status: int = 200
    body: bytes | str = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ScriptedResponse:
        """Build from the admin route's JSON object.

        Args:
            obj: An object with `status`, `body`, `content_type` and `headers`, each optional.

        Raises:
            ValueError: an unknown field or a value of the wrong type.
        """
        unknown = set(obj) - {"status", "body", "content_type", "headers"}
        if unknown:
            raise ValueError(f"unknown ScriptedResponse fields: {sorted(unknown)}")
        body = obj.get("body", b"")
        if not isinstance(body, str | bytes):
            raise ValueError("ScriptedResponse.body must be a string")
        headers = obj.get("headers") or {}
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise ValueError("ScriptedResponse.headers must be an object of strings")
        status = obj.get("status", 200)
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
            raise ValueError("ScriptedResponse.status must be an HTTP status code")
        content_type = obj.get("content_type")
        if content_type is not None and not isinstance(content_type, str):
            raise ValueError("ScriptedResponse.content_type must be a string or null")
        return cls(status=status, body=body, content_type=content_type, headers=dict(headers))


@dataclass
class Faults:
    """What should go wrong, live and mutable: changes apply to the next requests.

    Counters (`*_next`) are decremented as requests consume them. "Generation requests" are POST /,
    /generate, /generate_stream, /v1/chat/completions and /v1/completions.
    """

    refuse_connections_for: float = 0.0
    """Seconds after start() during which connections are refused: TGI binds its port only once loaded."""
    unavailable_for: float = 0.0
    """Seconds (from listening, or from when it is changed) during which TGI's health check fails:
    GET /health (and /, /ping) answer 503 `unhealthy`; generation routes still work, as in TGI."""
    proxy_unavailable_for: float = 0.0
    """Seconds (from listening, or from when it is changed) during which a proxy in front answers every TGI
    route with 503, a text body and Retry-After (`retry_after`, else "1"): what HF Inference Endpoints do
    when scaled to zero. Clients must ride this out too."""
    overload_next: int = 0
    """Answer the next N generation requests with TGI's overloaded error (429, or in-band on streams)."""
    retry_after: str | None = None
    """A Retry-After header value for 429 answers and the proxy's 503s."""
    drop_before_first_byte_next: int = 0
    """Read the next N generation requests, then reset the connection without answering."""
    drop_mid_stream_next: int = 0
    """Reset the next N streams after `drop_after_tokens` token events."""
    drop_after_tokens: int = 3
    """Token events a stream sends before `drop_mid_stream_next` resets it."""
    stream_error_next: int = 0
    """The next N generation requests fail with `stream_error_type` (in-band after N tokens on streams)."""
    stream_error_after_tokens: int = 0
    """Token events a stream sends before `stream_error_next` fails it in-band."""
    stream_error_type: str = "generation"
    """The `error_type` of those failures (TGI's: "generation", "overloaded", "validation", ...)."""
    stream_error_streams_only: bool = False
    """Only streams consume `stream_error_next`: which requests fail no longer depends on arrival order."""
    scripted_responses: list[ScriptedResponse] = field(default_factory=list)
    """A queue of verbatim answers; each generation request pops one."""
    token_latency: float = 0.0
    """Seconds between tokens; overrides the emulator's own value when > 0."""
    first_token_latency: float = 0.0
    """Extra seconds before the first token."""
    exit_after: float | None = None
    """CLI only: log `exit_message` and exit with `exit_code` after this many seconds."""
    exit_code: int = 1
    """CLI only: the exit status of `exit_after`."""
    exit_message: str = DEFAULT_EXIT_MESSAGE
    """CLI only: the log line `exit_after` ends with."""


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "refuse_connections_for": (int, float),
    "unavailable_for": (int, float),
    "proxy_unavailable_for": (int, float),
    "overload_next": (int,),
    "retry_after": (str, type(None)),
    "drop_before_first_byte_next": (int,),
    "drop_mid_stream_next": (int,),
    "drop_after_tokens": (int,),
    "stream_error_next": (int,),
    "stream_error_after_tokens": (int,),
    "stream_error_type": (str,),
    "stream_error_streams_only": (bool,),
    "scripted_responses": (list,),
    "token_latency": (int, float),
    "first_token_latency": (int, float),
    "exit_after": (int, float, type(None)),
    "exit_code": (int,),
    "exit_message": (str,),
}


def _scripted(item: Any) -> ScriptedResponse:
    if isinstance(item, ScriptedResponse):
        return item
    if isinstance(item, dict):
        return ScriptedResponse.from_json(item)
    raise ValueError(f"a scripted response must be a ScriptedResponse or an object, not {item!r}")


def check_fault_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Validate `set_faults(**changes)` keyword arguments; scripted responses may be dicts."""
    checked: dict[str, Any] = {}
    for name, value in changes.items():
        types = _FIELD_TYPES.get(name)
        if types is None:
            raise ValueError(f"unknown fault {name!r}; known: {sorted(_FIELD_TYPES)}")
        # bool is an int subclass: accept it only where a flag is expected.
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise ValueError(f"fault {name!r} has the wrong type: {value!r}")
        if name == "scripted_responses":
            value = [_scripted(item) for item in value] if isinstance(value, list) else value
        elif isinstance(value, int | float) and value < 0:
            raise ValueError(f"fault {name!r} must not be negative")
        checked[name] = value
    return checked


def faults_changes_from_json(obj: Any) -> dict[str, Any]:
    """Validate the body of POST /__emulator__/faults."""
    if not isinstance(obj, dict):
        raise ValueError("the body must be a JSON object of Faults fields")
    return check_fault_changes(obj)


class FaultState:
    """`Faults` plus the lock and clocks that make them safe to change from any thread."""

    def __init__(self, faults: Faults) -> None:
        self._lock = threading.Lock()
        self.faults = faults
        self._unavailable_until = 0.0
        # unavailable_for is a duration: remember the value we last turned into a deadline, so that a
        # direct `emulator.faults.unavailable_for = x` also starts a new window.
        self._seen_unavailable_for = faults.unavailable_for
        self._proxy_until = 0.0
        self._seen_proxy_for = 0.0
        self._listening = False

    def swap(self, faults: Faults) -> None:
        """Swap in a new Faults object (emulator.faults = ...)."""
        with self._lock:
            self.faults = faults
            self._seen_unavailable_for = -1.0 if self._listening else faults.unavailable_for
            self._seen_proxy_for = -1.0

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply validated changes atomically."""
        checked = check_fault_changes(changes)
        with self._lock:
            for name, value in checked.items():
                setattr(self.faults, name, value)
            if "unavailable_for" in checked and self._listening:
                self._unavailable_until = time.monotonic() + checked["unavailable_for"]
                self._seen_unavailable_for = checked["unavailable_for"]

    def reset(self) -> None:
        """Every knob back to its default, in place (references to `faults` stay valid)."""
        defaults = Faults()
        with self._lock:
            for spec in fields(Faults):
                setattr(self.faults, spec.name, getattr(defaults, spec.name))
            self._unavailable_until = 0.0
            self._seen_unavailable_for = 0.0
            self._proxy_until = 0.0
            self._seen_proxy_for = 0.0

    def mark_listening(self) -> None:
        """The socket accepts connections now: the unavailable window starts."""
        with self._lock:
            self._listening = True
            self._unavailable_until = time.monotonic() + self.faults.unavailable_for
            self._seen_unavailable_for = self.faults.unavailable_for
            self._proxy_until = time.monotonic() + self.faults.proxy_unavailable_for
            self._seen_proxy_for = self.faults.proxy_unavailable_for

    def unhealthy(self) -> bool:
        """Whether TGI's health check fails now (GET /health answers 503)."""
        with self._lock:
            value = self.faults.unavailable_for
            if value != self._seen_unavailable_for:
                self._seen_unavailable_for = value
                self._unavailable_until = time.monotonic() + value
            return time.monotonic() < self._unavailable_until

    def proxy_unavailable(self) -> bool:
        """Whether the proxy in front answers 503 now."""
        with self._lock:
            value = self.faults.proxy_unavailable_for
            if value != self._seen_proxy_for:
                self._seen_proxy_for = value
                self._proxy_until = time.monotonic() + value
            return time.monotonic() < self._proxy_until

    def take(self, counter: str) -> bool:
        """Consume one unit of a `*_next` counter."""
        with self._lock:
            remaining = getattr(self.faults, counter)
            if remaining > 0:
                setattr(self.faults, counter, remaining - 1)
                return True
            return False

    def pop_scripted(self) -> ScriptedResponse | None:
        """The next scripted response, if any."""
        with self._lock:
            if self.faults.scripted_responses:
                return self.faults.scripted_responses.pop(0)
            return None

    def snapshot(self) -> Faults:
        """A copy of the current knobs."""
        with self._lock:
            return replace(self.faults, scripted_responses=list(self.faults.scripted_responses))

    def to_json(self) -> dict[str, Any]:
        """The current knobs as JSON (bytes bodies decoded as UTF-8 with replacement)."""
        data = asdict(self.snapshot())
        scripted_list: list[dict[str, Any]] = data["scripted_responses"]
        for scripted in scripted_list:
            if isinstance(scripted["body"], bytes):
                scripted["body"] = scripted["body"].decode("utf-8", "replace")
        return data
