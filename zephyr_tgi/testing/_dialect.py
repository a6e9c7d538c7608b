"""vLLM's and SGLang's APIs over the emulator's token loop: `/v1/completions`, `/v1/models`, tokenize, health.

Each engine module in `zephyr_tgi._engines` says how its engine writes errors and where its routes are; this
module speaks that over HTTP. Requests are read as those engines read them: unknown fields are accepted and
ignored (vLLM's `extra="allow"`, SGLang's plain pydantic model), so a client that sends an option the engine
lacks gets HTTP 200 and an answer that did not honour it, exactly the failure zephyr_tgi refuses client-side.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from .._engines import Engine
from ._core import JSON, EncodeToken, Handler, Plan, RouteError, RouterCore
from ._generation import GenToken, prompt_logprob
from ._http import HTTPConnection, HTTPRequest
from ._json_body import BodyError
from ._requests import GenerateParameters, GenerateRequest, Grammar, read_json_body
from ._sse import DONE
from ._tokenizer import decode_one, piece_of
from ._validation import BOS_SPAN, ValidationError

__all__ = ["DIALECT_VERSIONS", "CompletionsDialect", "dialect_status"]

# What each dialect reports as its version (the releases ENGINES.md describes).
DIALECT_VERSIONS = {"vllm": "0.33.0", "sglang": "0.5.23"}
_EOS_ID = 2


def dialect_status(status: int) -> int:
    """The status these engines use where TGI's router uses another: 422 is 400, overload is 503 (a full queue)."""
    return {422: 400, 429: 503, 424: 500}.get(status, status)


def _error_type(status: int) -> str:
    return {400: "BadRequestError", 404: "NotFoundError", 503: "ServiceUnavailableError"}.get(
        status, "InternalServerError"
    )


class _BadRequest(Exception):
    """A request these engines' pydantic models would refuse (HTTP 400)."""


def _number(body: dict[str, Any], name: str, kind: type, default: Any = None) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise _BadRequest(f"1 validation error:\n  body.{name}: Input should be a valid {kind.__name__}")
    return kind(value)


