"""vLLM (0.33): `/v1/completions` with `structured_outputs`, `{"error": {...}}` envelopes, `/version`, `vllm:*`.

vLLM's request models accept unknown fields and only log them, so anything it lacks is refused here, before
sending: an ignored option would otherwise come back as HTTP 200 and an answer that did not honour it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .._errors import MalformedResponseError
from .base import SpanExchange
from .completions import CompletionsEngine
from .spans import form_of_piece, spans_of

if TYPE_CHECKING:
    from .._client.params import Grammar


class _TokenStrs(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    tokens: tuple[int, ...]
    token_strs: tuple[str, ...] | None = None


__all__ = ["VLLM"]


class VLLM(CompletionsEngine):
    """vLLM's OpenAI-compatible server (`vllm serve`, image vllm/vllm-openai)."""

    name = "vllm"
    title = "vLLM"
    tokenize_path = "/tokenize"
    identify_path = "/version"
    scoring_path = "/v1/completions"
    prefill_hint = (
        "the server answered without prompt_logprobs: it is not vLLM, or one that ignores the field "
        "(vLLM accepts unknown fields silently)"
    )
    metrics_prefix = "vllm:"
    summary_names: ClassVar[Mapping[str, str]] = {
        "requests_running": "vllm:num_requests_running",
        "requests_waiting": "vllm:num_requests_waiting",
        "requests_succeeded": "vllm:request_success_total",
        "prompt_tokens": "vllm:prompt_tokens_total",
        "generated_tokens": "vllm:generation_tokens_total",
    }
    needs_max_tokens = True  # completions default max_tokens to 16
    max_top_n_tokens = 20  # --max-logprobs' default
    max_concurrent_requests = 256  # --max-num-seqs' default; more requests queue
    refused: ClassVar[Mapping[str, str]] = {
        "typical_p": "vLLM has no typical sampling",
        "watermark": "vLLM 0.33 has no watermarking of TGI's kind",
        "best_of": "vLLM removed best_of",
    }

    def structured(self, grammar: Grammar) -> dict[str, Any]:
        if grammar.type == "regex":
            return {"structured_outputs": {"regex": grammar.value}}
        schema = grammar.value["schema"] if grammar.type == "json_schema" else grammar.value
        return {"structured_outputs": {"json": schema}}

    def truncate_field(self, truncate: int) -> dict[str, Any]:
        return {"truncate_prompt_tokens": truncate}

    def prompt_logprobs_fields(self) -> dict[str, Any]:
        # 0: each prompt token's own logprob and no alternatives (`--max-logprobs` bounds only what is above 0).
        return {"prompt_logprobs": 0}

    def span_exchange(self, text: str) -> SpanExchange:
        body = {"prompt": text, "add_special_tokens": True, "return_token_strs": True}
        answer = yield self.tokenize_path, json.dumps(body, ensure_ascii=False).encode()
        try:
            tokens = _TokenStrs.model_validate_json(answer)
        except ValidationError as exc:
            raise MalformedResponseError(f"the server's tokenize answer is not in vLLM's format: {exc}") from exc
        if tokens.token_strs is None or len(tokens.token_strs) != len(tokens.tokens):
            raise MalformedResponseError("the server's tokenize answer has no token_strs for its tokens (not vLLM?)")
        forms = [
            form_of_piece(token_id, piece) for token_id, piece in zip(tokens.tokens, tokens.token_strs, strict=True)
        ]
        return spans_of(text, forms, self.title)

    def recognises(self, answer: dict[str, Any]) -> bool:
        return isinstance(answer.get("version"), str)

    def error_body(self, status: int, message: str, error_type: str) -> bytes:
        envelope = {"error": {"message": message, "type": error_type, "param": None, "code": status}}
        return json.dumps(envelope, separators=(",", ":")).encode()
