"""Turning TGI's answers into typed results: stop-sequence removal, results, and stream assembly.

Pure functions and a small state machine; no I/O, nothing sync- or async-specific.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .._errors import APIConnectionError, MalformedResponseError, from_stream_event
from .._types import ChatCompletionChunk, GenerationResult, StreamChunk, Token
from .sse import DONE

__all__ = [
    "StreamAssembler",
    "load_event",
    "parse_answer",
    "parse_chat_chunk",
    "result_from_output",
    "strip_stop",
]


def strip_stop(text: str, stops: Sequence[str]) -> str:
    """`text` without a trailing stop sequence (TGI keeps the stop text in `generated_text`)."""
    for stop in sorted(stops, key=len, reverse=True):
        if text.endswith(stop):
            return text[: -len(stop)]
    return text


_M = TypeVar("_M", bound=BaseModel)


def parse_answer(model: type[_M], data: Any, *, what: str) -> _M:
    """`data` (JSON text, a dict, or an object read by attribute) validated as `model`.

    Raises:
        MalformedResponseError: the server's answer does not have TGI's shape.
    """
    try:
        if isinstance(data, (str, bytes)):
            return model.model_validate_json(data)
        return model.model_validate(data, from_attributes=not isinstance(data, dict))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "top level"
        raise MalformedResponseError(f"the server's {what} is not in TGI's format: {first['msg']} at {where}") from exc


def parse_answers(model: type[_M], data: Any, *, what: str) -> list[_M]:
    """A JSON list of `model`s (e.g. /tokenize's spans), validated."""
    try:
        items = json.loads(data) if isinstance(data, (str, bytes)) else data
    except ValueError as exc:
        raise MalformedResponseError(f"the server's {what} is not JSON: {exc}") from exc
    if not isinstance(items, list):
        raise MalformedResponseError(f"the server's {what} is not a JSON list")
    return [parse_answer(model, item, what=what) for item in items]


def result_from_output(output: Any, *, stops: Sequence[str], prompt: str | None) -> GenerationResult:
    """A result from huggingface_hub's `TextGenerationOutput` (read by attribute, no copying), or from the plain
    string it returns when details were not asked for.

    Raises:
        MalformedResponseError: the answer does not have TGI's shape.
    """
    if isinstance(output, str):
        return GenerationResult(text=strip_stop(output, stops), generated_text=output, prompt=prompt)
    generated_text = getattr(output, "generated_text", None)
    details = getattr(output, "details", None)
    if not isinstance(generated_text, str):
        raise MalformedResponseError("the server's answer has no generated_text string")
    data: dict[str, Any] = {
        "text": strip_stop(generated_text, stops),
        "generated_text": generated_text,
        "prompt": prompt,
    }
    if details is not None:
        try:
            data.update(
                finish_reason=details.finish_reason,
                generated_tokens=details.generated_tokens,
                seed=details.seed,
                tokens=details.tokens or (),
                prefill=details.prefill or (),
                top_tokens=details.top_tokens or (),
                best_of_sequences=details.best_of_sequences or (),
            )
        except AttributeError as exc:
            raise MalformedResponseError(f"the server's details are not in TGI's format: {exc}") from exc
    return parse_answer(GenerationResult, data, what="answer")


def _held_back(buffer: str, stops: Sequence[str]) -> int:
    """How many trailing characters of `buffer` could still be (the start of) a stop sequence."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop), len(buffer)), longest, -1):
            if buffer.endswith(stop[:size]):
                longest = size
                break
    return longest


class StreamAssembler:
    """Turns `/generate_stream` events into `StreamChunk`s and the final `GenerationResult`.

    Text that might be the beginning of a stop sequence is held back until it is clear that it is not,
    so a stop sequence (and `</s>`) never reaches the caller, and the chunks' texts join to `result.text`.
    """

    __slots__ = ("_buffer", "_emitted", "_prompt", "_stops", "_tokens", "_top_tokens", "done")

    def __init__(self, stops: Sequence[str], prompt: str | None) -> None:
        self._stops = tuple(stops)
        self._prompt = prompt
        self._buffer = ""
        self._emitted: list[str] = []
        self._tokens: list[Token] = []
        self._top_tokens: list[tuple[Token, ...]] = []
        self.done = False

    def feed(self, data: str) -> StreamChunk:
        """Consume one event's data; raise the mapped error for an in-band error event."""
        event = load_event(data)
        token = parse_answer(Token, event.get("token"), what="stream event's token")
        self._tokens.append(token)
        top = tuple(parse_answer(Token, t, what="top token") for t in _list(event.get("top_tokens")))
        if top:
            self._top_tokens.append(top)
        if not token.special:
            self._buffer += token.text
        generated_text = event.get("generated_text")
        if generated_text is not None and not isinstance(generated_text, str):
            raise MalformedResponseError("the server's final stream event has a generated_text that is not a string")
        if generated_text is None:
            keep = _held_back(self._buffer, self._stops)
            text = self._buffer[: len(self._buffer) - keep]
            self._buffer = self._buffer[len(text) :]
            if text:
                self._emitted.append(text)
            return StreamChunk(index=event.get("index", len(self._tokens)), text=text, token=token, top_tokens=top)
        return self._finish(event, token, top, generated_text)

    def _finish(
        self, event: Mapping[str, Any], token: Token, top: tuple[Token, ...], generated_text: str
    ) -> StreamChunk:
        self.done = True
        details = event.get("details") or {}
        if not isinstance(details, dict):
            raise MalformedResponseError("the server's final stream event has details that are not an object")
        final_text = strip_stop(generated_text, self._stops)
        emitted = "".join(self._emitted)
        # Normally the tokens' texts join to generated_text; if the server decoded differently, the
        # final chunk still completes exactly what was shown so far.
        text = final_text[len(emitted) :] if final_text.startswith(emitted) else strip_stop(self._buffer, self._stops)
        result = parse_answer(
            GenerationResult,
            {
                "text": emitted + text,
                "generated_text": generated_text,
                "finish_reason": details.get("finish_reason"),
                "generated_tokens": details.get("generated_tokens", len(self._tokens)),
                "seed": details.get("seed"),
                "input_length": details.get("input_length"),
                "tokens": tuple(self._tokens),
                "top_tokens": tuple(self._top_tokens),
                "prompt": self._prompt,
            },
            what="final stream event",
        )
        return StreamChunk(
            index=event.get("index", len(self._tokens)), text=text, token=token, top_tokens=top, result=result
        )

    def end_of_stream(self) -> APIConnectionError:
        """The error for a stream that ended before its final event."""
        return APIConnectionError(
            f"the stream ended after {len(self._tokens)} token(s) without its final event (connection lost)"
        )


def parse_chat_chunk(data: str) -> ChatCompletionChunk | None:
    """One `/v1/chat/completions` stream event; None for the `[DONE]` terminator."""
    if data == DONE:
        return None
    return parse_answer(ChatCompletionChunk, load_event(data), what="chat stream event")


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedResponseError("the server's stream event has top_tokens that are not a list")
    return value


def load_event(data: str) -> dict[str, Any]:
    """One event's JSON object; raise the mapped error for an in-band error event (either of TGI's shapes).

    Raises:
        APIConnectionError: the data is not a JSON object (a broken stream, not a server answer).
        APIStatusError: the event is an error event.
    """
    try:
        event = json.loads(data)
    except ValueError as exc:
        raise APIConnectionError(f"the server sent a malformed stream event: {data[:200]!r}") from exc
    if not isinstance(event, dict):
        raise APIConnectionError(f"the server sent an unexpected stream event: {data[:200]!r}")
    if "error" in event:
        raise from_stream_event(event, data)
    return event
