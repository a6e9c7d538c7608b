"""What users configure: whether a client records OpenTelemetry spans and metrics, where to, and with content or not.

Nothing here imports OpenTelemetry: a client without telemetry never loads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._errors import ConfigurationError

if TYPE_CHECKING:
    from ._instrument import Instrumentation

__all__ = ["CAPTURE_CONTENT_ENV", "Telemetry", "TelemetryInput", "instrumentation_for"]

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
# The values the official GenAI instrumentations accept: the boolean of opentelemetry-instrumentation-openai-v2,
# and the content modes of opentelemetry-util-genai. The client records content on its spans only (it emits no
# log events), so only the modes that put content on spans turn capture on.
_CAPTURE_VALUES = {
    "true": True,
    "false": False,
    "span_only": True,
    "span_and_event": True,
    "event_only": False,
    "no_content": False,
}


@dataclass(frozen=True, slots=True)
class Telemetry:
    """OpenTelemetry settings of a client: `ZephyrClient(url, telemetry=Telemetry(...))` (`telemetry=True` is
    `Telemetry()`: the global providers, no content).

    Each generation call (`chat`, `chat_stream`, `generate`, `generate_stream`, `chat_completion`, and what is
    built on them) becomes one CLIENT span and records the GenAI client metrics, following the OpenTelemetry
    GenAI semantic conventions; its requests carry a W3C `traceparent`. Needs `pip install 'zephyr-tgi[otel]'`.

    Attributes:
        tracer_provider: where spans go; None uses OpenTelemetry's global tracer provider.
        meter_provider: where metrics go; None uses OpenTelemetry's global meter provider.
        capture_content: record prompts and answers on spans (`gen_ai.input.messages`,
            `gen_ai.output.messages`, `gen_ai.system_instructions`). None (the default) follows
            `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` (`true`, `span_only` or `span_and_event` turn it
            on), read when the client is made; off when unset.
        model: the model name to report as `gen_ai.request.model` when a request does not name one (TGI's native
            routes serve one model and take no name), e.g. "TheBloke/zephyr-7B-alpha-GPTQ".
    """

    tracer_provider: Any = None
    meter_provider: Any = None
    capture_content: bool | None = None
    model: str | None = None


TelemetryInput = Telemetry | bool | None


def instrumentation_for(setting: TelemetryInput, environ: Mapping[str, str]) -> Instrumentation | None:
    """The instrumentation a client's `telemetry=` setting asks for; None (and no import) when it is off.

    Raises:
        ConfigurationError: a malformed setting or environment variable, or the `otel` extra is not installed.
    """
    if setting is None or setting is False:
        return None
    if setting is True:
        setting = Telemetry()
    if not isinstance(setting, Telemetry):
        raise ConfigurationError(f"telemetry must be True, False or a Telemetry(...), got {type(setting).__name__}")
    if setting.capture_content is not None and not isinstance(setting.capture_content, bool):
        raise ConfigurationError("Telemetry(capture_content=) must be True, False or None")
    if setting.model is not None and (not isinstance(setting.model, str) or not setting.model.strip()):
        raise ConfigurationError("Telemetry(model=) must be a non-empty string or None")
    capture = setting.capture_content if setting.capture_content is not None else _capture_from(environ)
    try:
        from ._instrument import Instrumentation
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("opentelemetry"):
            raise
        raise ConfigurationError(
            "telemetry needs OpenTelemetry's API: pip install 'zephyr-tgi[otel]' (or pass telemetry=False)"
        ) from exc
    return Instrumentation(setting, capture_content=capture)


def _capture_from(environ: Mapping[str, str]) -> bool:
    raw = environ.get(CAPTURE_CONTENT_ENV, "").strip()
    if not raw:
        return False
    try:
        return _CAPTURE_VALUES[raw.lower()]
    except KeyError:
        raise ConfigurationError(
            f"{CAPTURE_CONTENT_ENV} must be one of {sorted(_CAPTURE_VALUES)} (any case), got {raw!r}"
        ) from None
