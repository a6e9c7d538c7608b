"""Requests, results and stream chunks as GenAI semantic-convention attributes: plain data, no OpenTelemetry.

Names follow the OpenTelemetry GenAI conventions (development stability) as of their last release in
open-telemetry/semantic-conventions (docs/gen-ai/gen-ai-spans.md, gen-ai-metrics.md, April 2026), since
continued in open-telemetry/semantic-conventions-genai.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .._types import ChatCompletion, ChatCompletionChunk, GenerationResult, StreamChunk

__all__ = [
    "CHAT",
    "TEXT_COMPLETION",
    "Attributes",
    "Operation",
    "StreamTally",
    "chat_completion_operation",
    "native_operation",
    "result_attributes",
    "server_attributes",
]

Attributes = dict[str, Any]  # str, bool, int, float, or a sequence of one of those

CHAT = "chat"
TEXT_COMPLETION = "text_completion"
_DEFAULT_PORTS = {"http": 80, "https": 443}
# chat_completion() options with a GenAI request attribute, and that attribute's name.
_CHAT_OPTIONS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "seed": "gen_ai.request.seed",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
}


@dataclass(frozen=True, slots=True)
class Operation:
    """One public call as telemetry sees it: its span's name, its request attributes, its input content."""

    name: str  # gen_ai.operation.name: "chat" or "text_completion"
    model: str | None
    stream: bool
    attributes: Attributes
    content: Attributes = field(default_factory=dict)  # input content, recorded only when capture is on

    @property
    def span_name(self) -> str:
        """`{gen_ai.operation.name} {gen_ai.request.model}`, or the operation alone when no model is named."""
        return f"{self.name} {self.model}" if self.model else self.name


def _base(name: str, model: str | None, stream: bool) -> Attributes:
    attributes: Attributes = {"gen_ai.operation.name": name}
    if model:
        attributes["gen_ai.request.model"] = model
    if stream:
        attributes["gen_ai.request.stream"] = True
    return attributes


def native_operation(
    name: str,
    params: Any,
    *,
    model: str | None,
    stream: bool,
    messages: Sequence[Any] | None = None,
    prompt: str | None = None,
) -> Operation:
    """A call on the native routes (`chat`, `generate` and their streams) from its merged `SamplingParams`.

    `messages` (chat) or `prompt` (generate) are the input content, kept only when given (capture on).
    """
    attributes = _base(name, model, stream)
    for option, key in (
        ("max_new_tokens", "gen_ai.request.max_tokens"),
        ("temperature", "gen_ai.request.temperature"),
        ("top_p", "gen_ai.request.top_p"),
        ("top_k", "gen_ai.request.top_k"),
        ("seed", "gen_ai.request.seed"),
        ("frequency_penalty", "gen_ai.request.frequency_penalty"),
    ):
        value = getattr(params, option)
        if value is not None:
            attributes[key] = value
    if params.stop:
        attributes["gen_ai.request.stop_sequences"] = list(params.stop)
    content: Attributes = {}
    if messages is not None:
        content = _input_content([(m.role, m.content) for m in messages])
    elif prompt is not None:
        content = _input_content([("user", prompt)])
    return Operation(name, model, stream, attributes, content)


def chat_completion_operation(
    payload: Mapping[str, Any], *, model: str | None, stream: bool, capture: bool
) -> Operation:
    """A `chat_completion()` call from its request body."""
    named = payload.get("model")
    if isinstance(named, str) and named and named != "tgi":  # "tgi" is the placeholder TGI ignores
        model = named
    attributes = _base(CHAT, model, stream)
    for option, key in _CHAT_OPTIONS.items():
        value = payload.get(option)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            attributes[key] = value
    stop = payload.get("stop")
    if isinstance(stop, list) and stop and all(isinstance(s, str) for s in stop):
        attributes["gen_ai.request.stop_sequences"] = stop
    count = payload.get("n")
    if isinstance(count, int) and not isinstance(count, bool) and count != 1:
        attributes["gen_ai.request.choice.count"] = count
    content: Attributes = {}
    if capture:
        turns = [
            (str(m.get("role", "")), m.get("content")) for m in payload.get("messages", ()) if isinstance(m, Mapping)
        ]
        content = _input_content(turns)
    return Operation(CHAT, model, stream, attributes, content)


