"""TGI (text-generation-inference 3.x): native `/generate` routes, `grammar`, `{"error", "error_type"}` bodies."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from .._errors import Redactor
from .._types import GenerationResult, ServerInfo
from .base import ChunkAssembler, Engine, SpanExchange

if TYPE_CHECKING:
    from .._client.core import NativeRequest
    from .._client.params import SamplingParams

__all__ = ["TGI"]


class TGI(Engine):
    """Hugging Face text-generation-inference: the client's native dialect."""

    name = "tgi"
    title = "TGI"
    generate_path = "/generate"
    stream_path = "/generate_stream"
    tokenize_path = "/tokenize"
    info_path = "/info"
    identify_path = "/info"
    scoring_path = "/generate"
    prefill_hint = (
        "the server returned no prefill logprobs: start TGI with --enable-prefill-logprobs "
        "(TGIServer(enable_prefill_logprobs=True))"
    )
    metrics_prefix: ClassVar[str] = "tgi_"
    summary_names: ClassVar[Mapping[str, str]] = {
        "requests_running": "tgi_batch_current_size",
        "requests_waiting": "tgi_queue_size",
        "requests_succeeded": "tgi_request_success",
        "prompt_tokens": "tgi_request_input_length_sum",
        "generated_tokens": "tgi_request_generated_tokens_sum",
    }

    def generation_fields(self, params: SamplingParams, *, stream: bool) -> dict[str, Any]:
        from .._client.params import to_wire

        self.check_params(params)
        return to_wire(params)

    def check_params(self, params: SamplingParams) -> None:
        # Every other option is TGI's own: the request's wire form (made once, with the request) carries it.
        if params.engine_options is not None:
            raise self.refuse(
                f"engine_options={type(params.engine_options).__name__}(...)",
                "they are another engine's own options",
            )

    def generate_body(self, request: NativeRequest, *, stream: bool) -> bytes:
        self.check_params(request.params)
        return request.payload()

    def parse_generation(self, body: bytes, request: NativeRequest) -> GenerationResult:
        from .._client.shaping import parse_generation

        return parse_generation(body, stops=request.stops, prompt=request.prompt)

    def stream_assembler(self, request: NativeRequest, redactor: Redactor) -> ChunkAssembler:
        from .._client.shaping import StreamAssembler

        return StreamAssembler(request.stops, request.prompt, redactor)

    def tokenize_body(self, text: str, *, add_special_tokens: bool = True) -> bytes:
        # TGI's /tokenize always adds BOS; callers that want it gone drop the first span.
        return json.dumps({"inputs": text}, ensure_ascii=False).encode()

    def span_exchange(self, text: str) -> SpanExchange:
        from .._client.shaping import parse_answers
        from .._types import TokenSpan

        answer = yield self.tokenize_path, self.tokenize_body(text)
        return parse_answers(TokenSpan, answer, what="/tokenize answer")

    def parse_prompt_logprobs(self, body: bytes, request: NativeRequest) -> list[float | None]:
        return [token.logprob for token in self.parse_generation(body, request).prefill]

    def parse_count(self, body: bytes) -> int:
        from .._client.shaping import parse_answers
        from .._types import TokenSpan

        return len(parse_answers(TokenSpan, body, what="/tokenize answer"))  # BOS included, as /generate counts

    def parse_ids(self, body: bytes) -> list[int]:
        from .._client.shaping import parse_answers
        from .._types import TokenSpan

        return [span.id for span in parse_answers(TokenSpan, body, what="/tokenize answer")]

    def parse_info(self, body: bytes) -> ServerInfo:
        from .._client.shaping import parse_answer

        return parse_answer(ServerInfo, body, what="/info")

    def recognises(self, answer: dict[str, Any]) -> bool:
        return "model_id" in answer

    def error_body(self, status: int, message: str, error_type: str) -> bytes:
        return json.dumps({"error": message, "error_type": error_type}, separators=(",", ":")).encode()