class CompletionsDialect:
    """The routes of an OpenAI-completions engine (vLLM or SGLang) over the shared router core."""

    def __init__(self, core: RouterCore, engine: Engine) -> None:
        self._core = core
        self._engine = engine

    def routes(self) -> dict[str, dict[str, Handler]]:
        """Path -> method -> handler."""
        routes: dict[str, dict[str, Handler]] = {
            "/v1/completions": {"POST": self._completions},
            "/v1/models": {"GET": self._models},
            "/health": {"GET": self._health},
            "/metrics": {"GET": self._metrics},
            "/tokenize": {"POST": self._tokenize},
        }
        if self._engine.name == "vllm":
            routes["/version"] = {"GET": self._version}
        else:
            routes["/v1/tokenize"] = {"POST": self._tokenize}
            routes["/v1/detokenize"] = {"POST": self._detokenize}
            routes["/generate"] = {"POST": self._native_generate}
            routes["/get_model_info"] = {"GET": self._model_info}
            routes["/health_generate"] = {"GET": self._health}
        return routes

    # --- errors -------------------------------------------------------------------------------------

    async def error(self, conn: HTTPConnection, status: int, message: str) -> None:
        """The engine's own error body."""
        status = dialect_status(status)
        await conn.respond(status, self._engine.error_body(status, message, _error_type(status)), [JSON])

    def _stream_error(self, message: str, error_type: str) -> bytes:
        status = 503 if error_type == "overloaded" else 400 if error_type == "validation" else 500
        envelope = {"error": json.loads(self._engine.error_body(status, message, _error_type(status)))}
        if "error" in envelope["error"]:
            envelope = envelope["error"]  # vLLM's body already is the envelope
        return b"data: " + json.dumps(envelope).encode() + b"\n\n"

    # --- completions --------------------------------------------------------------------------------

    def _generate_request(self, body: dict[str, Any]) -> tuple[GenerateRequest, dict[str, Any]]:
        """The token loop's request for a completions body, and what the answer needs to know."""
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise _BadRequest("1 validation error:\n  body.prompt: Input should be a non-empty string")
        sglang = self._engine.name == "sglang"
        limits = self._core.config.limits
        temperature = _number(body, "temperature", float, 1.0)
        top_p = _number(body, "top_p", float, 1.0)
        top_k = _number(body, "top_k", int, None)
        if "max_tokens" in body and body["max_tokens"] is None and sglang:
            raise _BadRequest("1 validation error:\n  body.max_tokens: Input should be a valid integer")
        max_tokens = _number(body, "max_tokens", int, None if "max_tokens" in body else 16)
        if max_tokens is not None and max_tokens > limits.max_total_tokens:
            raise _BadRequest(
                f"'max_tokens' ({max_tokens}) cannot be greater than the model's maximum context length "
                f"({limits.max_total_tokens})"
            )
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        grammar = self._grammar(body)
        truncate = None if sglang else _number(body, "truncate_prompt_tokens", int, None)
        greedy = temperature == 0.0
        tokens = self._core.tokenizer.encode(prompt)
        window_left = max(limits.max_total_tokens - len(tokens) - 1, 1)
        if max_tokens is not None and not sglang:
            max_tokens = min(max_tokens, window_left)  # vLLM 0.33 cuts max_tokens to what fits, silently
        logprobs = _number(body, "logprobs", int, None)
        prompt_logprobs = None if sglang else self._prompt_logprobs(body)
        parameters = GenerateParameters(
            temperature=None if greedy else temperature,
            top_p=top_p if top_p < 1.0 and not greedy else None,
            top_k=top_k if top_k is not None and top_k > 0 and not greedy else None,
            do_sample=not greedy,
            repetition_penalty=_number(body, "repetition_penalty", float, None),
            frequency_penalty=_number(body, "frequency_penalty", float, None) or None,
            max_new_tokens=window_left if max_tokens is None else max_tokens,
            stop=[*stop, "</s>"],
            truncate=truncate,
            details=True,
            seed=_number(body, "seed", int, None),
            top_n_tokens=logprobs or None,
            grammar=grammar,
        )
        answer = {
            "stops": stop,
            "echo": bool(body.get("echo")),
            "logprobs": logprobs,
            "token_ids": bool(body.get("return_token_ids")),
            "include_usage": bool((body.get("stream_options") or {}).get("include_usage")),
            "prompt_logprobs": prompt_logprobs,
        }
        return GenerateRequest(inputs=prompt, parameters=parameters), answer

    def _prompt_logprobs(self, body: dict[str, Any]) -> int | None:
        """vLLM's `prompt_logprobs`, checked as its request model and `SamplingParams` check it."""
        value = body.get("prompt_logprobs")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise _BadRequest(f"`prompt_logprobs` must be an integer. (parameter=prompt_logprobs, value={value!r})")
        if body.get("stream") and (value > 0 or value == -1):
            raise _BadRequest("`prompt_logprobs` are not available when `stream=True`. (parameter=prompt_logprobs)")
        if value < 0 and value != -1:
            raise _BadRequest(
                f"`prompt_logprobs` must be a positive value or -1. (parameter=prompt_logprobs, value={value})"
            )
        wanted = 32000 if value == -1 else value  # -1: the whole vocabulary
        allowed = getattr(self._engine, "max_top_n_tokens", 20)  # vLLM's --max-logprobs (20 by default)
        if wanted > allowed:
            raise _BadRequest(
                f"Requested prompt logprobs of {wanted}, which is greater than max allowed: {allowed} "
                f"(parameter=prompt_logprobs, value={wanted})"
            )
        return value

    def _grammar(self, body: dict[str, Any]) -> Grammar | None:
        if self._engine.name == "vllm":
            structured = body.get("structured_outputs") or {}
            if not isinstance(structured, dict):
                raise _BadRequest("1 validation error:\n  body.structured_outputs: Input should be an object")
            if structured.get("json") is not None:
                schema = structured["json"]
                return Grammar("json", json.loads(schema) if isinstance(schema, str) else schema)
            if structured.get("regex") is not None:
                return Grammar("regex", structured["regex"])
        else:
            if body.get("json_schema") is not None:
                try:
                    return Grammar("json", json.loads(body["json_schema"]))
                except (TypeError, ValueError):
                    raise _BadRequest("json_schema is not a JSON schema string") from None
            if body.get("regex") is not None:
                return Grammar("regex", body["regex"])
        response_format = body.get("response_format") or {}
        if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
            return Grammar("json", (response_format.get("json_schema") or {}).get("schema") or {})
        return None

    def _choice_end(self, text: str, finish: str, stops: list[str]) -> tuple[str, str, Any]:
        """(text without the matched stop, OpenAI finish reason, the engine's matched-stop value)."""
        if finish == "length":
            return text, "length", None
        for stop in sorted(stops, key=len, reverse=True):
            if text.endswith(stop):
                return text[: -len(stop)], "stop", stop
        return text, "stop", None if self._engine.name == "vllm" else _EOS_ID

    def _choice(self, text: str, matched: Any, finish: str | None, ids: list[int] | None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        choice["stop_reason" if self._engine.name == "vllm" else "matched_stop"] = matched
        if ids is not None:
            choice["token_ids"] = ids
        return choice

    async def _completions(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        core = self._core
        started = time.monotonic()
        try:
            body = read_json_body(request.headers, request.body)
            if not isinstance(body, dict):
                raise _BadRequest("1 validation error:\n  body: Input should be a valid dictionary")
            generate_request, answer = self._generate_request(body)
        except _BadRequest as exc:
            await self.error(conn, 400, str(exc))
            return
        except BodyError as exc:  # bad JSON or content type: these engines answer 400 with their own body
            await self.error(conn, 400, exc.text)
            return
        core.recorder.tgi_request()
        created = int(time.time())
        completion_id = f"cmpl-{uuid.uuid4().hex}"
        if body.get("stream"):
            try:
                core.plan(generate_request)  # these engines validate before the stream starts
            except ValidationError as exc:
                await self.error(conn, 400, str(exc))
                return
            await self._stream(conn, generate_request, answer, completion_id, created, started)
            return
        try:
            plan = await core.run_once(generate_request)
        except RouteError as exc:
            await self.error(conn, exc.status, exc.message)
            return
        generation = plan.generations[0]
        text, finish, matched = self._choice_end(generation.text, generation.finish_reason, answer["stops"])
        ids = [token.id for token in generation.tokens] if answer["token_ids"] else None
        choice = self._choice(generate_request.inputs + text if answer["echo"] else text, matched, finish, ids)
        if answer["logprobs"] is not None:
            choice["logprobs"] = _logprobs(generation.tokens, generation.top_tokens)
        if answer["prompt_logprobs"] is not None:
            choice["prompt_logprobs"] = self._prompt_logprob_entries(plan, answer["prompt_logprobs"])
            if answer["token_ids"]:
                choice["prompt_token_ids"] = [span.id for span in plan.valid.input_tokens]
        usage = _usage(plan.valid.input_length, len(generation.tokens))
        core.recorder.tgi_success(plan.valid.input_length, len(generation.tokens), time.monotonic() - started)
        reply = {
            "id": completion_id,
            "object": "text_completion",
            "created": created,
            "model": core.config.model_id,
            "choices": [choice],
            "usage": usage,
        }
        await core.json(conn, 200, reply, [])

    async def _stream(
        self,
        conn: HTTPConnection,
        generate_request: GenerateRequest,
        answer: dict[str, Any],
        completion_id: str,
        created: int,
        started: float,
    ) -> None:
        core = self._core
        model = core.config.model_id
        vllm = self._engine.name == "vllm"
        await conn.start_stream(200, [("content-type", "text/event-stream; charset=utf-8")])

        def event(obj: dict[str, Any]) -> bytes:
            # vLLM's completions stream writes JSON with spaces after separators; SGLang's is compact.
            data = json.dumps(obj, ensure_ascii=False) if vllm else json.dumps(obj, separators=(",", ":"))
            return b"data: " + data.encode() + b"\n\n"

        def encoder(plan: Plan) -> EncodeToken:
            generation = plan.generations[0]
            final, finish, matched = self._choice_end(generation.text, generation.finish_reason, answer["stops"])
            shown = [0]  # characters of `final` sent so far: a matched stop string is never sent

            def encode(index: int, token: GenToken, top: list[GenToken] | None, last: bool) -> bytes:
                piece = "" if token.special else token.text
                text = final[shown[0] : shown[0] + len(piece)]
                shown[0] += len(text)
                if last:
                    text += final[shown[0] :]
                ids = [token.id] if answer["token_ids"] else None
                chunk = {
                    "id": completion_id,
                    "object": "text_completion",
                    "created": created,
                    "model": model,
                    "choices": [self._choice(text, matched if last else None, finish if last else None, ids)],
                }
                out = event(chunk)
                if last and answer["include_usage"]:
                    usage = _usage(plan.valid.input_length, len(generation.tokens))
                    out += event(
                        {
                            "id": completion_id,
                            "object": "text_completion",
                            "created": created,
                            "model": model,
                            "choices": [],
                            "usage": usage,
                        }
                    )
                return out

            return encode

        outcome = await core.stream(conn, generate_request, started, encoder, self._stream_error)
        if outcome == "dropped":
            return
        await conn.send_chunk(DONE)
        await conn.end_stream()

    def _prompt_logprob_entries(self, plan: Plan, alternatives: int) -> list[dict[str, Any] | None]:
        """vLLM's `prompt_logprobs`: None for the first token, then each token's logprob keyed by its id, with
        up to `alternatives` other candidates ranked below it (the same values TGI's prefill reports)."""
        valid = plan.valid
        entries: list[dict[str, Any] | None] = [None]
        for index, span in enumerate(valid.input_tokens[1:], start=1):
            logprob = prompt_logprob(valid.inputs, index, span.id)
            entry = {str(span.id): {"logprob": logprob, "rank": 1, "decoded_token": span.text}}
            for rank in range(2, 2 + (alternatives if alternatives > 0 else 0)):
                other = 3 + (span.id * 31 + rank) % 31997
                if str(other) not in entry:
                    entry[str(other)] = {"logprob": round(logprob - rank, 4), "rank": rank, "decoded_token": ""}
            entries.append(entry)
        return entries

    # --- SGLang's native routes -----------------------------------------------------------------------

    async def _native_error(self, conn: HTTPConnection, status: int, message: str) -> None:
        # The native routes write `{"error": {"message": ...}}`, not the OpenAI adapter's flat body.
        await self._core.json(conn, status, {"error": {"message": message}}, [])

    async def _native_generate(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        """SGLang's `/generate` (without streaming): `text`, `sampling_params`, `return_logprob`."""
        core = self._core
        started = time.monotonic()
        try:
            body = read_json_body(request.headers, request.body)
            if not isinstance(body, dict):
                raise _BadRequest("the request body must be a JSON object")
            generate_request, start_len, return_logprob = self._native_request(body)
        except (_BadRequest, BodyError) as exc:
            await self._native_error(conn, 400, exc.text if isinstance(exc, BodyError) else str(exc))
            return
        core.recorder.tgi_request()
        try:
            plan = await core.run_once(generate_request)
        except RouteError as exc:
            await self._native_error(conn, dialect_status(exc.status), exc.message)
            return
        valid = plan.valid
        if return_logprob and start_len > valid.input_length:
            message = (
                f"req.logprob_start_len={start_len} is higher than the number of input tokens "
                f"len(req.origin_input_ids)={valid.input_length}. Please use a smaller logprob_start_len."
            )
            await self._native_error(conn, 400, message)
            return
        generation = plan.generations[0]
        text, finish, matched = self._choice_end(generation.text, generation.finish_reason, [])
        meta: dict[str, Any] = {
            "id": uuid.uuid4().hex,
            "finish_reason": {"type": "length", "length": len(generation.tokens)}
            if finish == "length"
            else {"type": "stop", "matched": matched},
            "prompt_tokens": valid.input_length,
            "completion_tokens": len(generation.tokens),
            "cached_tokens": 0,
        }
        if return_logprob:
            first = max(start_len, 0) if start_len >= 0 else valid.input_length
            meta["input_token_logprobs"] = [
                [None if index == 0 else prompt_logprob(valid.inputs, index, span.id), span.id, None]
                for index, span in enumerate(valid.input_tokens)
                if index >= first
            ]
            meta["output_token_logprobs"] = [[token.logprob, token.id, None] for token in generation.tokens]
        core.recorder.tgi_success(valid.input_length, len(generation.tokens), time.monotonic() - started)
        reply = {"text": text, "output_ids": [token.id for token in generation.tokens], "meta_info": meta}
        await core.json(conn, 200, reply, [])

    def _native_request(self, body: dict[str, Any]) -> tuple[GenerateRequest, int, bool]:
        text = body.get("text")
        if not isinstance(text, str) or not text:
            raise _BadRequest("Either text, input_ids or input_embeds should be provided.")
        if body.get("stream"):
            raise _BadRequest("the emulator serves SGLang's native /generate without streaming (use /v1/completions)")
        sampling = body.get("sampling_params") or {}
        if not isinstance(sampling, dict):
            raise _BadRequest("sampling_params must be an object")
        temperature = _number(sampling, "temperature", float, 1.0)
        greedy = temperature == 0.0
        limits = self._core.config.limits
        tokens = self._core.tokenizer.encode(text)
        max_new = _number(sampling, "max_new_tokens", int, 128)
        parameters = GenerateParameters(
            temperature=None if greedy else temperature,
            do_sample=not greedy,
            max_new_tokens=max(1, min(max_new, limits.max_total_tokens - len(tokens) - 1)),
            stop=["</s>"],
            details=True,
            seed=_number(sampling, "seed", int, None),
        )
        return_logprob = body.get("return_logprob") is True
        start_len = _number(body, "logprob_start_len", int, -1)
        return GenerateRequest(inputs=text, parameters=parameters), start_len, return_logprob

    async def _detokenize(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        """SGLang's `/v1/detokenize`: ids (or lists of ids) back to text."""
        try:
            body = read_json_body(request.headers, request.body)
        except BodyError as exc:
            await self.error(conn, 400, exc.text)
            return
        tokens = body.get("tokens") if isinstance(body, dict) else None
        if not isinstance(tokens, list) or not tokens:
            await self.error(conn, 400, "1 validation error:\n  body.tokens: Input should be a valid list")
            return
        skip = body.get("skip_special_tokens", True) is not False
        tokenizer = self._core.tokenizer

        def decode(ids: list[Any]) -> str | None:
            if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
                return None
            parts = [decode_one(tokenizer, i) for i in ids if not (skip and i in (0, 1, 2))]
            return "".join(parts)

        lists = tokens if isinstance(tokens[0], list) else [tokens]
        texts = [decode(ids) if isinstance(ids, list) else None for ids in lists]
        if any(text is None for text in texts):
            await self.error(conn, 400, "Invalid input: 'tokens' must be a list of integers.")
            return
        await self._core.json(conn, 200, {"text": texts if isinstance(tokens[0], list) else texts[0]}, [])

    # --- the other routes ---------------------------------------------------------------------------

    async def _models(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        config = self._core.config
        card = {
            "id": config.model_id,
            "object": "model",
            "created": 0,
            "owned_by": self._engine.name,
            "root": config.model_id,
            "parent": None,
            "max_model_len": config.limits.max_total_tokens,
        }
        await self._core.json(conn, 200, {"object": "list", "data": [card]}, [])

    async def _tokenize(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        try:
            body = read_json_body(request.headers, request.body)
        except BodyError as exc:
            await self.error(conn, 400, exc.text)
            return
        prompt = body.get("prompt") if isinstance(body, dict) else None
        if not isinstance(prompt, str):
            await self.error(conn, 400, "1 validation error:\n  body.prompt: Input should be a valid string")
            return
        spans = self._core.tokenizer.encode(prompt)
        if body.get("add_special_tokens", True):
            spans = [BOS_SPAN, *spans]
        ids = [span.id for span in spans]
        reply: dict[str, Any] = {"count": len(ids), "max_model_len": self._core.config.limits.max_total_tokens}
        reply["tokens"] = ids
        if self._engine.name == "vllm":
            pieces = [piece_of(self._core.tokenizer, span) for span in spans]
            reply["token_strs"] = pieces if body.get("return_token_strs") else None
        await self._core.json(conn, 200, reply, [])

    async def _health(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        if self._core.faults.unhealthy():
            await conn.respond(503, b"", [])
        else:
            await conn.respond(200, b"", [])

    async def _version(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        await self._core.json(conn, 200, {"version": DIALECT_VERSIONS["vllm"]}, [])

    async def _model_info(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        model_id = self._core.config.model_id
        info = {"model_path": model_id, "tokenizer_path": model_id, "is_generation": True}
        await self._core.json(conn, 200, info, [])

    async def _metrics(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        totals = self._core.recorder.totals()
        queued = self._core.queued  # waiting for a batch slot: not running yet
        running = max(totals["in_flight"] - queued, 0)
        if self._engine.name == "vllm":
            names = {
                "vllm:num_requests_running": running,
                "vllm:num_requests_waiting": queued,
                "vllm:prompt_tokens_total": totals["prompt_tokens"],
                "vllm:generation_tokens_total": totals["generated_tokens"],
                "vllm:request_success_total": totals["success"],
            }
        else:
            names = {
                "sglang:num_running_reqs": running,
                "sglang:num_queue_reqs": queued,
                "sglang:prompt_tokens_total": totals["prompt_tokens"],
                "sglang:generation_tokens_total": totals["generated_tokens"],
            }
        label = f'{{model_name="{self._core.config.model_id}"}}'
        lines = [f"{name}{label} {value}" for name, value in names.items()]
        await conn.respond(200, ("\n".join(lines) + "\n").encode(), [("content-type", "text/plain; version=0.0.4")])


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _logprobs(tokens: list[GenToken], top: list[list[GenToken]]) -> dict[str, Any]:
    return {
        "text_offset": [],
        "token_logprobs": [token.logprob for token in tokens],
        "tokens": [token.text for token in tokens],
        "top_logprobs": [{t.text: t.logprob for t in entry} for entry in top] if top else None,
    }
