"""TGI's own API: POST /, /generate, /generate_stream, /tokenize and the info routes."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from ._core import TEXT, TGI_DOCKER_LABEL, TGI_SHA, TGI_VERSION, EncodeToken, Handler, Plan, RouterCore
from ._generation import Generation, GenToken
from ._http import HTTPConnection, HTTPRequest
from ._requests import GenerateRequest, parse_generate_request
from ._sse import native_error, sse, stream_event, token_sse
from ._tokenizer import BOS_ID, TokenSpan

__all__ = ["NativeRoutes", "simple_token"]


class NativeRoutes:
    """The native generation routes and the info routes of TGI's router."""

    def __init__(self, core: RouterCore) -> None:
        self._core = core
        config = core.config
        self._model_sha = hashlib.sha1(f"{config.model_id}@{config.revision}".encode()).hexdigest()

    def routes(self) -> dict[str, dict[str, Handler]]:
        """Path -> method -> handler."""
        return {
            "/": {"GET": self._health, "POST": self._compat_generate},
            "/health": {"GET": self._health},
            "/ping": {"GET": self._health},
            "/info": {"GET": self._info},
            "/metrics": {"GET": self._metrics},
            "/generate": {"POST": self._generate},
            "/generate_stream": {"POST": self._generate_stream},
            "/tokenize": {"POST": self._tokenize},
        }

    # --- generation ---------------------------------------------------------------------------------

    async def _compat_generate(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        raw, text = self._core.body(request)
        parsed = parse_generate_request(raw, compat=True, text=text)
        if parsed.parameters.return_full_text is None:
            # The model's pipeline tag is text-generation, for which TGI's compat route echoes the prompt.
            parsed.parameters.return_full_text = True
        if parsed.stream:
            await self._native_stream(conn, parsed)
        else:
            await self._native_once(conn, parsed, compat=True)

    async def _generate(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        raw, text = self._core.body(request)
        await self._native_once(conn, parse_generate_request(raw, text=text), compat=False)

    async def _generate_stream(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        raw, text = self._core.body(request)
        await self._native_stream(conn, parse_generate_request(raw, text=text))

    async def _native_once(self, conn: HTTPConnection, request: GenerateRequest, *, compat: bool) -> None:
        core = self._core
        started = time.monotonic()
        core.recorder.tgi_request()
        plan = await core.run_once(request)
        valid = plan.valid
        prefix = request.inputs if valid.return_full_text else ""
        main = plan.generations[0]
        body: dict[str, Any] = {"generated_text": prefix + main.text}
        if valid.details or valid.decoder_input_details:
            details = _details(main)
            if len(plan.generations) > 1:
                sequences = [
                    {"generated_text": prefix + other.text, **_details(other)} for other in plan.generations[1:]
                ]
                top = details.pop("top_tokens", None)
                details["best_of_sequences"] = sequences
                if top is not None:
                    details["top_tokens"] = top
            body["details"] = details
        headers = core.timing_headers(started, plan.queued, request.inputs, valid.input_length, len(main.tokens))
        core.recorder.tgi_success(valid.input_length, len(main.tokens), time.monotonic() - started)
        await core.json(conn, 200, [body] if compat else body, headers)

    async def _native_stream(self, conn: HTTPConnection, request: GenerateRequest) -> None:
        core = self._core
        started = time.monotonic()
        core.recorder.tgi_request()
        await conn.start_stream(200, core.stream_headers(len(request.inputs)))
        prefix = request.inputs if request.parameters.return_full_text else ""
        want_details = request.parameters.details

        def encode_error(message: str, error_type: str) -> bytes:
            return sse(native_error(message, error_type))

        def encode_token_for(plan: Plan) -> EncodeToken:
            generation = plan.generations[0]

            def encode(index: int, token: GenToken, top: list[GenToken] | None, last: bool) -> bytes:
                if not last:
                    return token_sse(index + 1, token) if top is None else sse(stream_event(index + 1, token, top))
                details = None
                if want_details:
                    details = {
                        "finish_reason": generation.finish_reason,
                        "generated_tokens": len(generation.tokens),
                        "seed": generation.seed,
                        "input_length": plan.valid.input_length,
                    }
                return sse(stream_event(index + 1, token, top, prefix + generation.text, details))

            return encode

        # No [DONE] on this route: the final event (or an error event) ends the stream.
        outcome = await core.stream(conn, request, started, encode_token_for, encode_error)
        if outcome != "dropped":
            await conn.end_stream()

    # --- tokenization -------------------------------------------------------------------------------

    async def _tokenize(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        raw, text = self._core.body(request)
        parsed = parse_generate_request(raw, text=text)
        # The encoding includes BOS with offsets (0, 0), which TGI renders as empty text. `truncate` is
        # ignored here: TGI returns the whole encoding (TGI.md §9).
        spans = [TokenSpan(BOS_ID, "", 0, 0), *self._core.tokenizer.encode(parsed.inputs)]
        await self._core.json(conn, 200, [simple_token(span, parsed.inputs) for span in spans], [])

    # --- info routes --------------------------------------------------------------------------------

    async def _health(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        if self._core.faults.unhealthy():
            await self._core.error(conn, 503, "unhealthy", "healthcheck")
        else:
            await conn.respond(200, b"", [])

    def info(self) -> dict[str, Any]:
        """The /info document."""
        config = self._core.config
        limits = config.limits
        return {
            "model_id": config.model_id,
            "model_sha": self._model_sha,
            "model_pipeline_tag": "text-generation",
            "max_concurrent_requests": limits.max_concurrent_requests,
            "max_best_of": limits.max_best_of,
            "max_stop_sequences": limits.max_stop_sequences,
            "max_input_tokens": limits.max_input_tokens,
            "max_total_tokens": limits.max_total_tokens,
            "validation_workers": 2,
            "max_client_batch_size": limits.max_client_batch_size,
            "router": "text-generation-router",
            "version": TGI_VERSION,
            "sha": TGI_SHA,
            "docker_label": TGI_DOCKER_LABEL,
        }

    async def _info(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        await self._core.json(conn, 200, self.info(), [])

    async def _metrics(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        await conn.respond(200, self._core.recorder.prometheus(self._core.queued).encode("utf-8"), [TEXT])


def _details(generation: Generation) -> dict[str, Any]:
    details: dict[str, Any] = {
        "finish_reason": generation.finish_reason,
        "generated_tokens": len(generation.tokens),
        "seed": generation.seed,
        "prefill": generation.prefill,
        "tokens": [token.to_json() for token in generation.tokens],
    }
    if generation.top_tokens:
        details["top_tokens"] = [[t.to_json() for t in step] for step in generation.top_tokens]
    return details


def simple_token(span: TokenSpan, text: str) -> dict[str, Any]:
    """TGI's `SimpleToken`: start/stop are byte offsets into the UTF-8 input, as tokenizers reports them."""
    start = len(text[: span.start].encode("utf-8"))
    stop = start + len(text[span.start : span.stop].encode("utf-8"))
    return {"id": span.id, "text": span.text, "start": start, "stop": stop}
