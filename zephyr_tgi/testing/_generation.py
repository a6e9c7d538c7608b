"""Turning a validated request into generated tokens, finish reason and details (no I/O)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._grammar import grammar_reply
from ._replies import expected_reply
from ._tokenizer import EOS_ID, EmulatorTokenizer
from ._validation import ValidRequest

__all__ = ["GenToken", "Generation", "derived_seed", "generate"]

_EOS_TEXT = "</s>"
# Alternatives offered in top_tokens; any short words do.
_ALTERNATIVES = (" the", " a", ",", ".", " and", " to", " of", " is", " it", "\n")


@dataclass(frozen=True, slots=True)
class GenToken:
    """A generated token as TGI's `Token` serialises it."""

    id: int
    text: str
    logprob: float
    special: bool

    def to_json(self) -> dict[str, Any]:
        """TGI field order: id, text, logprob, special."""
        return {"id": self.id, "text": self.text, "logprob": self.logprob, "special": self.special}


@dataclass(slots=True)
class Generation:
    """One generated sequence."""

    tokens: list[GenToken]
    text: str
    finish_reason: str
    seed: int | None
    top_tokens: list[list[GenToken]] = field(default_factory=list)
    prefill: list[dict[str, Any]] = field(default_factory=list)


def _hash_float(*parts: object) -> float:
    """A stable pseudo-random float in [0, 1) from the parts."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _logprob(*parts: object) -> float:
    """A negative logprob in (-4, -0.0001], rounded like an f32 prints."""
    return -round(0.0001 + 4 * _hash_float(*parts) ** 3, 4)


def prompt_logprob(inputs: str, index: int, token_id: int) -> float:
    """The logprob of the prompt's token at `index` (BOS is 0): what every dialect reports for it."""
    return _logprob(inputs, "prefill", index, token_id)


def derived_seed(prompt: str, salt: int | None = None) -> int:
    """The seed reported when a sampling request sends none (TGI would pick a random u64)."""
    digest = hashlib.sha256(f"{salt}\x1f{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _top_tokens(tokenizer: EmulatorTokenizer, chosen: GenToken, n: int, step: int) -> list[GenToken]:
    """n candidates for one step, sorted by logprob, the chosen token first."""
    out = [chosen]
    logprob = chosen.logprob
    for index in range(n - 1):
        text = _ALTERNATIVES[(step + index) % len(_ALTERNATIVES)]
        spans = tokenizer.encode(text)
        token_id = spans[0].id if spans else 3 + index
        logprob = round(logprob - 0.25 - _hash_float(step, index), 4)
        out.append(GenToken(token_id, text, logprob, False))
    return out[:n]


def reply_for(
    valid: ValidRequest,
    *,
    replies: Mapping[str, str] | None,
    text_seed: int | None,
) -> str:
    """The full reply text before truncation: a forced reply, grammar instance, scripted reply or pseudo text."""
    if valid.reply is not None:
        return valid.reply
    if valid.grammar is not None:
        return grammar_reply(*valid.grammar)
    return expected_reply(valid.inputs, replies=replies, seed=text_seed)


def generate(
    valid: ValidRequest,
    tokenizer: EmulatorTokenizer,
    *,
    replies: Mapping[str, str] | None = None,
    sequence: int = 0,
    seed_salt: int | None = None,
    prefill_logprobs: bool = False,
) -> Generation:
    """Generate one sequence the way TGI's stopping criteria would cut it.

    Text depends on the request's seed only when it samples with an explicit seed; sequence > 0
    (best_of) uses derived seeds so the alternatives differ.
    """
    if valid.sampling:
        seed: int | None = valid.seed if valid.seed is not None else derived_seed(valid.inputs, seed_salt)
        if sequence:
            seed = derived_seed(valid.inputs, sequence if seed_salt is None else seed_salt + sequence)
    else:
        seed = None
    text_seed = valid.seed if valid.sampling and sequence == 0 else seed if sequence else None
    reply = reply_for(valid, replies=replies, text_seed=text_seed)

    tokens: list[GenToken] = []
    top_tokens: list[list[GenToken]] = []
    generated = ""
    finish_reason = ""
    stops = valid.stop
    salt = f"{valid.inputs}\x1f{seed}"
    pieces = tokenizer.encode(reply)
    # Appending EOS after the reply lets one loop apply TGI's check order: length, then EOS, then stop.
    candidates = [(span.id, span.text) for span in pieces] + [(EOS_ID, _EOS_TEXT)]
    for step, (token_id, token_text) in enumerate(candidates):
        is_eos = token_id == EOS_ID
        token = GenToken(token_id, token_text, _logprob(salt, step, token_id), is_eos)
        tokens.append(token)
        if valid.top_n_tokens:
            top_tokens.append(_top_tokens(tokenizer, token, valid.top_n_tokens, step))
        if not is_eos:
            generated += token_text
        if len(tokens) >= valid.max_new_tokens:
            finish_reason = "length"
        elif is_eos:
            finish_reason = "eos_token"
        elif stops and any(generated.endswith(stop) for stop in stops):
            finish_reason = "stop_sequence"
        if finish_reason:
            break
    prefill: list[dict[str, Any]] = []
    if prefill_logprobs and valid.decoder_input_details:
        for index, span in enumerate(valid.input_tokens):
            logprob = None if index == 0 else prompt_logprob(valid.inputs, index, span.id)
            prefill.append({"id": span.id, "text": span.text, "logprob": logprob})
    return Generation(
        tokens=tokens,
        text=generated,
        finish_reason=finish_reason,
        seed=seed,
        top_tokens=top_tokens,
        prefill=prefill,
    )
