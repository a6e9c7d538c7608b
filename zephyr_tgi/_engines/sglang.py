"""SGLang: `/v1/completions` with `json_schema` (a string) and `regex`, flat error bodies, `/get_model_info`.

SGLang's CompletionRequest is a plain pydantic model, which ignores unknown fields without a word: what it
lacks is refused here, before sending.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from .completions import CompletionsEngine

if TYPE_CHECKING:
    from .._client.params import Grammar

__all__ = ["SGLang"]


class SGLang(CompletionsEngine):
    """SGLang's server (`python -m sglang.launch_server`, image lmsysorg/sglang)."""

    name = "sglang"
    title = "SGLang"
    tokenize_path = "/v1/tokenize"
    identify_path = "/get_model_info"
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
        "decoder_input_details": "prompt logprobs (perplexity) are not wired for SGLang in zephyr_tgi yet",
    }

    def structured(self, grammar: Grammar) -> dict[str, Any]:
        if grammar.type == "regex":
            return {"regex": grammar.value}
        schema = grammar.value["schema"] if grammar.type == "json_schema" else grammar.value
        # SGLang's json_schema field is a string holding the schema.
        return {"json_schema": schema if isinstance(schema, str) else json.dumps(schema, separators=(",", ":"))}

    def truncate_field(self, truncate: int) -> dict[str, Any]:
        raise self.refuse(f"truncate={truncate!r}", self.refused["truncate"])

    def identifies(self, status: int, body: bytes) -> bool:
        if status != 200:
            return False
        try:
            data = json.loads(body)
        except ValueError:
            return False
        return isinstance(data, dict) and "model_path" in data

    def error_body(self, status: int, message: str, error_type: str) -> bytes:
        flat = {"object": "error", "message": message, "type": error_type, "param": None, "code": status}
        return json.dumps(flat, separators=(",", ":")).encode()
