"""Sampling options: validated as TGI validates them, merged in layers, normalised to TGI's wire format."""

from __future__ import annotations

import builtins
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .._engines.options import SGLangOptions, VLLMOptions
from .._errors import ConfigurationError
from .._models import OptionsModel
from .templates import EOS_TOKEN, check_unicode

__all__ = [
    "PRESETS",
    "Grammar",
    "Limits",
    "PresetName",
    "SamplingParams",
    "check_limits",
    "merge_params",
    "to_wire",
]

_U64_MAX = 2**64 - 1
_U32_MAX = 2**32 - 1
_I32_MAX = 2**31 - 1


def as_f32(value: float) -> float:
    """`value` rounded to a 32-bit float, as TGI (serde, f32 fields) will read it."""
    result: float = struct.unpack("f", struct.pack("f", value))[0]
    return result


PresetName = Literal["model_card", "zephyr_card", "greedy"]


class Grammar(OptionsModel):
    """Constrained decoding: a JSON schema or a regular expression (TGI's `grammar` parameter).

    Attributes:
        type: "json" (a JSON schema), "json_schema" (`{"schema": {...}, "name": ...}`) or "regex".
        value: The schema, or the regular expression.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["json", "regex", "json_schema"]
    value: Any

    @model_validator(mode="after")
    def _check_value(self) -> Grammar:
        if self.type == "regex":
            if not isinstance(self.value, str) or not self.value:
                raise ValueError("a regex grammar needs a non-empty pattern string")
        elif self.type == "json":
            schema = json.loads(self.value) if isinstance(self.value, str) else self.value
            if not isinstance(schema, dict) or "properties" not in schema:
                raise ValueError("a json grammar needs a JSON schema object with 'properties' (TGI requires it)")
        elif not isinstance(self.value, dict) or not isinstance(self.value.get("schema"), dict):
            raise ValueError("a json_schema grammar needs {'schema': {...}} (and optionally 'name')")
        return self

    @classmethod
    def json_schema(cls, schema: Mapping[str, Any] | builtins.type[BaseModel]) -> Grammar:
        """A JSON grammar from a schema dict or a pydantic model class.

        Args:
            schema: A JSON schema, or a pydantic model class whose schema is used.
        """
        value = schema.model_json_schema() if isinstance(schema, type) else dict(schema)
        return cls(type="json", value=value)

    @classmethod
    def regex(cls, pattern: str) -> Grammar:
        """A regular-expression grammar.

        Args:
            pattern: The regular expression the whole answer must match.
        """
        return cls(type="regex", value=pattern)


class SamplingParams(OptionsModel):
    """Every TGI generate parameter, checked client-side against TGI's own rules.

    `None` means "not set": the server's default applies. Two of TGI's quirks are smoothed:
    `temperature=0` means greedy decoding (TGI's `/generate` would answer 422), and `top_p=1.0` or
    `typical_p=1.0` mean "off" and are not sent (TGI only accepts values strictly below 1).
    Limits that depend on the server (stop-sequence count, best_of, top_n_tokens, the token budget) are
    checked against its `/info` when a request is built.

    Attributes:
        max_new_tokens: Tokens to generate at most; unset, the client fits it to the window (`budget="clamp"`).
        temperature: Softmax temperature; 0 means greedy decoding.
        top_p: Nucleus sampling: keep the most likely tokens up to this probability mass (1.0: off).
        top_k: Keep the `top_k` most likely tokens.
        typical_p: Typical sampling mass (1.0: off).
        repetition_penalty: Penalty on tokens already in the prompt or answer (1.0: none).
        frequency_penalty: OpenAI-style penalty growing with a token's count so far, from -2 to 2.
        do_sample: Sample instead of greedy decoding (implied by the sampling options above).
        seed: Random seed of the sampling, for repeatable answers.
        stop: Stop sequences (a string or several); `</s>` is always one.
        truncate: Keep only the last `truncate` prompt tokens.
        watermark: Watermark the answer (Kirchenbauer et al., 2023).
        return_full_text: Put the prompt before the answer in `generated_text`.
        details: Ask for tokens, logprobs and the finish reason (the client asks by default).
        decoder_input_details: Ask for the prompt's tokens and logprobs (`prefill`; TGI needs
            `--enable-prefill-logprobs`).
        top_n_tokens: Also return the `top_n_tokens` most likely tokens at each step.
        best_of: Generate `best_of` sequences and return the best (needs sampling).
        grammar: Constrain the answer to a JSON schema or a regex.
        engine_options: Options only vLLM or SGLang has; any other engine refuses them before sending.
    """

    # inf and NaN cannot be sent as JSON; TGI reads floats as f32 and integers as u32/i32/u64.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    max_new_tokens: int | None = Field(default=None, gt=0, le=_U32_MAX)
    temperature: float | None = Field(default=None, ge=0.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, gt=0, le=_I32_MAX)
    typical_p: float | None = Field(default=None, gt=0.0, le=1.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    do_sample: bool | None = None
    seed: int | None = Field(default=None, ge=0, le=_U64_MAX)
    stop: tuple[str, ...] = ()
    truncate: int | None = Field(default=None, gt=0, le=_U32_MAX)
    watermark: bool | None = None
    return_full_text: bool | None = None
    details: bool | None = None
    decoder_input_details: bool | None = None
    top_n_tokens: int | None = Field(default=None, ge=0, le=_U32_MAX)
    best_of: int | None = Field(default=None, gt=0, le=_U32_MAX)
    grammar: Grammar | None = None
    # Options only one engine has (vLLM's min_p, session_id, ...): any other engine refuses them before sending.
    engine_options: VLLMOptions | SGLangOptions | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_tuple(cls, value: Any) -> Any:
        if isinstance(value, str):
            return (value,)
        return tuple(value) if isinstance(value, list) else value

    @field_validator("stop")
    @classmethod
    def _stop_not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not item for item in value):
            raise ValueError("stop sequences must be non-empty strings")
        for item in value:
            check_unicode(item, "a stop sequence")
        return value

    @field_validator("temperature", "repetition_penalty", "top_p", "typical_p")
    @classmethod
    def _positive_in_f32(cls, value: float | None) -> float | None:
        # TGI stores these as f32: a tiny positive double becomes 0.0 there, and TGI answers 422.
        if value is not None and value > 0 and as_f32(value) == 0.0:
            raise ValueError(f"{value!r} is too small: TGI reads it as a 32-bit float, which makes it 0")
        return value

    @model_validator(mode="after")
    def _check_best_of(self) -> SamplingParams:
        if self.best_of is not None and self.best_of > 1:
            if not self.samples:
                raise ValueError("you must use sampling when `best_of` is > 1 (set do_sample=True or a temperature)")
            if self.seed is not None:
                raise ValueError("`seed` must not be set when `best_of` > 1")
        return self

    @property
    def greedy(self) -> bool:
        """True when these options decode greedily (no sampling)."""
        return not self.samples

    @property
    def samples(self) -> bool:
        """True when TGI will sample: do_sample, or any sampling knob that is actually sent."""
        if self.temperature == 0:
            return False
        return bool(
            self.do_sample
            or self.temperature is not None
            or self.top_k is not None
            or (self.top_p is not None and as_f32(self.top_p) < 1.0)
            or (self.typical_p is not None and as_f32(self.typical_p) < 1.0)
        )

    @classmethod
    def preset(cls, name: PresetName) -> SamplingParams:
        """A named preset: `model_card`, `zephyr_card` or `greedy`.

        Args:
            name: The preset's name (the keys of `PRESETS`).

        Raises:
            ConfigurationError: an unknown name.
        """
        try:
            return PRESETS[name]
        except KeyError:
            raise ConfigurationError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


PRESETS: dict[str, SamplingParams] = {
    # TheBloke/zephyr-7B-alpha-GPTQ model card, "Serving this model from TGI" example.
    "model_card": SamplingParams(
        do_sample=True, temperature=0.7, top_p=0.95, top_k=40, repetition_penalty=1.1, max_new_tokens=512
    ),
    # HuggingFaceH4/zephyr-7b-alpha model card, pipeline example.
    "zephyr_card": SamplingParams(do_sample=True, temperature=0.7, top_k=50, top_p=0.95, max_new_tokens=256),
    "greedy": SamplingParams(do_sample=False),
}

ParamsLayer = SamplingParams | Mapping[str, Any] | None


def merge_params(*layers: ParamsLayer) -> SamplingParams:
    """Merge layers left to right (client defaults, per-call params, keyword overrides); later wins.

    Only fields a layer set explicitly override earlier layers.

    Raises:
        ConfigurationError: an unknown option or a value TGI would reject.
    """
    data: dict[str, Any] = {}
    for layer in layers:
        if layer is None:
            continue
        if isinstance(layer, SamplingParams):
            data.update({name: getattr(layer, name) for name in layer.model_fields_set})
        else:
            data.update(layer)
    try:
        return SamplingParams.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'params'}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigurationError(f"invalid sampling options: {problems}") from exc


@dataclass(frozen=True, slots=True)
class Limits:
    """The deployment limits TGI enforces, as its `/info` reports them (TGI's launcher defaults here).

    Attributes:
        max_input_tokens: The longest prompt, in tokens.
        max_total_tokens: Prompt + new tokens at most, per request.
        max_stop_sequences: Stop sequences per request at most.
        max_best_of: `best_of` at most.
        max_top_n_tokens: `top_n_tokens` at most.
        max_concurrent_requests: Requests in flight before the server answers 429.
    """

    max_input_tokens: int = 4095
    max_total_tokens: int = 4096
    max_stop_sequences: int = 4
    max_best_of: int = 2
    max_top_n_tokens: int = 5
    max_concurrent_requests: int = 128


def check_limits(params: SamplingParams, limits: Limits, *, stream: bool) -> None:
    """Reject what TGI would reject for this deployment or route, before anything is sent.

    Raises:
        ConfigurationError: with TGI's own wording where it has one.
    """
    stops = stop_sequences(params)
    if len(stops) > limits.max_stop_sequences:
        raise ConfigurationError(
            f"`stop` supports up to {limits.max_stop_sequences} stop sequences. Given: {len(stops)} "
            f"(zephyr_tgi always adds {EOS_TOKEN!r}, so {limits.max_stop_sequences - 1} are left for you)"
        )
    if params.best_of is not None:
        if params.best_of > limits.max_best_of:
            raise ConfigurationError(f"`best_of` must be > 0 and <= {limits.max_best_of}. Given: {params.best_of}")
        if stream and params.best_of != 1:
            raise ConfigurationError("`best_of` != 1 is not supported when streaming tokens")
    if params.top_n_tokens is not None and params.top_n_tokens > limits.max_top_n_tokens:
        raise ConfigurationError(
            f"`top_n_tokens` must be >= 0 and <= {limits.max_top_n_tokens}. Given: {params.top_n_tokens}"
        )
    if stream and params.decoder_input_details:
        raise ConfigurationError(
            "`decoder_input_details` == true is not supported when streaming tokens; use a non-streaming call"
        )
    # No cap on max_new_tokens alone: TGI >= 3.1.1 accepts any value and stops at the window (TGI.md §1).
    if params.truncate is not None and params.truncate > limits.max_input_tokens:
        raise ConfigurationError(
            f"`truncate` must be strictly positive and less than {limits.max_input_tokens}. Given: {params.truncate}"
        )


def stop_sequences(params: SamplingParams) -> list[str]:
    """The stop sequences sent: the caller's, then `</s>`, without duplicates."""
    stops = list(dict.fromkeys(params.stop))
    if EOS_TOKEN not in stops:
        stops.append(EOS_TOKEN)
    return stops


_SAMPLING_KNOBS = ("temperature", "top_k", "top_p", "typical_p")
_PASSTHROUGH = (
    "max_new_tokens",
    "repetition_penalty",
    "frequency_penalty",
    "seed",
    "truncate",
    "watermark",
    "return_full_text",
    "decoder_input_details",
    "top_n_tokens",
    "best_of",
)


def to_wire(params: SamplingParams) -> dict[str, Any]:
    """TGI's `parameters` object for these options (always an object: omitting it would turn sampling on)."""
    wire: dict[str, Any] = {}
    if params.temperature == 0:
        # Greedy: TGI rejects temperature 0, and any other knob would switch sampling back on.
        wire["do_sample"] = False
    else:
        if params.do_sample is not None:
            wire["do_sample"] = params.do_sample
        for name in _SAMPLING_KNOBS:
            value = getattr(params, name)
            # 1.0 means "off" for top_p/typical_p, and so does anything TGI's f32 rounds up to 1.0.
            if value is None or (name in ("top_p", "typical_p") and as_f32(value) >= 1.0):
                continue
            wire[name] = value
    for name in _PASSTHROUGH:
        value = getattr(params, name)
        if value is not None:
            wire[name] = value
    # Prefill details only come with details: asking for one without the other would be silently dropped.
    wire["details"] = True if params.details is None or params.decoder_input_details else params.details
    wire["stop"] = stop_sequences(params)
    if params.grammar is not None:
        wire["grammar"] = {"type": params.grammar.type, "value": params.grammar.value}
    return wire
