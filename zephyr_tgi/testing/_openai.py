"""TGI's OpenAI-compatible routes: /v1/chat/completions (with tools), /v1/completions, /v1/models, /chat_tokenize."""

from __future__ import annotations

import time
from typing import Any

from ._core import VALIDATION_PREFIX, EncodeToken, Handler, Plan, RouteError, RouterCore
from ._faults import error_for_type
from ._generation import GenToken
from ._http import HTTPConnection, HTTPRequest
from ._native import simple_token
from ._replies import render_zephyr_prompt
from ._requests import (
    ChatRequest,
    CompletionRequest,
    GenerateParameters,
    GenerateRequest,
    Grammar,
    parse_chat_request,
    parse_completion_request,
)
from ._sse import DONE, chat_chunk, completion_chunk, openai_stream_error, sse, tool_call_chunk
from ._tools import (
    NO_TOOL,
    ToolSpec,
    ToolStreamState,
    UnknownToolError,
    next_tool_call_id,
    parse_tool_output,
    tool_call_text,
    tool_grammar,
    tool_prompt_suffix,
    tools_to_use,
)
from ._validation import ValidationError

__all__ = ["OpenAIRoutes"]

_OPENAI_FINISH = {"eos_token": "stop", "length": "length", "stop_sequence": "stop_sequence"}


class _ChatPlan:
    """A chat request turned into the generate request(s) TGI's `try_into_generate` builds."""

    def __init__(self, request: GenerateRequest, plain: GenerateRequest | None) -> None:
        self.request = request
        # With tools: the request TGI sends again without tools when the model picks `no_tool`.
        self.plain = plain


