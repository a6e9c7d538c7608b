"""LangChain messages as Zephyr turns, and TGI answers as LangChain messages (no I/O).

Zephyr's chat template knows only system, user and assistant turns, and TGI drops any other role when it
renders the prompt, so a tool call goes back as the assistant's turn ("Calling name(arguments)") and its
result as a user turn ("Result of name: ..."), as `examples/tool_loop.py` does by hand.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import tool_call_chunk

from .._errors import ConfigurationError
from .._types import ChatCompletion, ChatCompletionChunk, GenerationResult, ToolCall

__all__ = ["answer_message", "completion_chunk", "completion_message", "to_zephyr_turns", "usage"]

_ZEPHYR_ROLES = frozenset({"system", "user", "assistant"})


def _text(message: BaseMessage) -> str:
    """A message's text; content blocks other than text cannot reach a text-only model."""
    if isinstance(message.content, str):
        return message.content
    parts: list[str] = []
    for block in message.content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif isinstance(block, dict) and block.get("type") in {"tool_use", "tool_call"}:
            continue  # the call itself is rendered from message.tool_calls
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise ConfigurationError(
                f"Zephyr-7B-alpha reads text only; a {type(message).__name__} holds a {kind!r} content block"
            )
    return "".join(parts)


def _calls_text(message: AIMessage) -> str:
    calls = "\n".join(
        f"Calling {call['name']}({json.dumps(call['args'], ensure_ascii=False)})" for call in message.tool_calls
    )
    text = _text(message)
    return f"{text}\n{calls}" if text and calls else text or calls


def to_zephyr_turns(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """The turns Zephyr's template renders, in order.

    Raises:
        ConfigurationError: a role Zephyr has no turn for, or content other than text.
    """
    names: dict[str, str] = {}
    turns: list[dict[str, str]] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            turns.append({"role": "system", "content": _text(message)})
        elif isinstance(message, HumanMessage):
            turns.append({"role": "user", "content": _text(message)})
        elif isinstance(message, AIMessage):
            names.update({call["id"]: call["name"] for call in message.tool_calls if call["id"]})
            turns.append({"role": "assistant", "content": _calls_text(message)})
        elif isinstance(message, ToolMessage):
            name = message.name or names.get(message.tool_call_id, "the tool")
            failed = " (failed)" if message.status == "error" else ""
            turns.append({"role": "user", "content": f"Result of {name}{failed}: {_text(message)}"})
        elif isinstance(message, FunctionMessage):
            turns.append({"role": "user", "content": f"Result of {message.name}: {_text(message)}"})
        elif isinstance(message, ChatMessage) and message.role in _ZEPHYR_ROLES:
            turns.append({"role": message.role, "content": _text(message)})
        else:
            role = message.role if isinstance(message, ChatMessage) else message.type
            raise ConfigurationError(
                f"Zephyr's chat template has no turn for a {type(message).__name__} with role {role!r}; "
                "use system, human, ai or tool messages"
            )
    return turns


def usage(input_tokens: int, output_tokens: int) -> UsageMetadata:
    """LangChain's token usage."""
    return UsageMetadata(
        input_tokens=input_tokens, output_tokens=output_tokens, total_tokens=input_tokens + output_tokens
    )


def answer_message(result: GenerationResult, input_tokens: int, model_name: str) -> AIMessage:
    """A native `/generate` answer as an AIMessage."""
    return AIMessage(
        content=result.text,
        usage_metadata=usage(input_tokens, result.generated_tokens or len(result.tokens)),
        response_metadata=_metadata(model_name, result.finish_reason, result.seed),
    )


def _metadata(model_name: str, finish_reason: str | None, seed: int | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"model_name": model_name, "model_provider": "zephyr_tgi"}
    if finish_reason is not None:
        metadata["finish_reason"] = finish_reason
    if seed is not None:
        metadata["seed"] = seed
    return metadata


def _tool_call(call: ToolCall) -> dict[str, Any]:
    arguments = call.function.parsed_arguments()
    if not isinstance(arguments, dict):
        arguments = {"value": arguments}
    return {"name": call.function.name, "args": arguments, "id": call.id, "type": "tool_call"}


def completion_message(completion: ChatCompletion, model_name: str) -> AIMessage:
    """A `/v1/chat/completions` answer (text or typed tool calls) as an AIMessage."""
    finish = completion.choices[0].finish_reason if completion.choices else None
    message = AIMessage(
        content=completion.text,
        tool_calls=[_tool_call(call) for call in completion.tool_calls],
        response_metadata=_metadata(completion.model or model_name, finish),
    )
    if completion.usage is not None:
        message.usage_metadata = usage(completion.usage.prompt_tokens, completion.usage.completion_tokens)
    return message


def completion_chunk(chunk: ChatCompletionChunk, model_name: str) -> AIMessageChunk:
    """One streamed `/v1/chat/completions` event: text, tool-call fragments, and usage on the last."""
    finish = chunk.choices[0].finish_reason if chunk.choices else None
    message = AIMessageChunk(
        content=chunk.text,
        tool_call_chunks=[
            tool_call_chunk(name=delta.name, args=delta.arguments, id=delta.id, index=delta.index)
            for delta in chunk.tool_calls
        ],
    )
    if finish is not None:
        message.response_metadata = {"finish_reason": finish}
    if chunk.usage is not None:
        message.usage_metadata = usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
        message.response_metadata = {**message.response_metadata, **_metadata(chunk.model or model_name, None)}
        message.chunk_position = "last"
    return message
