"""`ZephyrChatModel`: a LangChain chat model on zephyr_tgi's client (extra `langchain`, needs only langchain-core).

Plain turns go to TGI's native `/generate` with the prompt rendered here, byte for byte as Zephyr's template
renders it; `bind_tools` goes through `/v1/chat/completions` and its typed tool calls; `with_structured_output`
through TGI's JSON grammar and zephyr_tgi's own validation. Retries, deadlines and the `ZephyrTGIError` tree are
the client's: a LangChain user sees the same errors as a zephyr_tgi user.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr

try:
    from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
    from langchain_core.language_models import LangSmithParams, LanguageModelInput
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
    from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
    from langchain_core.runnables import Runnable, RunnableLambda, RunnableMap, RunnablePassthrough
    from langchain_core.tools import BaseTool
    from langchain_core.utils import from_env, secret_from_env
    from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "zephyr_tgi.integrations.langchain needs langchain-core: pip install 'zephyr-tgi[langchain]'"
    ) from exc

from .._client.async_client import AsyncZephyrClient
from .._client.structured import grammar_for_schema, parse_json_answer
from .._client.sync_client import ZephyrClient
from .._errors import ConfigurationError
from .._retry import RetryPolicy
from .._types import GenerationResult, StreamChunk
from ._langchain_messages import answer_message, completion_chunk, completion_message, to_zephyr_turns

__all__ = ["ZephyrChatModel"]

DEFAULT_MODEL_NAME = "TheBloke/zephyr-7B-alpha-GPTQ"
StructuredMethod = Literal["json_schema", "function_calling", "json_mode"]
# What `_generate` and `_stream` accept besides `stop`: LangChain's bindings and the sampling fields per call.
_CALL_OPTIONS = frozenset(
    {"tools", "tool_choice", "json_schema", "model", "temperature", "max_tokens", "top_p", "top_k", "seed"}
)


class ZephyrChatModel(BaseChatModel):
    """Zephyr-7B-alpha on a TGI server, as a LangChain chat model.

    Example:
        ```python
        from zephyr_tgi.integrations.langchain import ZephyrChatModel

        model = ZephyrChatModel(base_url="http://127.0.0.1:8080", max_tokens=64)
        print(model.invoke("What is GPTQ?").content)
        ```

    Attributes:
        base_url: The TGI server (default `$ZEPHYR_TGI_URL`).
        api_key: Sent as a bearer token (default `$ZEPHYR_TGI_API_KEY`).
        model_name: The model the server serves, reported in `response_metadata` (alias `model`).
        temperature: Sampling temperature; 0 is greedy.
        max_tokens: Tokens to generate at most (TGI's `max_new_tokens`).
        top_p: Nucleus sampling; 1.0 is off.
        top_k: Top-k sampling (native route only: TGI's `/v1/chat/completions` has no top_k).
        repetition_penalty: TGI's repetition penalty (native route only).
        seed: Sampling seed.
        stop: Stop sequences (TGI takes at most 4 by default); `</s>` always stops.
        timeout: Seconds each call may take, retries included.
        max_retries: Retries after the first attempt (zephyr_tgi's policy: 429, 5xx, connection failures).
        system_prompt: The system turn used when the messages have none.
        streaming: `invoke` streams underneath (and calls `on_llm_new_token`).
        stream_usage: Streams end with a chunk carrying token usage.

    Args:
        **data: The attributes above, by name (`model=` for `model_name`).

    Raises:
        ConfigurationError: no `base_url` and no `$ZEPHYR_TGI_URL`.
    """

    model_config = ConfigDict(populate_by_name=True)

    base_url: str = Field(default_factory=from_env("ZEPHYR_TGI_URL", default=""))
    api_key: SecretStr | None = Field(default_factory=secret_from_env("ZEPHYR_TGI_API_KEY", default=None))
    model_name: str = Field(default=DEFAULT_MODEL_NAME, alias="model")
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    timeout: float | None = None
    max_retries: int | None = Field(default=None, ge=0)
    system_prompt: str | None = None
    streaming: bool = False
    stream_usage: bool = True

    _client: ZephyrClient = PrivateAttr()
    _finalizer: Callable[[], object] = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        # Checked after pydantic, not in a validator: pydantic would wrap ConfigurationError in its ValidationError.
        if not self.base_url:
            raise ConfigurationError("set ZEPHYR_TGI_URL (e.g. http://127.0.0.1:8080) or pass base_url=")
        self._client = ZephyrClient(self.base_url, **self._client_settings())
        # The pool closes with the model (LangChain has no close()); `close()` frees it sooner.
        self._finalizer = weakref.finalize(self, self._client.close)

    def _client_settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"timeout": self.timeout, "system_prompt": self.system_prompt}
        if self.api_key is not None:
            settings["api_key"] = self.api_key.get_secret_value()
        if self.max_retries is not None:
            settings["retry"] = RetryPolicy(max_attempts=self.max_retries + 1)
        return settings

    @property
    def client(self) -> ZephyrClient:
        """The zephyr_tgi client underneath (for what LangChain does not model: info, tokenize, perplexity)."""
        return self._client

    def close(self) -> None:
        """Close the connection pool of the sync calls now (else it closes when the model is collected)."""
        self._finalizer()

    def _async_client(self) -> AsyncZephyrClient:
        # An async pool belongs to the event loop it was opened on, and LangChain may call from any loop (each
        # asyncio.run() is a new one): one client per async call, closed when the call ends.
        return AsyncZephyrClient(self.base_url, **self._client_settings())

    # -- what LangChain asks of a chat model ---------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "zephyr-tgi"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, **self._sampling()}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="zephyr_tgi",
            ls_model_name=kwargs.get("model", self.model_name),
            ls_model_type="chat",
        )
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        stops = stop or self.stop
        if stops:
            params["ls_stop"] = list(stops)
        return params

    def _sampling(self, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        """This call's sampling fields: the call's over the model's; unset ones are left to the server."""
        fields: dict[str, Any] = {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repetition_penalty": self.repetition_penalty,
            "seed": self.seed,
        }
        fields.update({name: kwargs[name] for name in fields.keys() & kwargs.keys()})
        stops = stop if stop is not None else self.stop
        if stops:
            fields["stop"] = list(stops)
        return {name: value for name, value in fields.items() if value is not None}

    # -- one request, built once for both shells ------------------------------------------------------------

    def _plan(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: Mapping[str, Any]) -> _Call:
        """Check everything about a call before anything is sent.

        Raises:
            ConfigurationError: an unknown option, another model's name, or a message Zephyr cannot read.
        """
        unknown = set(kwargs) - _CALL_OPTIONS
        if unknown:
            raise ConfigurationError(
                f"ZephyrChatModel does not take {sorted(unknown)}; it takes stop and {sorted(_CALL_OPTIONS)}"
            )
        model = kwargs.get("model")
        if model is not None and model != self.model_name:
            raise ConfigurationError(
                f"a TGI server serves one model ({self.model_name!r}); model={model!r} needs another server"
            )
        turns = to_zephyr_turns(messages)
        sampling = self._sampling(stop, **kwargs)
        tools = kwargs.get("tools")
        if tools:
            native_only = sorted({"top_k", "repetition_penalty"} & sampling.keys())
            if native_only:
                raise ConfigurationError(
                    f"{native_only} cannot go with tools: TGI's /v1/chat/completions has no such field"
                )
            options: dict[str, Any] = {**sampling, "tools": tools}
            if kwargs.get("tool_choice") is not None:
                options["tool_choice"] = kwargs["tool_choice"]
            return _Call(turns, options, tools=True)
        overrides = dict(sampling)
        if "max_tokens" in overrides:
            overrides["max_new_tokens"] = overrides.pop("max_tokens")
        schema = kwargs.get("json_schema")
        if schema is not None:
            overrides["grammar"] = grammar_for_schema(schema)
        return _Call(turns, overrides, tools=False)

    # -- sync ---------------------------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._plan(messages, stop, kwargs)
        if call.tools:
            completion = self._client.chat_completion(call.turns, **call.options)
            return _result(completion_message(completion, self.model_name))
        result = self._client.chat(call.turns, **call.options)
        input_tokens = result.input_length
        if input_tokens is None:  # TGI's /generate body has no prompt length; its /tokenize counts exactly
            input_tokens = self._client.count_tokens(call.turns)
        return _result(answer_message(result, input_tokens, self.model_name))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        call = self._plan(messages, stop, kwargs)
        if call.tools:
            stream = self._client.chat_completion(
                call.turns, stream=True, stream_options={"include_usage": True}, **call.options
            )
            with stream:
                for event in stream:
                    chunk = self._tool_chunk(completion_chunk(event, self.model_name))
                    if run_manager:
                        run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
            return
        with self._client.chat_stream(call.turns, **call.options) as tokens:
            for step in tokens:
                chunk = self._native_chunk(step)
                if run_manager:
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

    # -- async --------------------------------------------------------------------------------------------

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._plan(messages, stop, kwargs)
        async with self._async_client() as client:
            if call.tools:
                completion = await client.chat_completion(call.turns, **call.options)
                return _result(completion_message(completion, self.model_name))
            result = await client.chat(call.turns, **call.options)
            input_tokens = result.input_length
            if input_tokens is None:
                input_tokens = await client.count_tokens(call.turns)
        return _result(answer_message(result, input_tokens, self.model_name))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        call = self._plan(messages, stop, kwargs)
        async with self._async_client() as client:
            if call.tools:
                stream = await client.chat_completion(
                    call.turns, stream=True, stream_options={"include_usage": True}, **call.options
                )
                async with stream:
                    async for event in stream:
                        chunk = self._tool_chunk(completion_chunk(event, self.model_name))
                        if run_manager:
                            await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                        yield chunk
                return
            async with client.chat_stream(call.turns, **call.options) as tokens:
                async for step in tokens:
                    chunk = self._native_chunk(step)
                    if run_manager:
                        await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk

    # -- stream chunks ------------------------------------------------------------------------------------

    def _native_chunk(self, step: StreamChunk) -> ChatGenerationChunk:
        message = AIMessageChunk(content=step.text)
        if step.result is not None:
            message = _last_native_chunk(step.text, step.result, self.model_name, with_usage=self.stream_usage)
        return ChatGenerationChunk(message=message)

    def _tool_chunk(self, message: AIMessageChunk) -> ChatGenerationChunk:
        if not self.stream_usage:
            message.usage_metadata = None
        return ChatGenerationChunk(message=message)

    # -- tools and structured output ----------------------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer tools to the model (TGI's `/v1/chat/completions` with `tools`); answers carry `tool_calls`.

        Args:
            tools: LangChain tools, functions, pydantic models or OpenAI tool dicts.
            tool_choice: "auto" (the default: the model may answer in text), "any" or "required" (some tool),
                "none", a tool's name, True (the only tool), or an OpenAI tool-choice dict.
            **kwargs: More options bound with the tools, passed to each call.

        Raises:
            ConfigurationError: tool_choice names no bound tool, or True with more than one tool.
        """
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        names = [tool["function"]["name"] for tool in formatted]
        choice = _tool_choice(tool_choice, names)
        return self.bind(tools=formatted, tool_choice=choice, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        method: StructuredMethod = "json_schema",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Answers as `schema` (a pydantic model, a TypedDict or a JSON-schema dict).

        Args:
            schema: What the answer is: a pydantic class gives instances, anything else dicts.
            include_raw: Return `{"raw": AIMessage, "parsed": ..., "parsing_error": ...}` instead.
            method: "json_schema" (default) and "json_mode" constrain generation with TGI's JSON grammar and
                check the answer as `ZephyrClient.chat_json` does; "function_calling" forces a tool call.
            strict: Accepted for LangChain's interface; TGI's grammar is always strict.
            **kwargs: None is taken; any is refused (LangChain's interface has the parameter).

        Raises:
            ConfigurationError: the schema cannot be a TGI grammar (e.g. it has no properties).
        """
        if kwargs:
            raise ConfigurationError(f"with_structured_output() does not take {sorted(kwargs)}")
        json_schema = convert_to_json_schema(schema)
        trace = {"kwargs": {"method": method, "strict": strict}, "schema": json_schema}
        is_pydantic = isinstance(schema, type) and issubclass(schema, BaseModel)
        if method == "function_calling":
            tool_name = convert_to_openai_tool(schema)["function"]["name"]
            model = self.bind_tools([schema], tool_choice=tool_name, ls_structured_output_format=trace)
            parser: Runnable[Any, Any] = (
                PydanticToolsParser(tools=[cast(type[BaseModel], schema)], first_tool_only=True)
                if is_pydantic
                else JsonOutputKeyToolsParser(key_name=tool_name, first_tool_only=True)
            )
        elif method in ("json_schema", "json_mode"):
            grammar_schema: Any = schema if is_pydantic else json_schema
            grammar_for_schema(grammar_schema)  # a schema TGI refuses is refused here, before any request
            model = self.bind(json_schema=grammar_schema, ls_structured_output_format=trace)
            parser = RunnableLambda(_answer_parser(schema, grammar_schema))
        else:
            raise ConfigurationError(f"method must be json_schema, function_calling or json_mode, not {method!r}")
        if not include_raw:
            return model | parser
        parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        unparsed = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=model) | parsed.with_fallbacks([unparsed], exception_key="parsing_error")


class _Call:
    """One call, checked: the Zephyr turns and either the native overrides or the chat-completion options."""

    __slots__ = ("options", "tools", "turns")

    def __init__(self, turns: list[dict[str, str]], options: dict[str, Any], *, tools: bool) -> None:
        self.turns = turns
        self.options = options
        self.tools = tools


def _result(message: AIMessage) -> ChatResult:
    return ChatResult(generations=[ChatGeneration(message=message)])


def _last_native_chunk(text: str, result: GenerationResult, model_name: str, *, with_usage: bool) -> AIMessageChunk:
    answer = answer_message(result, result.input_length or 0, model_name)
    return AIMessageChunk(
        content=text,
        usage_metadata=answer.usage_metadata if with_usage else None,
        response_metadata=answer.response_metadata,
        chunk_position="last",
    )


def _tool_choice(choice: str | dict[str, Any] | bool | None, names: list[str]) -> str | dict[str, Any] | None:
    """LangChain's tool_choice in TGI's words ("any" is TGI's "required")."""
    if choice is None or isinstance(choice, dict):
        return choice
    if choice is True:
        if len(names) != 1:
            raise ConfigurationError(f"tool_choice=True needs exactly one tool, got {len(names)}")
        return names[0]
    if choice is False:
        return "none"
    if choice in ("any", "required"):
        return "required"
    if choice in ("auto", "none"):
        return choice
    if choice not in names:
        raise ConfigurationError(f"tool_choice={choice!r} names no bound tool; bound: {names}")
    return choice


def _answer_parser(schema: dict[str, Any] | type, grammar_schema: Any) -> Callable[[AIMessage], Any]:
    """zephyr_tgi's check of a grammar-constrained answer (StructuredOutputError), then the schema's type."""
    legacy_pydantic = isinstance(schema, type) and hasattr(schema, "parse_obj") and grammar_schema is not schema

    def parse(message: AIMessage) -> Any:
        value = parse_json_answer(message.text, grammar_schema)
        if legacy_pydantic:  # pydantic.v1 models: the dict checked here, then their own constructor
            return cast(Any, schema).parse_obj(value)
        return value

    return parse
