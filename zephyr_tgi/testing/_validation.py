"""TGI's `Validation::validate()`: the same checks, order and verbatim messages (TGI.md §2)."""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from typing import Any

from ._requests import GenerateRequest, Grammar
from ._tokenizer import BOS_ID, EmulatorTokenizer, TokenSpan

__all__ = ["Limits", "ValidRequest", "ValidationError", "validate", "validate_best_of"]

# TGI schedules generation in chunks of at most this many tokens (router/src/validation.rs).
DEFAULT_GENERATION_LENGTH = 1024
BOS_SPAN = TokenSpan(BOS_ID, "<s>", 0, 0)


class ValidationError(Exception):
    """A `ValidationError`; `str()` is the message without the `Input validation error: ` prefix."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The launcher limits that validation and /info report."""

    max_concurrent_requests: int = 128
    max_best_of: int = 2
    max_stop_sequences: int = 4
    max_top_n_tokens: int = 5
    max_input_tokens: int = 3696
    max_total_tokens: int = 4096
    max_client_batch_size: int = 4


@dataclass(frozen=True, slots=True)
class ValidRequest:
    """A request that passed validation, with what generation needs."""

    inputs: str
    input_tokens: tuple[TokenSpan, ...]
    input_length: int
    max_new_tokens: int
    sampling: bool
    seed: int | None
    stop: tuple[str, ...]
    top_n_tokens: int
    details: bool
    decoder_input_details: bool
    return_full_text: bool
    best_of: int
    grammar: tuple[str, Any] | None
    reply: str | None = None


def _f32(value: float) -> float:
    """Round to f32 like serde does for TGI's `Option<f32>` fields (0.99999999 becomes 1.0)."""
    try:
        result: float = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        return float("inf") if value > 0 else float("-inf")
    return result


def validate_best_of(best_of: int, limits: Limits) -> int:
    """`validate_best_of`, called before the permit for best_of > 1."""
    if limits.max_best_of == 1 and best_of != 1:
        raise ValidationError("`best_of` != 1 is not allowed for this endpoint")
    if best_of > limits.max_best_of:
        raise ValidationError(f"`best_of` must be > 0 and <= {limits.max_best_of}. Given: {best_of}")
    return best_of


def _validate_grammar(grammar: Grammar) -> tuple[str, Any]:
    """Check a grammar like TGI's router; returns ("json", schema) or ("regex", pattern)."""
    if grammar.kind == "regex":
        try:
            re.compile(grammar.value)
        except re.error as exc:
            # TGI forwards regexes unchecked; rejecting uncompilable ones here is an emulator choice.
            raise ValidationError(f"grammar is not valid: {exc}") from None
        return ("regex", grammar.value)
    schema: Any
    if grammar.kind == "json_schema":
        schema = grammar.value["schema"]
    elif isinstance(grammar.value, str):
        try:
            schema = json.loads(grammar.value)
        except ValueError as exc:
            raise ValidationError(f"grammar is not valid: {exc}") from None
    elif isinstance(grammar.value, dict):
        schema = grammar.value
    else:
        # Verbatim TGI: a json grammar that is neither an object nor a string is "not supported".
        raise ValidationError("grammar is not supported")
    if not isinstance(schema, dict | bool):
        raise ValidationError(f'grammar is not valid: {json.dumps(schema)} is not of types "boolean", "object"')
    if not isinstance(schema, dict) or "properties" not in schema:
        raise ValidationError("grammar is not valid: Grammar must have a 'properties' field")
    return ("json", schema)