def _text_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if isinstance(content, list):  # OpenAI-style content parts: keep the text ones
        return [
            {"type": "text", "content": part["text"]}
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        ]
    return []


def _input_content(turns: Sequence[tuple[str, Any]]) -> Attributes:
    """`gen_ai.system_instructions` and `gen_ai.input.messages`, as JSON strings (span attributes cannot nest)."""
    system = [part for role, content in turns if role == "system" for part in _text_parts(content)]
    messages = [{"role": role, "parts": _text_parts(content)} for role, content in turns if role != "system"]
    content: Attributes = {"gen_ai.input.messages": json.dumps(messages, ensure_ascii=False)}
    if system:
        content["gen_ai.system_instructions"] = json.dumps(system, ensure_ascii=False)
    return content


def output_content(text: str, finish_reason: str | None) -> Attributes:
    """`gen_ai.output.messages` for one assistant answer."""
    message: dict[str, Any] = {"role": "assistant", "parts": [{"type": "text", "content": text}]}
    if finish_reason:
        message["finish_reason"] = finish_reason
    return {"gen_ai.output.messages": json.dumps([message], ensure_ascii=False)}


def server_attributes(url: str) -> Attributes:
    """`server.address` and `server.port` of a request URL."""
    parts = urlsplit(url)
    attributes: Attributes = {}
    if parts.hostname:
        attributes["server.address"] = parts.hostname
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
        if port is not None:
            attributes["server.port"] = port
    return attributes


def result_attributes(result: Any, *, capture: bool) -> Attributes:
    """Response and usage attributes of a finished call's result (a `GenerationResult` or a `ChatCompletion`)."""
    attributes: Attributes = {}
    if isinstance(result, GenerationResult):
        if result.finish_reason is not None:
            attributes["gen_ai.response.finish_reasons"] = [result.finish_reason]
        if result.input_length is not None:
            attributes["gen_ai.usage.input_tokens"] = result.input_length
        if result.generated_tokens is not None:
            attributes["gen_ai.usage.output_tokens"] = result.generated_tokens
        if capture:
            attributes.update(output_content(result.text, result.finish_reason))
    elif isinstance(result, ChatCompletion):
        if result.id:
            attributes["gen_ai.response.id"] = result.id
        if result.model:
            attributes["gen_ai.response.model"] = result.model
        reasons = [choice.finish_reason for choice in result.choices if choice.finish_reason]
        if reasons:
            attributes["gen_ai.response.finish_reasons"] = reasons
        if result.usage is not None:
            attributes["gen_ai.usage.input_tokens"] = result.usage.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = result.usage.completion_tokens
        if capture:
            first = result.choices[0].finish_reason if result.choices else None
            attributes.update(output_content(result.text, first))
    return attributes


class StreamTally:
    """What a stream's chunks say about its response, gathered as they pass (text only when capture is on)."""

    __slots__ = ("_capture", "_parts", "attributes", "chunks")

    def __init__(self, *, capture: bool) -> None:
        self._capture = capture
        self._parts: list[str] = []
        self.attributes: Attributes = {}
        self.chunks = 0

    def add(self, item: Any) -> None:
        """Take one chunk into account."""
        self.chunks += 1
        if isinstance(item, StreamChunk):
            if item.result is not None:  # the last chunk carries the whole result
                self.attributes.update(result_attributes(item.result, capture=self._capture))
        elif isinstance(item, ChatCompletionChunk):
            attributes = self.attributes
            if item.id:
                attributes["gen_ai.response.id"] = item.id
            if item.model:
                attributes["gen_ai.response.model"] = item.model
            reasons = [choice.finish_reason for choice in item.choices if choice.finish_reason]
            if reasons:
                attributes["gen_ai.response.finish_reasons"] = reasons
            if item.usage is not None:
                attributes["gen_ai.usage.input_tokens"] = item.usage.prompt_tokens
                attributes["gen_ai.usage.output_tokens"] = item.usage.completion_tokens
            if self._capture and item.choices:
                self._parts.append(item.text)

    def finish(self) -> Attributes:
        """The attributes gathered, with the answer assembled from chat chunks when capture is on."""
        if self._capture and self._parts:
            reasons = self.attributes.get("gen_ai.response.finish_reasons") or [None]
            self.attributes.update(output_content("".join(self._parts), reasons[0]))
        return self.attributes
