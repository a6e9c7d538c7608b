"""SGLang: `/v1/completions` with `json_schema` (a string) and `regex`, flat error bodies, `/get_model_info`.

SGLang's CompletionRequest is a plain pydantic model, which ignores unknown fields without a word: what it
lacks is refused here, before sending.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .._errors import MalformedResponseError
from .base import SpanExchange
from .completions import CompletionsEngine
from .spans import form_of_decoded, spans_of

if TYPE_CHECKING:
    from .._client.core import NativeRequest
    from .._client.params import Grammar

DETOKENIZE_PATH = "/v1/detokenize"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Ids(_Wire):
    tokens: tuple[int, ...]


class _Texts(_Wire):
    text: tuple[str, ...]


class _MetaInfo(_Wire):
    # [logprob, token id, text]; the first token's logprob is None (nothing predicts it).
    input_token_logprobs: tuple[tuple[float | None, int, str | None], ...] | None = None


class _Native(_Wire):
    text: str
    meta_info: _MetaInfo


def _malformed(exc: ValidationError, what: str) -> MalformedResponseError:
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(map(str, first["loc"])) or "top level"
    return MalformedResponseError(f"the server's {what} is not in SGLang's format: {first['msg']} at {where}")


__all__ = ["SGLang"]


class SGLang(CompletionsEngine):
    """SGLang's server (`python -m sglang.launch_server`, image lmsysorg/sglang)."""

    name = "sglang"
    title = "SGLang"
    tokenize_path = "/v1/tokenize"
    identify_path = "/get_model_info"
    # The native route returns prompt logprobs (`return_logprob` from `logprob_start_len` 0); its completions
    # route would, only in its own echo layout.
    scoring_path = "/generate"
    scoring_overrides: ClassVar[Mapping[str, Any]] = {"max_new_tokens": 1}
    prefill_hint = "the server's /generate answer has no meta_info.input_token_logprobs (not SGLang?)"
    metrics_prefix = "sglang:"
    summary_names: ClassVar[Mapping[str, str]] = {
        "requests_running": "sglang:num_running_reqs",
        "requests_waiting": "sglang:num_queue_reqs",
        "prompt_tokens": "sglang:prompt_tokens_total",
        "generated_tokens": "sglang:generation_tokens_total",
    }
    needs_max_tokens = True  # max_tokens is an int defaulting to 16; null is refused
    max_top_n_tokens = 20
    max_concurrent_requests = 256
    refused: ClassVar[Mapping[str, str]] = {
        "typical_p": "SGLang has no typical sampling",
        "watermark": "SGLang has no watermarking",
        "best_of": "SGLang's completions do not implement best_of",
        "truncate": "SGLang's completions have no prompt truncation field",
        "decoder_input_details": (
            "its /v1/completions give prompt logprobs only in their echo layout; perplexity() reads them from "
            "SGLang's native /generate"
        ),
    }

    def structured(self, grammar: Grammar) -> dict[str, Any]:
        if grammar.type == "regex":
            return {"regex": grammar.value}
        schema = grammar.value["schema"] if grammar.type == "json_schema" else grammar.value
        # SGLang's json_schema field is a string holding the schema.
        return {"json_schema": schema if isinstance(schema, str) else json.dumps(schema, separators=(",", ":"))}

    def truncate_field(self, truncate: int) -> dict[str, Any]:
        raise self.refuse(f"truncate={truncate!r}", self.refused["truncate"])

    def span_exchange(self, text: str) -> SpanExchange:
        # SGLang's tokenize gives ids only: each id decoded alone says what it spells.
        answer = yield self.tokenize_path, self.tokenize_body(text)
        try:
            ids = _Ids.model_validate_json(answer).tokens
        except ValidationError as exc:
            raise _malformed(exc, "tokenize answer") from exc
        body = {"tokens": [[token_id] for token_id in ids], "skip_special_tokens": False}
        answer = yield DETOKENIZE_PATH, json.dumps(body).encode()
        try:
            texts = _Texts.model_validate_json(answer).text
        except ValidationError as exc:
            raise _malformed(exc, "detokenize answer") from exc
        if len(texts) != len(ids):
            raise MalformedResponseError(f"the server detokenized {len(texts)} of {len(ids)} tokens")
        return spans_of(text, [form_of_decoded(i, t) for i, t in zip(ids, texts, strict=True)], self.title)

    def scoring_body(self, request: NativeRequest) -> bytes:
        sampling = {"max_new_tokens": 1, "temperature": 0.0}
        body = {"text": request.prompt, "sampling_params": sampling, "return_logprob": True, "logprob_start_len": 0}
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

    def parse_prompt_logprobs(self, body: bytes, request: NativeRequest) -> list[float | None]:
        try:
            answer = _Native.model_validate_json(body)
        except ValidationError as exc:
            raise _malformed(exc, "/generate answer") from exc
        entries = answer.meta_info.input_token_logprobs
        return [] if entries is None else [entry[0] for entry in entries]

    def recognises(self, answer: dict[str, Any]) -> bool:
        return "model_path" in answer

    def error_body(self, status: int, message: str, error_type: str) -> bytes:
        flat = {"object": "error", "message": message, "type": error_type, "param": None, "code": status}
        return json.dumps(flat, separators=(",", ":")).encode()