def validate(
    request: GenerateRequest,
    limits: Limits,
    tokenizer: EmulatorTokenizer,
    *,
    grammar_support: bool = True,
) -> ValidRequest:
    """Run TGI's checks in TGI's order and tokenize the input (BOS when add_special_tokens)."""
    p = request.parameters
    best_of = 1 if p.best_of is None else p.best_of
    sampling = p.do_sample or any(v is not None for v in (p.temperature, p.top_k, p.top_p, p.typical_p))
    if best_of > 1 and not sampling:
        raise ValidationError("you must use sampling when `best_of` is > 1")
    if _f32(1.0 if p.temperature is None else p.temperature) <= 0.0:
        raise ValidationError("`temperature` must be strictly positive")
    if _f32(1.0 if p.repetition_penalty is None else p.repetition_penalty) <= 0.0:
        raise ValidationError("`repetition_penalty` must be strictly positive")
    if not -2.0 <= _f32(0.0 if p.frequency_penalty is None else p.frequency_penalty) <= 2.0:
        raise ValidationError("`frequency_penalty` must be >= -2.0 and <= 2.0")
    if p.top_p is not None and not 0.0 < _f32(p.top_p) < 1.0:
        raise ValidationError("`top_p` must be > 0.0 and < 1.0")
    if p.typical_p is not None and not 0.0 < _f32(p.typical_p) < 1.0:
        raise ValidationError("`typical_p` must be > 0.0 and < 1.0")
    if p.top_k is not None and p.top_k <= 0:
        raise ValidationError("`top_k` must be strictly positive")
    if p.max_new_tokens == 0:
        raise ValidationError("`max_new_tokens` must be strictly positive")
    if len(p.stop) > limits.max_stop_sequences:
        raise ValidationError(f"`stop` supports up to {limits.max_stop_sequences} stop sequences. Given: {len(p.stop)}")
    if p.seed is not None and best_of > 1:
        raise ValidationError("`seed` must not be set when `best_of` > 1")
    top_n_tokens = 0 if p.top_n_tokens is None else p.top_n_tokens
    if top_n_tokens > limits.max_top_n_tokens:
        raise ValidationError(f"`top_n_tokens` must be >= 0 and <= {limits.max_top_n_tokens}. Given: {top_n_tokens}")
    if not request.inputs:
        raise ValidationError("`inputs` cannot be empty")
    if p.truncate is not None and (p.truncate == 0 or p.truncate > limits.max_input_tokens):
        raise ValidationError(
            f"`truncate` must be strictly positive and less than {limits.max_input_tokens}. Given: {p.truncate}"
        )

    tokens = tokenizer.encode(request.inputs)
    if request.add_special_tokens:
        tokens = [BOS_SPAN, *tokens]
    if p.truncate is not None and len(tokens) > p.truncate:
        # TGI truncates from the left, so BOS is the first token to go.
        tokens = tokens[-p.truncate :]
    input_length = len(tokens)
    # TGI >= 3.1.1 (validate_input): the check uses one scheduling chunk of at most 1024 tokens; generation
    # is re-queued chunk by chunk until max_new_tokens (or the window, when unset or larger) is reached.
    window_left = max(limits.max_total_tokens - input_length, 0)
    requested = window_left if p.max_new_tokens is None else p.max_new_tokens
    chunk = min(requested, DEFAULT_GENERATION_LENGTH)
    if input_length + chunk > limits.max_total_tokens:
        raise ValidationError(
            f"`inputs` tokens + `max_new_tokens` must be <= {limits.max_total_tokens}. "
            f"Given: {input_length} `inputs` tokens and {chunk} `max_new_tokens`"
        )
    # Generation stops at the window whatever was asked.
    max_new_tokens = min(requested, window_left)
    if input_length > limits.max_input_tokens:
        raise ValidationError(f"`inputs` must have less than {limits.max_input_tokens} tokens. Given: {input_length}")

    grammar = None
    if p.grammar is not None:
        if not grammar_support:
            raise ValidationError("grammar is not supported")
        grammar = _validate_grammar(p.grammar)

    return ValidRequest(
        inputs=request.inputs,
        input_tokens=tuple(tokens),
        input_length=input_length,
        max_new_tokens=max(max_new_tokens, 1),
        sampling=sampling,
        seed=p.seed,
        stop=tuple(p.stop),
        top_n_tokens=top_n_tokens,
        details=p.details,
        decoder_input_details=p.decoder_input_details,
        return_full_text=bool(p.return_full_text),
        best_of=max(best_of, 1),
        grammar=grammar,
        reply=request.reply,
    )