class OpenAIRoutes:
    """The Messages and Completions APIs over the shared router core."""

    def __init__(self, core: RouterCore) -> None:
        self._core = core

    def routes(self) -> dict[str, dict[str, Handler]]:
        """Path -> method -> handler."""
        return {
            "/v1/models": {"GET": self._models},
            "/v1/chat/completions": {"POST": self._chat_completions},
            "/v1/completions": {"POST": self._completions},
            "/chat_tokenize": {"POST": self._chat_tokenize},
        }

    # --- chat ---------------------------------------------------------------------------------------

    def _generate_request(self, chat: ChatRequest, prompt: str, grammar: Grammar | None) -> GenerateRequest:
        # Chat turns temperature 0 into greedy decoding and otherwise samples.
        do_sample, temperature = (False, None) if chat.temperature == 0.0 else (True, chat.temperature)
        return GenerateRequest(
            inputs=prompt,
            parameters=GenerateParameters(
                temperature=temperature,
                repetition_penalty=None if chat.presence_penalty is None else chat.presence_penalty + 2.0,
                frequency_penalty=chat.frequency_penalty,
                top_p=chat.top_p,
                do_sample=do_sample,
                max_new_tokens=chat.max_tokens,
                stop=list(chat.stop or []),
                details=True,
                seed=chat.seed,
                top_n_tokens=chat.top_logprobs,
                grammar=grammar,
                adapter_id=None if chat.model in (None, "tgi") else chat.model,
            ),
            add_special_tokens=False,
        )

    def _chat_plan(self, chat: ChatRequest) -> _ChatPlan:
        """`try_into_generate`: tool errors, then the tool grammar, then the template (before any permit)."""
        if chat.response_format is not None and chat.tools is not None:
            raise RouteError(422, "Tool error: Grammar and tools are mutually exclusive", "tool_error")
        selected: list[ToolSpec] = []
        if chat.response_format is None and chat.tools is not None:
            try:
                selected = tools_to_use(chat.tools, chat.tool_choice)
            except UnknownToolError as exc:
                raise RouteError(422, f"Tool error: {exc}", "tool_error") from None
        if not self._core.config.chat_template:
            raise RouteError(*self._core.status_error("template_error"))
        plain = self._generate_request(chat, render_zephyr_prompt(chat.messages), chat.response_format)
        if not selected:
            return _ChatPlan(plain, None)
        messages = list(chat.messages)
        if chat.last_message_has_content and messages:
            role, content = messages[-1]
            messages[-1] = (role, content + tool_prompt_suffix(selected, chat.tool_prompt))
        after_tool_result = bool(messages) and messages[-1][0] == "tool"
        request = self._generate_request(chat, render_zephyr_prompt(messages), Grammar("json", tool_grammar(selected)))
        request.reply = tool_call_text(selected, after_tool_result=after_tool_result)
        return _ChatPlan(request, plain)

    async def _chat_completions(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        core = self._core
        started = time.monotonic()
        raw, text = core.body(request)
        chat = parse_chat_request(raw, text=text)
        core.recorder.tgi_request()
        chat_plan = self._chat_plan(chat)
        # Chat echoes the request's model (completions do not).
        model = core.config.model_id if chat.model in (None, "tgi") else str(chat.model)
        created = int(time.time())
        if chat.stream:
            await self._chat_stream(conn, chat, chat_plan, model, created, started)
            return
        plan = await core.run_once(chat_plan.request)
        generation = plan.generations[0]
        message: dict[str, Any] = {"role": "assistant", "content": generation.text}
        if chat_plan.plain is not None:
            try:
                call = parse_tool_output(generation.text)
            except ValueError as exc:
                raise RouteError(422, f"Tool error: {exc}", "tool_error") from None
            if call is None:
                # The model chose `no_tool`: TGI generates again without tools and answers with that text.
                plan = await core.run_once(chat_plan.plain)
                generation = plan.generations[0]
                message = {"role": "assistant", "content": generation.text}
            else:
                name, arguments = call
                tool_call = {
                    "id": next_tool_call_id(chat.tool_call_ids),
                    "type": "function",
                    "function": {"description": None, "name": name, "arguments": arguments},
                }
                # TGI's ToolCallMessage has no `content` field at all.
                message = {"role": "assistant", "tool_calls": [tool_call]}
        logprobs = None
        if chat.logprobs:
            logprobs = {
                "content": [
                    _chat_logprob(token.text, token, generation.top_tokens[i] if generation.top_tokens else None)
                    for i, token in enumerate(generation.tokens)
                ]
            }
        body = {
            "object": "chat.completion",
            "id": "",
            "created": created,
            "model": model,
            "system_fingerprint": core.config.fingerprint,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": logprobs,
                    "finish_reason": _OPENAI_FINISH[generation.finish_reason],
                }
            ],
            "usage": _usage(plan.valid.input_length, len(generation.tokens)),
        }
        headers = core.timing_headers(
            started, plan.queued, plan.valid.inputs, plan.valid.input_length, len(generation.tokens)
        )
        core.recorder.tgi_success(plan.valid.input_length, len(generation.tokens), time.monotonic() - started)
        await core.json(conn, 200, body, headers)

    async def _chat_stream(
        self, conn: HTTPConnection, chat: ChatRequest, chat_plan: _ChatPlan, model: str, created: int, started: float
    ) -> None:
        core = self._core
        fingerprint = core.config.fingerprint
        await conn.start_stream(200, core.stream_headers(len(chat_plan.request.inputs)))

        def usage_chunk(plan: Plan) -> bytes:
            usage = _usage(plan.valid.input_length, len(plan.generations[0].tokens))
            return sse(chat_chunk(model=model, fingerprint=fingerprint, created=created, content=None, usage=usage))

        def text_encoder(plan: Plan) -> EncodeToken:
            generation = plan.generations[0]

            def encode(index: int, token: GenToken, top: list[GenToken] | None, last: bool) -> bytes:
                out = sse(
                    chat_chunk(
                        model=model,
                        fingerprint=fingerprint,
                        created=created,
                        content="" if token.special else token.text,
                        finish_reason=_OPENAI_FINISH[generation.finish_reason] if last else None,
                        logprobs={"content": [_chat_logprob(token.text, token, top)]} if chat.logprobs else None,
                    )
                )
                if last and chat.include_usage:
                    out += usage_chunk(plan)
                return out

            return encode

        def tool_encoder(plan: Plan) -> EncodeToken | None:
            generation = plan.generations[0]
            probe = ToolStreamState()
            if any(probe.push(token.text) == NO_TOOL for token in generation.tokens):
                return None
            state = ToolStreamState()
            call_id = next_tool_call_id(chat.tool_call_ids)

            def encode(index: int, token: GenToken, top: list[GenToken] | None, last: bool) -> bytes:
                pushed = state.push(token.text)
                out = b""
                if isinstance(pushed, tuple):
                    name, fragment = pushed
                    out = sse(
                        tool_call_chunk(
                            model=model,
                            fingerprint=fingerprint,
                            created=created,
                            call_id=call_id,
                            name=name,
                            arguments=fragment,
                            finish_reason=_OPENAI_FINISH[generation.finish_reason] if last else None,
                            logprobs={"content": [_chat_logprob(fragment, token, top)]} if chat.logprobs else None,
                        )
                    )
                if last and chat.include_usage:
                    out += usage_chunk(plan)
                return out

            return encode

        if chat_plan.plain is None:
            outcome = await core.stream(conn, chat_plan.request, started, text_encoder, _openai_error_event)
        else:
            outcome = await core.stream(conn, chat_plan.request, started, tool_encoder, _openai_error_event)
            if outcome == "replaced":
                # `no_tool`: TGI streams a second generation without tools.
                outcome = await core.stream(conn, chat_plan.plain, started, text_encoder, _openai_error_event)
        if outcome == "dropped":
            return
        # `[DONE]` follows every chat stream, errors included.
        await conn.send_chunk(DONE)
        await conn.end_stream()

    async def _chat_tokenize(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        core = self._core
        raw, text = core.body(request)
        chat = parse_chat_request(raw, text=text)
        core.recorder.tgi_request()
        prompt = self._chat_plan(chat).request.inputs
        spans = core.tokenizer.encode(prompt)
        body = {"tokenize_response": [simple_token(span, prompt) for span in spans], "templated_text": prompt}
        await core.json(conn, 200, body, [])

    async def _models(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        model_id = self._core.config.model_id
        body = {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": model_id}]}
        await self._core.json(conn, 200, body, [])

    # --- completions --------------------------------------------------------------------------------

    def _completion_requests(self, completion: CompletionRequest) -> list[GenerateRequest]:
        do_sample, temperature = (False, None) if completion.temperature == 0.0 else (True, completion.temperature)
        return [
            GenerateRequest(
                inputs=prompt,
                parameters=GenerateParameters(
                    temperature=temperature,
                    repetition_penalty=completion.repetition_penalty,
                    frequency_penalty=completion.frequency_penalty,
                    top_p=completion.top_p,
                    do_sample=do_sample,
                    # TGI's completions route defaults max_tokens to 100.
                    max_new_tokens=100 if completion.max_tokens is None else completion.max_tokens,
                    stop=list(completion.stop or []),
                    details=True,
                    seed=completion.seed,
                    adapter_id=None if completion.model in (None, "tgi") else completion.model,
                ),
            )
            for prompt in completion.prompts
        ]

    async def _completions(self, conn: HTTPConnection, request: HTTPRequest) -> None:
        core = self._core
        started = time.monotonic()
        raw, text = core.body(request)
        completion = parse_completion_request(raw, text=text)
        core.recorder.tgi_request()
        if completion.suffix is not None:
            core.recorder.tgi_failure("validation")
            raise RouteError(
                422, "Suffix is not supported and can be achieved by preprocessing the prompt.", "suffix not supported"
            )
        limit = core.config.limits.max_client_batch_size
        if len(completion.prompts) > limit:
            core.recorder.tgi_failure("validation")
            raise RouteError(
                422, f"Number of prompts exceeds the maximum allowed batch size of {limit}", "batch size exceeded"
            )
        requests = self._completion_requests(completion)
        created = int(time.time())
        if completion.stream:
            await self._completions_stream(conn, requests, created, started)
            return
        plans = [await core.run_once(generate_request) for generate_request in requests]
        choices = []
        prompt_tokens = completion_tokens = 0
        for index, plan in enumerate(plans):
            generation = plan.generations[0]
            prompt_tokens += plan.valid.input_length
            completion_tokens += len(generation.tokens)
            choices.append(
                {
                    "index": index,
                    "text": generation.text,
                    "logprobs": None,
                    "finish_reason": _OPENAI_FINISH[generation.finish_reason],
                }
            )
            core.recorder.tgi_success(plan.valid.input_length, len(generation.tokens), time.monotonic() - started)
        body = {
            "object": "text_completion",
            "id": "",
            "created": created,
            # Completions always name the served model, whatever the request said (TGI.md §9).
            "model": core.config.model_id,
            "system_fingerprint": core.config.fingerprint,
            "choices": choices,
            "usage": _usage(prompt_tokens, completion_tokens),
        }
        headers = core.timing_headers(
            started, plans[0].queued, "".join(completion.prompts), prompt_tokens, completion_tokens
        )
        # TGI sums the per-prompt headers but never copies x-compute-time onto the aggregate.
        headers = [header for header in headers if header[0] != "x-compute-time"]
        await core.json(conn, 200, body, headers)

    async def _completions_stream(
        self, conn: HTTPConnection, requests: list[GenerateRequest], created: int, started: float
    ) -> None:
        """Several prompts interleaved round-robin; each ends with a chunk carrying usage."""
        core = self._core
        model = core.config.model_id
        fingerprint = core.config.fingerprint
        await conn.start_stream(200, core.stream_headers(sum(len(r.inputs) for r in requests)))
        queues: list[list[bytes]] = []
        held = 0
        try:
            for index, generate_request in enumerate(requests):
                if not core.acquire():
                    queues.append([sse(openai_stream_error(error_for_type("overloaded")[1]))])
                    continue
                held += 1
                try:
                    plan = core.plan(generate_request)
                except ValidationError as exc:
                    core.recorder.tgi_failure("validation")
                    queues.append([sse(openai_stream_error(VALIDATION_PREFIX + str(exc)))])
                    continue
                generation = plan.generations[0]
                events = []
                for position, token in enumerate(generation.tokens):
                    last = position == len(generation.tokens) - 1
                    events.append(
                        sse(
                            completion_chunk(
                                model=model,
                                fingerprint=fingerprint,
                                created=created,
                                index=index,
                                text=token.text,
                                finish_reason=generation.finish_reason if last else "",
                                usage=_usage(plan.valid.input_length, len(generation.tokens)) if last else None,
                            )
                        )
                    )
                core.recorder.tgi_success(plan.valid.input_length, len(generation.tokens), time.monotonic() - started)
                queues.append(events)
            interleaved = [
                queue[i] for i in range(max(map(len, queues), default=0)) for queue in queues if i < len(queue)
            ]
            outcome = await core.emit(conn, len(interleaved), interleaved.__getitem__, _openai_error_event)
            if outcome == "dropped":
                return
        finally:
            for _ in range(held):
                core.recorder.release()
        await conn.send_chunk(DONE)
        await conn.end_stream()


def _openai_error_event(message: str, _error_type: str) -> bytes:
    return sse(openai_stream_error(message))


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _chat_logprob(text: str, token: GenToken, top: list[GenToken] | None) -> dict[str, Any]:
    return {
        "token": text,
        "logprob": token.logprob,
        "top_logprobs": [{"token": t.text, "logprob": t.logprob} for t in top or []],
    }
